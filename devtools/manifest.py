"""The Teams app package: ``remediation-bot manifest build`` renders, validates and zips it.

The package is what a Teams admin uploads (Teams admin center › Teams apps › Manage apps ›
Upload new app): a zip holding ``manifest.json``, ``color.png`` and ``outline.png`` at its root.

1. **Render** ``manifest/manifest.template.json``: every ``{{name}}`` inside a JSON string is
   replaced by its value (after parsing, so a value can never break the JSON). A list item that
   is exactly one placeholder whose value is empty is left out (``validDomains`` without
   ``--bot-domain``).
2. **Validate offline** against the official Teams JSON schema of the template's
   ``manifestVersion``, as shipped by npm ``@microsoft/app-manifest`` (``package.json`` pins it;
   ``npm ci`` installs it into ``node_modules``) under
   ``build/json-schemas/teams/v1.NN/MicrosoftTeams.schema.json``. The schemas are draft-04, which
   has no ``const``: the ``manifestVersion`` and ``$schema`` pair is checked here instead.
3. **Check the icons** Teams rejects otherwise: ``color`` 192×192 and ``outline`` 32×32 PNGs
   (sizes read from the PNG header), the outline white on transparent (every pixel fully
   transparent, or white with some alpha).
4. **Zip** deterministically (fixed timestamps, sorted entries): the same inputs give the same bytes.

Every problem raises :class:`~bot.errors.ManifestError` whose message names what is wrong (the
JSON path for a schema violation); the CLI prints it and exits 2. No network is used.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bot.errors import ManifestError

SCHEMA_PACKAGE = "@microsoft/app-manifest"
SCHEMA_URL = "https://developer.microsoft.com/json-schemas/teams/v{version}/MicrosoftTeams.schema.json"
COLOR_ICON_SIZE = 192
OUTLINE_ICON_SIZE = 32

# Defaults of ``manifest build``; the developer URLs are placeholders to replace before the app
# goes into an organization's catalog (the build says so when they are used).
DEFAULT_SHORT_NAME = "Remediation Bot"
DEFAULT_DEVELOPER_NAME = "Security Operations"
DEFAULT_WEBSITE_URL = "https://example.com/remediation-bot"
DEFAULT_PRIVACY_URL = "https://example.com/remediation-bot/privacy"
DEFAULT_TERMS_URL = "https://example.com/remediation-bot/terms"
FALLBACK_VERSION = "1.0.0"

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Teams wants major.minor.patch, digits only (no pre-release or build suffix).
_VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
_MANIFEST_VERSION = re.compile(r"^1\.[0-9]+$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]*)\s*\}\}")
_HOST = re.compile(r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def project_root() -> Path:
    """The checkout this module runs from (where ``manifest/`` and ``node_modules/`` live).

    Falls back to the working folder when the package is installed elsewhere (not editable).
    """
    here = Path(__file__).resolve().parents[1]
    return here if (here / "manifest").is_dir() else Path.cwd()


def default_version() -> str:
    """The installed ``remediation-bot`` version (``pyproject.toml``), else ``1.0.0``."""
    try:
        version = metadata.version("remediation-bot")
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSION
    return version if _VERSION.match(version) else FALLBACK_VERSION


@dataclass(frozen=True)
class ManifestOptions:
    """What ``manifest build`` is asked for; every field but ``bot_id`` and ``out`` has a default.

    ``app_id`` (the Teams app's own id) defaults to ``bot_id``, ``version`` to
    :func:`default_version`. ``icons_dir`` defaults to the template's folder and
    ``node_modules`` to the checkout's. ``out`` may name the zip or an existing folder (the zip
    is then ``remediation-bot-<version>.zip`` in it).
    """

    bot_id: str
    out: Path
    app_id: str | None = None
    version: str | None = None
    short_name: str = DEFAULT_SHORT_NAME
    developer_name: str = DEFAULT_DEVELOPER_NAME
    website_url: str = DEFAULT_WEBSITE_URL
    privacy_url: str = DEFAULT_PRIVACY_URL
    terms_url: str = DEFAULT_TERMS_URL
    bot_domain: str = ""
    template: Path | None = None
    icons_dir: Path | None = None
    node_modules: Path | None = None


@dataclass(frozen=True)
class BuiltPackage:
    """A written app package: where, what it holds, and what it was validated against."""

    path: Path
    manifest: dict[str, Any]
    schema_path: Path
    files: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """What was written, for the person who ran the build."""
        bot = self.manifest["bots"][0]["botId"]
        lines = [
            f"wrote {self.path}: Teams app package {self.manifest['name']['short']!r} "
            f"version {self.manifest['version']} for bot {bot} (app id {self.manifest['id']})",
            f"  contents: {', '.join(self.files)}",
            f"  manifest v{self.manifest['manifestVersion']} validated against {self.schema_path}",
        ]
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def build_package(options: ManifestOptions) -> BuiltPackage:
    """Render, validate and zip the app package; raise :class:`ManifestError` on any problem."""
    values, notes = _values(options)
    template_path = options.template or project_root() / "manifest" / "manifest.template.json"
    manifest = render_manifest(_load_json(template_path, "manifest template"), values)
    manifest_version = _manifest_version(manifest)
    schema_path = find_schema(manifest_version, options.node_modules)
    validate_manifest(manifest, schema_path)
    icons_dir = options.icons_dir or template_path.parent
    icons = _icons(manifest, icons_dir)
    files = {"manifest.json": (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()}
    files.update(icons)
    target = _target(options.out, str(manifest["version"]))
    _write_zip(target, files)
    shown = ["manifest.json"] + [
        f"{name} ({size}×{size})"
        for name, size in (
            (manifest["icons"]["color"], COLOR_ICON_SIZE),
            (manifest["icons"]["outline"], OUTLINE_ICON_SIZE),
        )
    ]
    return BuiltPackage(
        path=target, manifest=manifest, schema_path=schema_path, files=tuple(shown), notes=tuple(notes)
    )


# -- rendering --------------------------------------------------------------------------------


def _values(options: ManifestOptions) -> tuple[dict[str, str], list[str]]:
    """The placeholder values, each checked; plus notes about defaults that need replacing."""
    problems: list[str] = []
    if not _GUID.match(options.bot_id.strip()):
        problems.append(
            f"--bot-id {options.bot_id!r} is not a GUID: give the Azure Bot's Microsoft App ID "
            "(MicrosoftAppId), like 00000000-0000-0000-0000-000000000000."
        )
    app_id = (options.app_id or options.bot_id).strip()
    if options.app_id is not None and not _GUID.match(app_id):
        problems.append(f"--app-id {options.app_id!r} is not a GUID.")
    version = options.version if options.version is not None else default_version()
    if not _VERSION.match(version):
        problems.append(
            f"--version {version!r} is not a Teams app version: use major.minor.patch, "
            "digits only, like 1.0.0 (raise it for every upload that replaces an app)."
        )
    for option, url in (
        ("--website-url", options.website_url),
        ("--privacy-url", options.privacy_url),
        ("--terms-url", options.terms_url),
    ):
        if not url.lower().startswith("https://") or len(url) <= len("https://"):
            problems.append(f"{option} {url!r} is not an https:// URL; Teams shows it on the app's page.")
    domain = options.bot_domain.strip()
    if domain and not _HOST.match(domain):
        problems.append(
            f"--bot-domain {options.bot_domain!r} is not a host name: give the messaging "
            "endpoint's host only, like remediation-bot.azurewebsites.net (no https://, no path)."
        )
    if problems:
        raise ManifestError(" ".join(problems))
    notes = []
    defaults = [
        option
        for option, value, default in (
            ("--website-url", options.website_url, DEFAULT_WEBSITE_URL),
            ("--privacy-url", options.privacy_url, DEFAULT_PRIVACY_URL),
            ("--terms-url", options.terms_url, DEFAULT_TERMS_URL),
        )
        if value == default
    ]
    if defaults:
        notes.append(
            f"the developer links are example.com placeholders; pass {', '.join(defaults)} with "
            "your organization's pages before publishing the app to your org's catalog."
        )
    if not domain:
        notes.append("validDomains is empty; pass --bot-domain HOST to list the bot's host.")
    values = {
        "botId": options.bot_id.strip().lower(),
        "appId": app_id.lower(),
        "version": version,
        "shortName": options.short_name,
        "developerName": options.developer_name,
        "websiteUrl": options.website_url,
        "privacyUrl": options.privacy_url,
        "termsUrl": options.terms_url,
        "botDomain": domain,
    }
    return values, notes


def render_manifest(template: Any, values: Mapping[str, str]) -> dict[str, Any]:
    """``template`` with every ``{{name}}`` in its strings replaced by ``values[name]``.

    A list item that is exactly one placeholder with an empty value is dropped. Raises
    :class:`ManifestError` for a placeholder ``values`` does not fill (naming its JSON path).
    """
    unknown: list[str] = []

    def fill(value: Any, path: str) -> Any:
        if isinstance(value, str):

            def replace(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in values:
                    unknown.append(f"{{{{{name}}}}} at {path}")
                    return match.group(0)
                return values[name]

            return _PLACEHOLDER.sub(replace, value)
        if isinstance(value, list):
            kept = []
            for index, item in enumerate(value):
                whole = _PLACEHOLDER.fullmatch(item) if isinstance(item, str) else None
                if whole is not None and values.get(whole.group(1)) == "":
                    continue
                kept.append(fill(item, f"{path}[{index}]"))
            return kept
        if isinstance(value, dict):
            return {key: fill(item, _child(path, key)) for key, item in value.items()}
        return value

    rendered = fill(template, "$")
    if unknown:
        raise ManifestError(
            f"The manifest template uses placeholders the build does not fill: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(values))})."
        )
    if not isinstance(rendered, dict):
        raise ManifestError("The manifest template is not a JSON object.")
    return rendered


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", key) else f"{path}[{key!r}]"


def _manifest_version(manifest: Mapping[str, Any]) -> str:
    version = manifest.get("manifestVersion")
    if not isinstance(version, str) or not _MANIFEST_VERSION.match(version):
        raise ManifestError(
            f"The manifest's manifestVersion {version!r} is not a Teams schema version like '1.22'."
        )
    expected = SCHEMA_URL.format(version=version)
    if manifest.get("$schema") != expected:
        raise ManifestError(
            f"The manifest's $schema {manifest.get('$schema')!r} does not match its manifestVersion "
            f"{version}: it must be {expected}."
        )
    return version


# -- the schema -------------------------------------------------------------------------------


def find_schema(manifest_version: str, node_modules: Path | None = None) -> Path:
    """The official schema file of ``manifest_version`` in ``node_modules`` (the checkout's by default).

    Raises :class:`ManifestError` saying to run ``npm ci`` when it is not there.
    """
    root = project_root()
    modules = node_modules if node_modules is not None else root / "node_modules"
    package = modules / "@microsoft" / "app-manifest"
    path = (
        package / "build" / "json-schemas" / "teams" / f"v{manifest_version}" / "MicrosoftTeams.schema.json"
    )
    if path.is_file():
        return path
    pinned = _pinned_version(root / "package.json")
    installed = _installed_version(package / "package.json")
    if installed is None:
        raise ManifestError(
            f"The Teams manifest schema v{manifest_version} is not available offline: "
            f"{SCHEMA_PACKAGE} is not installed in {modules}. Run `npm ci` in {root} "
            f"(package.json pins {SCHEMA_PACKAGE} {pinned or '(not listed)'})."
        )
    raise ManifestError(
        f"The installed {SCHEMA_PACKAGE} {installed} has no Teams manifest schema "
        f"v{manifest_version} (looked for {path}). Run `npm ci` in {root} to install the pinned "
        f"version ({pinned or 'not listed in package.json'}), or set manifestVersion in the "
        "template to a version it ships."
    )


def _pinned_version(package_json: Path) -> str | None:
    try:
        dependencies = json.loads(package_json.read_text(encoding="utf-8")).get("dependencies", {})
    except (OSError, ValueError, AttributeError):
        return None
    pinned = dependencies.get(SCHEMA_PACKAGE) if isinstance(dependencies, dict) else None
    return str(pinned) if pinned else None


def _installed_version(package_json: Path) -> str | None:
    try:
        return str(json.loads(package_json.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def validate_manifest(manifest: Mapping[str, Any], schema_path: Path) -> None:
    """Check ``manifest`` against the draft-04 schema at ``schema_path``.

    Raises :class:`ManifestError` listing every violation, one sentence each, with its JSON path.
    """
    problems = schema_errors(manifest, _load_json(schema_path, "Teams manifest schema"))
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ManifestError(
            f"The manifest does not follow the Teams manifest schema v{manifest.get('manifestVersion')} "
            f"({count}):\n" + "\n".join(f"  {problem}" for problem in problems)
        )


def schema_errors(manifest: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every violation of ``schema`` (draft-04) by ``manifest``: ``at $.path: what is wrong.``."""
    # Imported here so that ``import devtools.manifest`` (the CLI's help texts) stays cheap.
    from jsonschema import Draft4Validator

    validator = Draft4Validator(schema)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"at {error.json_path}: {_describe(error)}." for error in errors]


def _describe(error: Any) -> str:
    """jsonschema's message, made specific for the keywords a manifest most often breaks."""
    keyword, limit, instance = error.validator, error.validator_value, error.instance
    if keyword == "maxLength":
        return f"{instance!r} is {len(instance)} characters long, more than the {limit} allowed"
    if keyword == "maxItems":
        return f"has {len(instance)} items, more than the {limit} allowed"
    if keyword == "pattern":
        return f"{instance!r} does not match the pattern {limit}"
    if keyword == "enum":
        return f"{instance!r} is not one of {', '.join(repr(v) for v in limit)}"
    return str(error.message)


def _load_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"The {what} {path} does not exist.") from None
    except OSError as exc:
        raise ManifestError(f"Cannot read the {what} {path}: {exc.strerror or exc}.") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"The {what} {path} is not valid JSON: {exc}.") from None


# -- icons ------------------------------------------------------------------------------------


def _icons(manifest: Mapping[str, Any], folder: Path) -> dict[str, bytes]:
    icons = manifest["icons"]  # required by the schema, validated before
    found: dict[str, bytes] = {}
    for key, size in (("color", COLOR_ICON_SIZE), ("outline", OUTLINE_ICON_SIZE)):
        name = str(icons[key])
        if "/" in name or "\\" in name:
            raise ManifestError(
                f"icons.{key} {name!r} is in a subfolder; the package keeps icons at the zip root, "
                "so give a plain file name."
            )
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ManifestError(f"Cannot read icons.{key} {path}: {exc.strerror or exc}.") from None
        width, height = png_size(data, f"icons.{key} {path}")
        if (width, height) != (size, size):
            raise ManifestError(f"icons.{key} {path} is {width}×{height} pixels; Teams needs {size}×{size}.")
        if key == "outline":
            check_outline(data, f"icons.outline {path}")
        found[name] = data
    return found


def png_size(data: bytes, what: str) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; :class:`ManifestError` if ``data`` is no PNG."""
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ManifestError(f"{what} is not a PNG file.")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def check_outline(data: bytes, what: str) -> None:
    """Teams' outline rule: every pixel fully transparent, or white with some alpha; some of each.

    Raises :class:`ManifestError` naming how many pixels break it and where the first one is.
    """
    width, _, pixels = decode_png(data, what)
    offenders = [
        (index % width, index // width, pixel)
        for index, pixel in enumerate(pixels)
        if pixel[3] != 0 and pixel[:3] != (255, 255, 255)
    ]
    if offenders:
        x, y, (r, g, b, a) = offenders[0]
        raise ManifestError(
            f"{what} has {len(offenders)} pixel{'s' if len(offenders) > 1 else ''} that "
            f"{'are' if len(offenders) > 1 else 'is'} neither fully transparent nor white "
            f"(the first at x={x}, y={y}: rgba({r}, {g}, {b}, {a})); Teams needs a white "
            "outline on a transparent background."
        )
    if all(pixel[3] == 255 for pixel in pixels):
        raise ManifestError(f"{what} has no transparent pixel; Teams needs a transparent background.")
    if all(pixel[3] == 0 for pixel in pixels):
        raise ManifestError(f"{what} is fully transparent; it shows nothing.")


Pixel = tuple[int, int, int, int]


def decode_png(data: bytes, what: str) -> tuple[int, int, list[Pixel]]:
    """Width, height and RGBA pixels (row by row) of an 8-bit, non-interlaced PNG.

    Covers what image editors write for icons: grey, grey+alpha, RGB, RGBA and palette (with
    ``tRNS`` transparency). Anything else raises :class:`ManifestError` saying how to re-save.
    """
    width, height = png_size(data, what)
    header, palette, transparency, compressed = b"", b"", b"", bytearray()
    for kind, body in _chunks(data, what):
        if kind == b"IHDR":
            header = body
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            transparency = body
        elif kind == b"IDAT":
            compressed += body
    bit_depth, colour_type, _, _, interlace = header[8:13]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour_type)
    if bit_depth != 8 or channels is None or interlace != 0:
        raise ManifestError(
            f"{what} uses a PNG format this check cannot read (bit depth {bit_depth}, colour type "
            f"{colour_type}, interlace {interlace}); save it as 8-bit RGBA, not interlaced."
        )
    try:
        raw = zlib.decompress(bytes(compressed))
    except zlib.error as exc:
        raise ManifestError(f"{what} is a damaged PNG: {exc}.") from None
    stride = width * channels
    if len(raw) < height * (stride + 1):
        raise ManifestError(f"{what} is a damaged PNG: its image data is too short.")
    rows = _unfilter(raw, height, stride, channels, what)
    pixels: list[Pixel] = []
    for row in rows:
        for x in range(width):
            sample = row[x * channels : (x + 1) * channels]
            pixels.append(_rgba(colour_type, sample, palette, transparency))
    return width, height, pixels


def _chunks(data: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if len(body) != length:
            raise ManifestError(f"{what} is a damaged PNG: its {kind.decode('latin-1')} chunk is cut short.")
        yield kind, body
        if kind == b"IEND":
            return
        position += 12 + length


def _unfilter(raw: bytes, height: int, stride: int, step: int, what: str) -> list[bytes]:
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up = previous[i]
            upper_left = previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(left, up, upper_left)) & 0xFF
            elif kind != 0:
                raise ManifestError(f"{what} is a damaged PNG: row {y} has filter type {kind}.")
        rows.append(bytes(line))
        previous = bytes(line)
    return rows


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _rgba(colour_type: int, sample: bytes, palette: bytes, transparency: bytes) -> Pixel:
    if colour_type == 6:
        return sample[0], sample[1], sample[2], sample[3]
    if colour_type == 4:
        return sample[0], sample[0], sample[0], sample[1]
    if colour_type == 2:
        opaque = not (len(transparency) == 6 and struct.unpack(">HHH", transparency) == tuple(sample))
        return sample[0], sample[1], sample[2], 255 if opaque else 0
    if colour_type == 0:
        opaque = not (len(transparency) == 2 and struct.unpack(">H", transparency)[0] == sample[0])
        return sample[0], sample[0], sample[0], 255 if opaque else 0
    index = sample[0]
    r, g, b = palette[3 * index : 3 * index + 3] or b"\x00\x00\x00"
    alpha = transparency[index] if index < len(transparency) else 255
    return r, g, b, alpha


# -- writing ----------------------------------------------------------------------------------


def _target(out: Path, version: str) -> Path:
    """The zip to write: ``out``, or ``out/remediation-bot-<version>.zip`` when ``out`` is a folder."""
    if out.is_dir():
        return out / f"remediation-bot-{version}.zip"
    folder = out.parent
    if not folder.exists():
        raise ManifestError(f"Cannot write the app package to {out}: the folder {folder} does not exist.")
    if not folder.is_dir():
        raise ManifestError(f"Cannot write the app package to {out}: {folder} is not a folder.")
    return out


def _write_zip(target: Path, files: Mapping[str, bytes]) -> None:
    """Write the zip through a temporary file in the same folder, then rename: never half a zip."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=".app-package-", suffix=".zip", dir=target.parent)
    except OSError as exc:
        raise ManifestError(
            f"Cannot write the app package to {target}: the folder {target.parent} is not writable "
            f"({exc.strerror or exc})."
        ) from None
    try:
        with os.fdopen(handle, "wb") as stream, zipfile.ZipFile(stream, "w") as archive:
            for name in sorted(files, key=lambda n: (n != "manifest.json", n)):
                entry = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                entry.compress_type = zipfile.ZIP_DEFLATED
                entry.external_attr = 0o644 << 16
                archive.writestr(entry, files[name])
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ManifestError(f"Cannot write the app package to {target}: {exc.strerror or exc}.") from None
