"""Crash hooks at the named steps where a replica dying would matter, for tests only.

``fault_point("card.posted")`` does nothing unless the process was started with
``REMEDIATION_FAULT_POINTS`` naming that step (comma-separated for several): then the process
sends itself SIGKILL right there, dying as a crashed host would (no ``finally``, no clean-up, no
flushed buffers), the first time it reaches the step. ``card.posted:stop`` sends SIGSTOP
instead: the process freezes there (a paused VM, a long stall) until the test sends SIGCONT.
The real-process tests (``tests/store/test_crash_windows.py``) start a replica so, stop it at
the step, and check that the survivors finish the work exactly once.

The variable is read once, at import; without it :func:`fault_point` tests one empty dict and
returns, so production pays next to nothing. A name that is not a step below stops the
process at import, so a misspelt test cannot pass by never crashing.
"""

from __future__ import annotations

import os
import signal
import sys

STEPS = frozenset(
    {
        # publishing: the first card of a case reached Teams, its reference is not saved yet
        "card.posted",
        # execution: the job is claimed and its request read as approved, Start not written yet
        "action.claimed",
        # execution: the request is executing (Start written), nothing sent to Graph yet
        "action.started",
        # execution: the attempt is marked dispatched, the Graph call is about to be sent
        "action.dispatched",
        # execution: Graph answered (and was read back), the result is not stored yet
        "graph.answered",
        # reporting: the result report is claimed, the thread reply is not sent yet
        "report.claimed",
        # bulk execution: a chunk's identities are claimed and marked dispatched, nothing sent yet
        "bulk.dispatched",
        # bulk execution: Graph answered a chunk (and was read back), no outcome is recorded yet
        "bulk.answered",
        # reporting: the thread reply was sent, it is not recorded as reported yet
        "report.sent",
    }
)
VARIABLE = "REMEDIATION_FAULT_POINTS"
MODES = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def _armed() -> dict[str, signal.Signals]:
    armed: dict[str, signal.Signals] = {}
    for entry in os.environ.get(VARIABLE, "").split(","):
        step, _, mode = entry.strip().partition(":")
        if not step:
            continue
        if step not in STEPS or (mode or "kill") not in MODES:
            raise SystemExit(
                f"{VARIABLE}: unknown fault point {entry.strip()!r}; "
                f"known: {', '.join(sorted(STEPS))}, each optionally with :kill or :stop"
            )
        armed[step] = MODES[mode or "kill"]
    return armed


_ARMED = _armed()


def fault_point(step: str) -> None:
    """Die (or freeze) here when ``step`` is armed (tests only); otherwise do nothing."""
    if _ARMED and step in _ARMED:
        # One line so the test's log shows where it stopped; then no chance to clean up.
        sending = _ARMED.pop(step)  # a frozen process that is resumed carries on past the step
        sys.stderr.write(f"fault point {step}: {sending.name} to process {os.getpid()}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), sending)
