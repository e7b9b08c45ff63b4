"""The benchmark's smallest configuration runs (about ten seconds): one clicker, one case, the echo bot.

It proves the instrument works end to end: the bot as its own process with authentication on
accepts the benchmark's channel tokens, answers every click with a card, executes the approval
and replies in the thread; the echo bot answers the same clicks; CPU and memory are read.
"""

from __future__ import annotations

from pathlib import Path

from tests.bench.run import smallest


async def test_the_smallest_benchmark_measures_the_bot_beside_the_echo_bot(tmp_path: Path) -> None:
    figures = await smallest(tmp_path)
    for part, clicks in (("echo", 5), ("refused", 5), ("request", 1), ("approval", 1)):
        measured = figures[part]
        assert (measured["clicks"], measured["errors"]) == (clicks, 0), part
        assert measured["p50_ms"] > 0 and measured["per_second"] > 0, part
        assert measured["cpu_ms_per_click"] >= 0, part
    assert figures["approval"]["executed_with_reply"] == 1
    assert figures["replies"][0] is not None
    assert figures["peak_rss_mb"] > 0
    assert figures["graph_contract_violations"] == 0
