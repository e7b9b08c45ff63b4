"""The import rules of the layout (README "Layout", STYLE.md).

- bot/domain is pure: no I/O, no clock, nothing from the packages around it;
- each outside library is imported by one package only: botbuilder by bot/teams, the Microsoft 365
  Agents SDK by bot/teams_agents, httpx and msal by bot/graph, the SQL drivers by bot/store (the
  only code that touches SQL);
- what both Teams transports share (bot/teams' edge, routing and delivery) imports neither SDK;
- production code (bot/, cards/) never imports the development tools (devtools/).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# library -> the packages allowed to import it
ALLOWED = {
    "botbuilder": ("bot/teams/",),
    "botframework": ("bot/teams/",),
    "msrest": ("bot/teams/",),
    # The Teams transport on the Microsoft 365 Agents SDK (TEAMS_SDK=agents).
    "microsoft_agents": ("bot/teams_agents/",),
    # Bot Framework tokens (bot/teams, bot/teams_agents) and Entra ID tokens of the approval page's
    # sign-in (bot/graph).
    "jwt": ("bot/teams/", "bot/teams_agents/", "bot/graph/"),
    "httpx": ("bot/graph/",),
    "msal": ("bot/graph/",),
    "requests": ("bot/graph/",),
    "sqlite3": ("bot/store/",),
    "asyncpg": ("bot/store/",),
    "psycopg": ("bot/store/",),
    "aiohttp": (
        "bot/web/",
        "bot/cli/",
        "bot/teams/",
        "bot/teams_agents/",
        "devtools/sandbox/",
        "devtools/demo.py",
    ),
    "microsoft_teams": ("cards/",),
    # Log rendering is set up by the commands; everything else binds ids through bot/log_context.py.
    "structlog": ("bot/log_context.py", "bot/cli/logs.py"),
    "prometheus_client": ("bot/web/metrics.py",),
    "opentelemetry": ("bot/tracing.py",),
    "azure": ("bot/monitor/",),
    # The development extras: only the tools in devtools/ (never shipped) use them.
    "trustme": ("devtools/",),
    "openapi_core": ("devtools/",),
    "werkzeug": ("devtools/",),
    "jsonschema": ("devtools/",),
}
# What both Teams transports share imports neither SDK (the schema table in bot/teams/shape.py is
# still read from botbuilder's models: the one botbuilder piece the Agents transport uses).
SHARED_TEAMS = ("bot/teams/edge.py", "bot/teams/routing.py", "bot/teams/delivery.py", "bot/teams/pacing.py")
SDKS = ("botbuilder", "botframework", "msrest", "microsoft_agents")
# The development tools. Production code may load them only from the development commands
# (bot/cli/dev.py), inside the command functions, after checking a checkout is there.
DEVTOOLS = ("devtools", "bot.sandbox", "bot.demo", "bot.manifest", "cards.samples")
DEVTOOLS_GATE = "bot/cli/dev.py"
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


def test_the_shared_teams_code_imports_neither_sdk() -> None:
    broken = []
    for relative in SHARED_TEAMS:
        for name in _imports(ROOT / relative):
            if name.split(".")[0] in SDKS:
                broken.append(f"{relative} imports {name}")
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
        "bot/teams/routing.py",
        "bot/teams_agents/transport.py",
        "bot/graph/client.py",
        "bot/domain/approval.py",
        "bot/tenant/intake.py",
        "bot/web/app.py",
        "bot/cli/main.py",
        "cards/case.py",
    } <= seen


def _is_devtools(name: str) -> bool:
    return any(name == tool or name.startswith(tool + ".") for tool in DEVTOOLS)


def _module_level_imports(path: Path) -> set[str]:
    """The imports a module runs when it is imported (not those inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    nodes: list[ast.stmt] = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.If | ast.Try | ast.With):  # module-level blocks still run
            for field in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, field, []):
                    nodes.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return names


def test_production_code_never_imports_the_development_tools() -> None:
    broken = []
    for path in _sources():
        relative = path.relative_to(ROOT).as_posix()
        for name in _module_level_imports(path):
            if _is_devtools(name):
                broken.append(f"{relative} imports {name} when it is imported")
        if relative != DEVTOOLS_GATE:
            broken.extend(f"{relative} imports {name}" for name in _imports(path) if _is_devtools(name))
    assert broken == []


def test_importing_all_production_code_loads_no_development_tool() -> None:
    # Every module of bot/ and cards/, imported in a fresh interpreter run from the checkout
    # (where devtools/ is importable): none of them may pull in devtools or the sandbox extras.
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in _sources()
        if path.name != "__main__.py"
    ]
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'devtools', 'trustme', 'openapi_core', 'werkzeug', 'jsonschema'})\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"production code loaded: {result.stdout.strip()}"
    assert len(modules) > 40, modules
