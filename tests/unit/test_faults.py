"""The crash hooks: armed only by the environment, each named step placed in the code once."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot.faults import STEPS, VARIABLE, fault_point

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, armed: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    if armed is not None:
        env[VARIABLE] = armed
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_every_named_step_is_placed_once_and_every_placement_is_named() -> None:
    placed: list[str] = []
    for path in ROOT.glob("bot/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fault_point":
                (argument,) = node.args
                assert isinstance(argument, ast.Constant), f"{path}: a fault point is named by a literal"
                placed.append(argument.value)
    assert sorted(placed) == sorted(STEPS)


def test_an_armed_step_kills_the_process_there_and_nothing_else_does() -> None:
    code = (
        "from bot.faults import fault_point\n"
        "fault_point('report.sent'); print('passed report.sent', flush=True)\n"
        "fault_point('card.posted'); print('passed card.posted', flush=True)\n"
    )
    died = _run(code, "card.posted, graph.answered")
    assert died.returncode == -signal.SIGKILL
    assert died.stdout == "passed report.sent\n"
    assert "fault point card.posted" in died.stderr
    assert _run(code, None).stdout == "passed report.sent\npassed card.posted\n"


def test_a_misspelt_step_stops_the_process_at_start() -> None:
    refused = _run("import bot.faults", "card.postd")
    assert refused.returncode == 1
    assert "unknown fault point 'card.postd'" in refused.stderr


def test_unarmed_steps_do_nothing_here() -> None:
    assert VARIABLE not in os.environ
    for step in STEPS:
        fault_point(step)


def test_a_step_armed_to_stop_freezes_the_process_until_it_is_continued() -> None:
    code = (
        "from bot.faults import fault_point\n"
        "fault_point('action.dispatched'); print('continued', flush=True)\n"
        "fault_point('action.dispatched'); print('and not frozen twice', flush=True)\n"
    )
    env = {**os.environ, VARIABLE: "action.dispatched:stop"}
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{process.pid}/stat").read_text().split(") ")[1][0] != "T":
            assert process.poll() is None and time.monotonic() < deadline, "the process froze at the step"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGCONT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out == "continued\nand not frozen twice\n"
    assert "fault point action.dispatched: SIGSTOP" in err
    assert _run("import bot.faults", "card.posted:pause").returncode == 1
