"""``make bench``: every benchmark, each beside its baseline in the same run.

    make bench                         # everything, in about 30 minutes on two cores
    BENCH_QUICK=1 make bench           # fewer clicks, smaller storms: about 12 minutes
    BENCH_STORM=0 make bench           # without the alert storm
    BENCH_MINUTES=60 make bench        # a longer time budget
    BENCH_STORM_IDENTITIES=1000 make bench   # the one-card storm at 10,000 alerts too (10 minutes more)
    python -m tests.bench.run --only invokes --concurrency 1,20
    BENCH_RESULTS=/tmp/elsewhere python -m tests.bench.run ...   # results written elsewhere

A click phase whose bot CPU (at the cost per click measured so far on the same store) would not
fit in the time budget is skipped, and the results say so: the slower the bot, the less of the
200-clicker, 10,000-case configuration fits.

Writes ``tests/bench/results/invokes.json``, ``approvals.json``, ``storm.json`` and the summary
``SUMMARY.md`` (also printed). The figures are the machine's at that moment: whatever else runs
on it runs in them too (the load average at start and end is recorded beside them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench import storm
from tests.bench.approvals import approval_latency, summary
from tests.bench.common import RESULTS, Client, Process, quick, start_echo, write_json
from tests.bench.invokes import (
    Measured,
    echo_clicks,
    refused_clicks,
    request_and_approve,
    round_figures,
    start_setup,
    stop_setup,
)
from tests.bench.seed import seed_history
from tests.bench.summary import render
from tests.support.botauth import ChannelKeys


def plan(quick_mode: bool) -> dict[str, Any]:
    """How much of each benchmark to run."""
    if quick_mode:
        return {
            "refused_clicks": {1: 20, 20: 100, 200: 200},
            "seconds_per_phase": 5.0,
            "rounds": {1: 3, 20: 1, 200: 1},
            "approvals": (5, 5),
            "storm": (100, 10),
            "campaign": (200, 10),
            "minutes": 8.0,
        }
    return {
        "refused_clicks": {1: 100, 20: 600, 200: 1200},
        "seconds_per_phase": 20.0,
        "rounds": {1: 10, 20: 3, 200: 1},
        "approvals": (20, 10),
        # Teams lets a bot post 60 cards per 30 s into a channel: 400 identities take 200 s a run.
        "storm": (400, 10),
        # Storm mode: always the 10,000 alerts over 1,000 identities (one card, no 1,000 posts).
        "campaign": (1000, 10),
        "minutes": 32.0,
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


class Budget:
    """Keeps the click benchmarks inside their time: a phase whose bot CPU, at the cost per click
    measured so far on the same store, would not end before the deadline is skipped (and said so)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self._cost: dict[tuple[str, str], float] = {}

    def learn(self, store: str, kind: str, measured: Measured) -> None:
        per = measured.cpu_per_click
        if per is not None and measured.figures.clicks > measured.figures.errors:
            self._cost[(store, kind)] = per

    def estimate(self, store: str, kinds: tuple[str, ...], clicks: float) -> float:
        """Seconds of bot CPU for ``clicks`` clicks of each of ``kinds`` (0.0 when nothing is known)."""
        known = [v for (s, _), v in self._cost.items() if s == store]
        total = 0.0
        for kind in kinds:
            total += clicks * self._cost.get((store, kind), max(known, default=0.0))
        return total

    def skip(self, seconds: float) -> dict[str, Any] | None:
        """None when ``seconds`` of work fit before the deadline; otherwise the record of the skip."""
        left = self.deadline - time.monotonic()
        if seconds <= left:
            return None
        return {
            "skipped": f"would take about {seconds / 60:.1f} min of bot CPU at the cost per click measured "
            f"so far ({max(left, 0) / 60:.1f} min of the budget left; BENCH_MINUTES raises it)",
            "estimated_seconds": round(seconds),
        }


async def invokes(
    work: Path,
    keys: ChannelKeys,
    concurrencies: list[int],
    history: int,
    settings: dict[str, Any],
    budget: Budget,
) -> dict[str, Any]:
    """Every click kind at every concurrency, with and without history, and the echo bot."""
    started = machine()
    template: Path | None = None
    stores: list[tuple[str, Path | None]] = [("small", None)]
    if history:
        template = work / "history.db"
        print(f"seeding {history:,} closed cases and {history:,} finished requests…", flush=True)
        began = time.monotonic()
        await seed_history(f"sqlite:///{template}", history)
        print(f"  seeded in {time.monotonic() - began:.0f} s", flush=True)
        stores.append((f"{history}", template))
    seconds = settings["seconds_per_phase"]
    configs: list[dict[str, Any]] = []
    client = Client()
    echo_process = start_echo(keys, work / "echo.log")
    try:
        await echo_process.wait_healthy()
        echo_figures = await echo(echo_process, keys, client, concurrencies, settings)
        for store_name, store_template in stores:
            for workers in concurrencies:
                name = f"bot-{store_name}-c{workers}"
                rounds = settings["rounds"][workers]
                clicks = settings["refused_clicks"][workers]
                refused_cost = budget.estimate(store_name, ("refused",), workers) + min(
                    seconds, budget.estimate(store_name, ("refused",), clicks)
                )
                rounds_cost = budget.estimate(store_name, ("request", "approval"), rounds * workers)
                if budget.skip(refused_cost) and budget.skip(rounds_cost):
                    print(f"{name}: skipped, over the time budget", flush=True)
                    configs.append(
                        _skipped(
                            store_name,
                            workers,
                            history if store_template else 0,
                            budget,
                            refused_cost,
                            rounds_cost,
                        )
                    )
                    continue
                print(f"{name}: starting (a pool of {workers} case(s))…", flush=True)
                setup = await start_setup(
                    work / name, pool=workers, template=store_template, keys=keys, name=name
                )
                config: dict[str, Any] = {
                    "store": store_name,
                    "cases_in_store": workers + (history if store_template else 0),
                    "finished_requests_in_store": history if store_template else 0,
                    "concurrency": workers,
                }
                try:
                    skipped = budget.skip(refused_cost)
                    if skipped is None:
                        # The echo bot again, just before: the machine's load drifts (others use it).
                        beside = await echo_clicks(echo_process, keys, client, workers, clicks, seconds)
                        config["echo"] = beside.as_dict()
                        print(f"  echo bot:       {_line(config['echo'])}", flush=True)
                        refused = await refused_clicks(setup, client, workers, clicks, seconds)
                        budget.learn(store_name, "refused", refused)
                        config["refused"] = refused.as_dict()
                    else:
                        config["refused"] = skipped
                    print(f"  refused clicks: {_line(config['refused'])}", flush=True)
                    rounds_cost = budget.estimate(store_name, ("request", "approval"), rounds * workers)
                    skipped = budget.skip(rounds_cost)
                    if skipped is None:
                        done = [await request_and_approve(setup, client) for _ in range(rounds)]
                        request, approval, replies = round_figures(done)
                        budget.learn(store_name, "request", request)
                        budget.learn(store_name, "approval", approval)
                        config["request"], config["approval"] = request.as_dict(), approval.as_dict()
                        config["approval_to_reply_ms"] = [
                            None if s is None else round(s * 1000, 1) for s in replies
                        ]
                    else:
                        config["request"] = config["approval"] = skipped
                    print(f"  request clicks: {_line(config['request'])}", flush=True)
                    print(f"  approvals:      {_line(config['approval'])}", flush=True)
                finally:
                    left = await stop_setup(setup)
                print(
                    f"  peak RSS {left['peak_rss_mb']} MB, exit on SIGTERM {left['sigterm_exit_seconds']} s"
                )
                configs.append({**config, **left})
        agents = [
            await agents_refused(work, keys, client, echo_process, workers, settings)
            for workers in concurrencies
        ]
        echo_figures["peak_rss_mb"] = round(echo_process.peak_rss_mb(), 1)
    finally:
        echo_process.stop()
        await client.close()
    return {
        "machine_at_start": started,
        "machine_at_end": machine(),
        "history": history,
        "echo": echo_figures,
        "configs": configs,
        "agents": agents,
    }


async def agents_refused(
    work: Path,
    keys: ChannelKeys,
    client: Client,
    echo_process: Process,
    workers: int,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """Refused clicks on the Teams transport of the Microsoft 365 Agents SDK (``TEAMS_SDK=agents``),
    beside the echo bot just before: the same clicks as botbuilder's, a store of the clicked cases."""
    name = f"agents-small-c{workers}"
    clicks, seconds = settings["refused_clicks"][workers], settings["seconds_per_phase"]
    print(f"{name}: starting (a pool of {workers} case(s))…", flush=True)
    setup = await start_setup(
        work / name, pool=workers, template=None, keys=keys, name=name, extra_env={"TEAMS_SDK": "agents"}
    )
    config: dict[str, Any] = {"teams_sdk": "agents", "store": "small", "concurrency": workers}
    try:
        config["echo"] = (await echo_clicks(echo_process, keys, client, workers, clicks, seconds)).as_dict()
        print(f"  echo bot:       {_line(config['echo'])}", flush=True)
        config["refused"] = (await refused_clicks(setup, client, workers, clicks, seconds)).as_dict()
        print(f"  refused clicks: {_line(config['refused'])}", flush=True)
    finally:
        left = await stop_setup(setup)
    return {**config, **left}


def _skipped(
    store: str, workers: int, history: int, budget: Budget, refused_cost: float, rounds_cost: float
) -> dict[str, Any]:
    return {
        "store": store,
        "cases_in_store": workers + history,
        "finished_requests_in_store": history,
        "concurrency": workers,
        "refused": budget.skip(refused_cost) or {},
        "request": budget.skip(rounds_cost) or {},
        "approval": budget.skip(rounds_cost) or {},
    }


async def echo(
    process: Process, keys: ChannelKeys, client: Client, concurrencies: list[int], settings: dict[str, Any]
) -> dict[str, Any]:
    """The echo bot at every concurrency, the same clicks as the refused ones (authentication on)."""
    figures: dict[str, Any] = {}
    for workers in concurrencies:
        measured = await echo_clicks(
            process, keys, client, workers, settings["refused_clicks"][workers], settings["seconds_per_phase"]
        )
        figures[str(workers)] = measured.as_dict()
        print(f"echo bot at {workers}: {_line(measured.as_dict())}", flush=True)
    return figures


def _line(figures: dict[str, Any]) -> str:
    if "skipped" in figures:
        return f"skipped: {figures['skipped']}"
    return (
        f"{figures['clicks']} clicks ({figures['errors']} errors), p50 {figures['p50_ms']} ms, "
        f"p99 {figures['p99_ms']} ms, {figures['per_second']}/s, CPU {figures['cpu_ms_per_click']} ms/click"
    )


async def approvals(work: Path, keys: ChannelKeys, one_at_a_time: int, back_to_back: int) -> dict[str, Any]:
    """Approval → result in the thread, beside the time of the calls it makes."""
    pool = max(back_to_back, 1)
    print(f"approvals: {one_at_a_time} one at a time, {back_to_back} back to back…", flush=True)
    setup = await start_setup(work / "approvals", pool=pool, template=None, keys=keys, name="bot-approvals")
    client = Client()
    try:
        measured = await approval_latency(
            setup, client, one_at_a_time=one_at_a_time, back_to_back=back_to_back
        )
    finally:
        await client.close()
        left = await stop_setup(setup)
    result = {"machine": machine(), **summary(measured), **left}
    print(
        f"  approval → reply p50 {result['latency_p50_ms']} ms (floor {result['floor_p50_ms']} ms, "
        f"×{result['ratio_p50']}), p95 {result['latency_p95_ms']} ms (floor {result['floor_p95_ms']} ms, "
        f"×{result['ratio_p95']})",
        flush=True,
    )
    return result


async def smallest(work: Path) -> dict[str, Any]:
    """The quick mode's smallest configuration: one clicker on a one-case store, and the echo bot."""
    keys = ChannelKeys()
    keys.start()
    client = Client()
    try:
        echo_process = start_echo(keys, work / "echo.log")
        try:
            await echo_process.wait_healthy()
            baseline = await echo_clicks(echo_process, keys, client, 1, 5, 5.0)
        finally:
            echo_process.stop()
        setup = await start_setup(work / "bot", pool=1, template=None, keys=keys, name="bot")
        try:
            refused = await refused_clicks(setup, client, 1, 5, 5.0)
            request, approval, replies = round_figures([await request_and_approve(setup, client)])
        finally:
            left = await stop_setup(setup)
    finally:
        await client.close()
        keys.stop()
    return {
        "echo": baseline.as_dict(),
        "refused": refused.as_dict(),
        "request": request.as_dict(),
        "approval": approval.as_dict(),
        "replies": replies,
        **left,
    }


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="invokes,approvals,storm", help="which benchmarks, comma-separated")
    parser.add_argument("--concurrency", default="1,20,200")
    parser.add_argument("--history", type=int, default=10_000, help="closed cases (and finished requests)")
    parser.add_argument("--quick", action="store_true", default=quick())
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if os.environ.get("BENCH_STORM", "1") in ("0", "", "no", "false"):
        only.discard("storm")
    settings = plan(args.quick)
    identities, per_identity = settings["storm"]
    identities = int(os.environ.get("BENCH_STORM_IDENTITIES", identities))
    minutes = float(os.environ.get("BENCH_MINUTES", settings["minutes"]))
    # What the invokes may take: the whole budget but the storm's (bounded by Teams' 60 posts per
    # 30 s per channel, two runs) and the approvals' share.
    # Storm mode: the storm, its facts read, then "disable all": about 4 minutes a run at 1,000.
    campaign_identities, campaign_per_identity = settings["campaign"]
    later = (2 * (identities / 2 + 40 + campaign_identities / 4) if "storm" in only else 0) + (
        60 if "approvals" in only else 0
    )
    budget = Budget(max(minutes * 60 - later, 60))
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    keys = ChannelKeys()
    keys.start()
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as folder:
            work = Path(folder)
            if "invokes" in only:
                results = await invokes(work, keys, concurrencies, args.history, settings, budget)
                write_json("invokes.json", {**results, "budget_minutes": minutes})
            if "approvals" in only:
                write_json("approvals.json", await approvals(work, keys, *settings["approvals"]))
            if "storm" in only:
                await storm.main(
                    [
                        "--identities",
                        str(identities),
                        "--alerts-per-identity",
                        str(per_identity),
                        "--campaign-identities",
                        str(campaign_identities),
                        "--campaign-alerts-per-identity",
                        str(campaign_per_identity),
                    ]
                )
    finally:
        keys.stop()
    text = render(RESULTS, quick=args.quick, seconds=time.monotonic() - began)
    (RESULTS / "SUMMARY.md").write_text(text)
    print(text)
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
