"""The import rules of the layout (README "Layout", STYLE.md).

- bot/domain is pure: no I/O, no clock, nothing from the packages around it;
- each outside library is imported by one package only: botbuilder by bot/teams, httpx and msal by
  bot/graph, the SQL drivers by bot/store (the only code that touches SQL);
- production code (bot/, cards/) never imports the development tools (devtools/).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# library -> the packages allowed to import it
ALLOWED = {
    "botbuilder": ("bot/teams/",),
    "botframework": ("bot/teams/",),
    "jwt": ("bot/teams/",),
    "httpx": ("bot/graph/",),
    "msal": ("bot/graph/",),
    "requests": ("bot/graph/",),
    "sqlite3": ("bot/store/",),
    "asyncpg": ("bot/store/",),
    "psycopg": ("bot/store/",),
    "aiohttp": ("bot/web/", "bot/cli/", "bot/teams/", "bot/sandbox/", "bot/demo.py"),
    "microsoft_teams": ("cards/",),
}
# bot/domain is pure: nothing that does I/O or reads a clock beyond the standard types.
DOMAIN_FORBIDDEN = {
    "asyncio",
    "os",
    "socket",
    "time",
    "random",
    "subprocess",
    "pathlib",
    "aiohttp",
    "bot.graph",
    "bot.store",
    "bot.teams",
    "bot.tenant",
    "bot.services",
    "bot.commands",
    "bot.web",
    "bot.cli",
    "bot.config",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _sources() -> list[Path]:
    return sorted([*ROOT.glob("bot/**/*.py"), *ROOT.glob("cards/**/*.py")])


def test_outside_libraries_stay_behind_their_package() -> None:
    broken = []
    for path in _sources():
        relative = path.relative_to(ROOT).as_posix()
        for name in _imports(path):
            top = name.split(".")[0]
            allowed = ALLOWED.get(top)
            if allowed is not None and not relative.startswith(allowed):
                broken.append(f"{relative} imports {name} (only {', '.join(allowed)} may)")
    assert broken == []


def test_domain_is_pure() -> None:
    broken = []
    for path in ROOT.glob("bot/domain/**/*.py"):
        for name in _imports(path):
            if any(name == banned or name.startswith(banned + ".") for banned in DOMAIN_FORBIDDEN):
                broken.append(f"{path.relative_to(ROOT)} imports {name}")
        if "datetime.now" in path.read_text() or "utcnow" in path.read_text():
            broken.append(f"{path.relative_to(ROOT)} reads the clock")
    assert broken == []


def test_the_rules_see_the_code() -> None:
    # Guards against the walk above silently finding nothing (a moved tree, a bad glob).
    seen = {path.relative_to(ROOT).as_posix() for path in _sources()}
    assert {
        "bot/teams/handler.py",
        "bot/graph/client.py",
        "bot/domain/approval.py",
        "bot/tenant/intake.py",
        "bot/web/app.py",
        "bot/cli/main.py",
        "cards/case.py",
    } <= seen
