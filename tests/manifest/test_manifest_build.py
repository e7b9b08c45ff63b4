"""``remediation-bot manifest build``: a valid package, and a clear sentence (exit 2) for each fault.

The official schema comes from npm ``@microsoft/app-manifest`` (``npm ci``, as ``make test`` does).
Without it these tests are skipped with the reason, except in CI (``REQUIRE_E2E=1``: every Node
tool must be present), where they fail.
"""

from __future__ import annotations

import io
import json
import os
import runpy
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator

from bot.cli.main import main
from devtools.manifest import (
    COLOR_ICON_SIZE,
    OUTLINE_ICON_SIZE,
    ManifestOptions,
    build_package,
    decode_png,
    png_size,
    project_root,
)
from tests.manifest.pngs import Pixel, encode_png, write_png

ROOT = project_root()
TEMPLATE = ROOT / "manifest" / "manifest.template.json"
SCHEMAS = ROOT / "node_modules" / "@microsoft" / "app-manifest" / "build" / "json-schemas" / "teams"
BOT_ID = "9e3b7a21-6c4d-4f0e-8b2a-1c5d7e9f0a4b"
WHITE: Pixel = (255, 255, 255, 255)
CLEAR: Pixel = (0, 0, 0, 0)


@pytest.fixture(autouse=True)
def _official_schemas() -> None:
    if (SCHEMAS / "v1.22").is_dir():
        return
    reason = f"{SCHEMAS} is missing: run `npm ci` (package.json pins @microsoft/app-manifest)"
    if os.environ.get("REQUIRE_E2E"):
        pytest.fail(reason)
    pytest.skip(reason)


def build(*args: str) -> int:
    """Run the real CLI."""
    return main(["manifest", "build", *args])


def template_copy(folder: Path, **changes: Any) -> Path:
    """The real template and icons copied into ``folder``, with top-level ``changes``."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    manifest.update(changes)
    path = folder / "manifest.template.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    for icon in ("color.png", "outline.png"):
        shutil.copy(TEMPLATE.parent / icon, folder / icon)
    return path


def schema_for(manifest: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (SCHEMAS / f"v{manifest['manifestVersion']}" / "MicrosoftTeams.schema.json").read_text()
    )
    return schema


# -- a valid package --------------------------------------------------------------------------


def test_builds_a_package_that_validates_against_the_official_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "app.zip"
    code = build(
        "--bot-id",
        BOT_ID.upper(),
        "--out",
        str(out),
        "--version",
        "1.4.2",
        "--developer-name",
        "Contoso SOC",
        "--website-url",
        "https://soc.contoso.com/bot",
        "--privacy-url",
        "https://soc.contoso.com/privacy",
        "--terms-url",
        "https://soc.contoso.com/terms",
        "--bot-domain",
        "remediation-bot.azurewebsites.net",
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"wrote {out}" in printed.out
    assert "validated against" in printed.out
    assert "example.com" not in printed.out  # no placeholder note: every link was given

    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == ["color.png", "manifest.json", "outline.png"]
        manifest = json.loads(archive.read("manifest.json"))
        color, outline = archive.read("color.png"), archive.read("outline.png")

    assert list(Draft4Validator(schema_for(manifest)).iter_errors(manifest)) == []
    assert manifest["$schema"].endswith(f"/v{manifest['manifestVersion']}/MicrosoftTeams.schema.json")
    assert manifest["id"] == BOT_ID  # the app id defaults to the bot id, lower-cased
    assert manifest["version"] == "1.4.2"
    assert manifest["developer"] == {
        "name": "Contoso SOC",
        "websiteUrl": "https://soc.contoso.com/bot",
        "privacyUrl": "https://soc.contoso.com/privacy",
        "termsOfUseUrl": "https://soc.contoso.com/terms",
    }
    assert manifest["validDomains"] == ["remediation-bot.azurewebsites.net"]
    assert "webApplicationInfo" not in manifest
    (bot,) = manifest["bots"]
    assert bot["botId"] == BOT_ID
    assert set(bot["scopes"]) == {"team", "groupChat", "personal"}
    assert bot["isNotificationOnly"] is False
    assert bot["supportsFiles"] is False
    for command_list in bot["commandLists"]:
        titles = [command["title"] for command in command_list["commands"]]
        assert titles == ["help", "pending", "history", "contain"]
        assert all(command["description"] for command in command_list["commands"])
    assert png_size(color, "color") == (COLOR_ICON_SIZE, COLOR_ICON_SIZE)
    assert png_size(outline, "outline") == (OUTLINE_ICON_SIZE, OUTLINE_ICON_SIZE)
    assert color == (TEMPLATE.parent / "color.png").read_bytes()


def test_defaults_build_and_say_which_links_to_replace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build("--bot-id", BOT_ID, "--out", str(tmp_path)) == 0  # a folder: the zip goes inside
    printed = capsys.readouterr().out
    (zip_path,) = tmp_path.glob("remediation-bot-*.zip")
    with zipfile.ZipFile(zip_path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert zip_path.name == f"remediation-bot-{manifest['version']}.zip"
    assert manifest["validDomains"] == []  # no --bot-domain: the placeholder item is left out
    assert manifest["name"]["short"] == "Remediation Bot"
    assert "--website-url, --privacy-url, --terms-url" in printed
    assert list(Draft4Validator(schema_for(manifest)).iter_errors(manifest)) == []


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    for out in (first, second):
        build_package(ManifestOptions(bot_id=BOT_ID, out=out, version="1.0.0"))
    assert first.read_bytes() == second.read_bytes()


def test_the_committed_icons_are_what_make_icons_draws() -> None:
    script = runpy.run_path(str(ROOT / "manifest" / "make_icons.py"))  # not __main__: draws nothing
    assert script["color_icon"]() == (ROOT / "manifest" / "color.png").read_bytes()
    assert script["outline_icon"]() == (ROOT / "manifest" / "outline.png").read_bytes()


# -- each fault: one sentence, exit 2, nothing written -----------------------------------------


def failed(code: int, capsys: pytest.CaptureFixture[str]) -> str:
    printed = capsys.readouterr()
    assert code == 2
    assert printed.out == ""
    assert printed.err.startswith("remediation-bot: ")
    return printed.err


@pytest.mark.parametrize("bot_id", ["not-a-guid", "9e3b7a21-6c4d-4f0e-8b2a-1c5d7e9f0a4", ""])
def test_a_bot_id_that_is_not_a_guid(bot_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "app.zip"
    message = failed(build("--bot-id", bot_id, "--out", str(out)), capsys)
    assert f"--bot-id {bot_id!r} is not a GUID" in message
    assert "MicrosoftAppId" in message
    assert not out.exists()


def test_bad_version_and_urls_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = build(
        "--bot-id",
        BOT_ID,
        "--out",
        str(tmp_path / "app.zip"),
        "--version",
        "1.0",
        "--privacy-url",
        "http://contoso.com/privacy",
        "--bot-domain",
        "https://bot.contoso.com/api/messages",
    )
    message = failed(code, capsys)
    assert "--version '1.0' is not a Teams app version" in message
    assert "--privacy-url 'http://contoso.com/privacy' is not an https:// URL" in message
    assert "--bot-domain 'https://bot.contoso.com/api/messages' is not a host name" in message


def test_missing_schema_says_to_run_npm_ci(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "app.zip"
    code = build("--bot-id", BOT_ID, "--out", str(out), "--node-modules", str(tmp_path / "node_modules"))
    message = failed(code, capsys)
    assert "The Teams manifest schema v1.22 is not available offline" in message
    assert "@microsoft/app-manifest is not installed" in message
    assert "run `npm ci`" in message.lower()
    assert not out.exists()


def test_an_installed_package_without_that_schema_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "node_modules" / "@microsoft" / "app-manifest"
    package.mkdir(parents=True)
    (package / "package.json").write_text('{"name": "@microsoft/app-manifest", "version": "0.0.1"}')
    code = build(
        "--bot-id", BOT_ID, "--out", str(tmp_path / "a.zip"), "--node-modules", str(package.parents[1])
    )
    message = failed(code, capsys)
    assert "The installed @microsoft/app-manifest 0.0.1 has no Teams manifest schema v1.22" in message


def test_a_schema_violation_names_its_json_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "app.zip"
    too_long = "Remediation Bot for the Contoso SOC"  # 35 characters; the schema allows 30
    message = failed(build("--bot-id", BOT_ID, "--out", str(out), "--short-name", too_long), capsys)
    assert "does not follow the Teams manifest schema v1.22 (1 problem)" in message
    assert f"at $.name.short: {too_long!r} is 35 characters long, more than the 30 allowed." in message
    assert not out.exists()


def test_every_schema_violation_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = template_copy(
        tmp_path / "t", accentColor="blue", bots=[{"botId": "{{botId}}", "scopes": ["tab"]}]
    )
    code = build("--bot-id", BOT_ID, "--out", str(tmp_path / "a.zip"), "--template", str(template))
    message = failed(code, capsys)
    assert "(2 problems)" in message
    assert "at $.accentColor: 'blue' does not match the pattern ^#[0-9a-fA-F]{6}$." in message
    assert (
        "at $.bots[0].scopes[0]: 'tab' is not one of 'team', 'personal', 'groupChat', 'copilot'." in message
    )


def test_schema_and_manifest_version_must_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = template_copy(tmp_path / "t", manifestVersion="1.21")
    code = build("--bot-id", BOT_ID, "--out", str(tmp_path / "a.zip"), "--template", str(template))
    message = failed(code, capsys)
    assert "does not match its manifestVersion 1.21" in message
    assert "https://developer.microsoft.com/json-schemas/teams/v1.21/MicrosoftTeams.schema.json" in message


def test_an_unknown_placeholder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = template_copy(tmp_path / "t", accentColor="{{brandColour}}")
    code = build("--bot-id", BOT_ID, "--out", str(tmp_path / "a.zip"), "--template", str(template))
    assert "{{brandColour}} at $.accentColor" in failed(code, capsys)


def test_a_color_icon_of_the_wrong_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = template_copy(tmp_path / "t")
    write_png(tmp_path / "t" / "color.png", 96, 96, lambda x, y: (43, 63, 180, 255))
    out = tmp_path / "app.zip"
    message = failed(build("--bot-id", BOT_ID, "--out", str(out), "--template", str(template)), capsys)
    assert "icons.color" in message
    assert "is 96×96 pixels; Teams needs 192×192." in message
    assert not out.exists()


def test_an_outline_icon_of_the_wrong_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = template_copy(tmp_path / "t")
    write_png(tmp_path / "t" / "outline.png", 32, 30, lambda x, y: WHITE if x == y else CLEAR)
    message = failed(
        build("--bot-id", BOT_ID, "--out", str(tmp_path / "a.zip"), "--template", str(template)), capsys
    )
    assert "is 32×30 pixels; Teams needs 32×32." in message


def test_an_icon_that_is_not_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = template_copy(tmp_path / "t")
    (tmp_path / "t" / "color.png").write_bytes(b"GIF89a not a png at all, just pretending")
    message = failed(
        build("--bot-id", BOT_ID, "--out", str(tmp_path / "a.zip"), "--template", str(template)), capsys
    )
    assert "icons.color" in message and "is not a PNG file." in message


@pytest.mark.parametrize(
    ("bad_pixel", "shown"),
    [((0, 0, 0, 255), "rgba(0, 0, 0, 255)"), ((250, 250, 250, 128), "rgba(250, 250, 250, 128)")],
    ids=["opaque-black", "grey-half-transparent"],
)
def test_an_outline_pixel_that_is_not_white_or_transparent(
    bad_pixel: Pixel, shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = template_copy(tmp_path / "t")

    def pixel(x: int, y: int) -> Pixel:
        if (x, y) == (7, 5):
            return bad_pixel
        return (255, 255, 255, 200) if 4 <= x <= 27 and 4 <= y <= 27 else CLEAR

    write_png(tmp_path / "t" / "outline.png", 32, 32, pixel)
    message = failed(
        build("--bot-id", BOT_ID, "--out", str(tmp_path / "a.zip"), "--template", str(template)), capsys
    )
    assert (
        f"has 1 pixel that is neither fully transparent nor white (the first at x=7, y=5: {shown})" in message
    )


def test_an_outline_without_transparency(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    template = template_copy(tmp_path / "t")
    write_png(tmp_path / "t" / "outline.png", 32, 32, lambda x, y: WHITE)
    message = failed(
        build("--bot-id", BOT_ID, "--out", str(tmp_path / "a.zip"), "--template", str(template)), capsys
    )
    assert "has no transparent pixel" in message


def test_png_rows_with_every_filter_type_decode() -> None:
    def pixel(x: int, y: int) -> Pixel:
        return ((x * 37) % 256, (y * 53) % 256, (x * y) % 256, (x + y * 7) % 256)

    data = encode_png(9, 10, pixel, filter_for_row=lambda y: y % 5)
    width, height, pixels = decode_png(data, "test.png")
    assert (width, height) == (9, 10)
    assert pixels == [pixel(x, y) for y in range(10) for x in range(9)]


# -- where the zip goes -----------------------------------------------------------------------


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in, even as root (where permission bits don't bind)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return folder
    probe.unlink()
    # Root ignores the mode bits; sysfs refuses new files to everyone.
    sysfs = Path("/sys")
    try:
        (sysfs / "remediation-bot-probe").write_bytes(b"")
    except OSError:
        return sysfs
    pytest.skip("no folder refuses writes to this process")


def test_an_output_folder_that_is_not_writable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _unwritable_folder(tmp_path)
    try:
        message = failed(build("--bot-id", BOT_ID, "--out", str(folder / "app.zip")), capsys)
    finally:
        if folder.is_relative_to(tmp_path):
            folder.chmod(0o755)
    assert (
        f"Cannot write the app package to {folder / 'app.zip'}: the folder {folder} is not writable"
        in message
    )
    assert not (folder / "app.zip").exists()


def test_an_output_folder_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no" / "such" / "app.zip"
    message = failed(build("--bot-id", BOT_ID, "--out", str(out)), capsys)
    assert f"the folder {out.parent} does not exist" in message


def test_an_output_path_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = failed(build("--bot-id", BOT_ID, "--out", str(blocker / "app.zip")), capsys)
    assert f"{blocker} is not a folder" in message


def test_a_failed_write_leaves_an_existing_package_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "app.zip"
    assert build("--bot-id", BOT_ID, "--out", str(out)) == 0
    before = out.read_bytes()
    capsys.readouterr()
    failed(build("--bot-id", BOT_ID, "--out", str(out), "--short-name", "x" * 31), capsys)
    assert out.read_bytes() == before
    assert zipfile.ZipFile(io.BytesIO(before)).testzip() is None
