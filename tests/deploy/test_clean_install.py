"""The package as a deployment gets it: installed without extras into a clean virtual environment.

The wheel carries production code only (bot/, cards/), and its runtime dependencies are only what
``serve`` needs. This builds it from a copy of exactly what the Dockerfile copies (no devtools/, no
tests/), installs it with its real dependencies at the locked versions, checks that no development
library came along, then starts ``remediation-bot serve`` from that environment against the
sandbox tenant (run from the development environment, as a real tenant would be elsewhere) and
waits for ``/readyz`` to answer 200 once the bot is installed in the channel.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from devtools.sandbox import SandboxTenant
from tests.support.connector import RecordingConnector
from tests.support.harness import install_activity
from tests.support.replica import free_port, replica_env

ROOT = Path(__file__).resolve().parents[2]
# What pip prints when it cannot reach the package index at all (not a resolution failure).
_OFFLINE = (
    "Failed to establish a new connection",
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Could not fetch URL",
    "No route to host",
)
# The development extras and tools: none of them may be in a deployment.
_DEV_ONLY = ("devtools", "trustme", "openapi_core", "werkzeug", "jsonschema", "psycopg", "pytest", "mypy")


def _install(tmp_path: Path) -> Path:
    """A clean virtual environment with the package installed without extras; its bin/ folder."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("bot", "cards"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    bin_dir = env_dir / "bin"
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    environ["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        [
            str(bin_dir / "pip"),
            "install",
            "--quiet",
            "--constraint",
            str(ROOT / "requirements.lock"),
            str(source),
        ],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0 and any(sign in result.stderr for sign in _OFFLINE):
        pytest.skip(
            f"the package index is unreachable, so the clean install could not run: {result.stderr[-500:]}"
        )
    assert result.returncode == 0, result.stderr[-3000:]
    check = subprocess.run(
        [str(bin_dir / "pip"), "check"], env=environ, capture_output=True, text=True, timeout=120, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    probe = (
        f"import importlib.util as u; print(','.join(n for n in {_DEV_ONLY!r} if u.find_spec(n) is not None))"
    )
    found = subprocess.run(
        [str(bin_dir / "python"), "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert found.stdout.strip() == "", (
        f"a deployment without extras has development libraries: {found.stdout}"
    )
    # The development commands say plainly what they need instead of failing on an import.
    demo = subprocess.run(
        [str(bin_dir / "remediation-bot"), "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 2, demo.stdout + demo.stderr
    assert "needs a development checkout" in demo.stderr and "Traceback" not in demo.stderr, demo.stderr
    return bin_dir


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@pytest.fixture
async def tenant(tmp_path: Path) -> AsyncIterator[SandboxTenant]:
    sandbox = SandboxTenant({"users": [], "alerts": []}, cert_dir=tmp_path / "tenant")
    await sandbox.start()
    yield sandbox
    await sandbox.stop()
    assert sandbox.violations == []


async def test_serve_from_a_clean_install_without_extras_gets_ready(
    tmp_path: Path, tenant: SandboxTenant
) -> None:
    bin_dir = await asyncio.to_thread(_install, tmp_path)

    connector = RecordingConnector()
    await connector.start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"responders": {"users": ["aaaaaaaa-0000-4000-8000-000000000001"]}}))
    port = free_port()
    env = replica_env(
        tenant, store_url=f"sqlite:///{tmp_path / 'bot.db'}", policy=policy, port=port, LOG_LEVEL="INFO"
    )
    for leaked in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(leaked, None)
    workdir = tmp_path / "run"  # an empty folder: no checkout on the path, no .env
    await asyncio.to_thread(workdir.mkdir)
    log_path = tmp_path / "serve.log"
    process = await asyncio.to_thread(_serve, bin_dir, workdir, env, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            waiting = await _status(http, f"{url}/readyz", process, log_path)
            assert waiting == 503, "not ready before the bot is installed in the channel"
            async with http.post(
                f"{url}/api/messages", json=install_activity(connector.service_url)
            ) as answer:
                assert answer.status < 300, await answer.text()
            assert await _status(http, f"{url}/readyz", process, log_path) == 200
    finally:
        await asyncio.to_thread(_stop, process)
        await connector.stop()
    log_text = await asyncio.to_thread(_tail, log_path)
    assert "Traceback" not in log_text, log_text


def _serve(bin_dir: Path, workdir: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``remediation-bot serve`` from the clean environment, its output in ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(bin_dir / "remediation-bot"), "serve"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def _status(http: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes], log: Path) -> int:
    """The first status ``url`` answers once the process listens (it is polled until then)."""
    for _ in range(600):
        if process.poll() is not None:
            raise AssertionError(f"remediation-bot serve exited: {_tail(log)}")
        try:
            async with http.get(url) as answer:
                return answer.status
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"remediation-bot serve did not listen: {_tail(log)}")


def test_the_wheel_holds_no_development_tools() -> None:
    # The package list is what ships: only bot* and cards*, never devtools/ or tests/.
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["bot*", "cards*"]
    runtime = " ".join(config["project"]["dependencies"])
    for library in ("trustme", "openapi-core", "werkzeug", "jsonschema", "psycopg"):
        assert library not in runtime, f"{library} is a runtime dependency"
    assert sys.version_info >= (3, 11)
