"""``results/SUMMARY.md``: the figures of results/*.json as tables, each beside its baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def render(results: Path, *, quick: bool = False, seconds: float | None = None) -> str:
    """The summary of whatever results/*.json holds."""
    lines = ["# Benchmark summary", ""]
    took = f" in {seconds / 60:.1f} min" if seconds is not None else ""
    lines.append(
        f"Run{took}{' (quick mode: fewer clicks, a smaller storm)' if quick else ''}. Everything on one "
        "machine: the bot as its own process with authentication on, the sandbox tenant, the recording "
        "connector and the client. Other work on the machine shows in the figures (load average below)."
    )
    lines.append("")
    invokes = _load(results / "invokes.json")
    if invokes:
        lines += _invokes(invokes)
    approvals = _load(results / "approvals.json")
    if approvals:
        lines += _approvals(approvals)
    storm = _load(results / "storm.json")
    if storm:
        lines += _storm(storm)
    lines += _targets(invokes, approvals, storm)
    return "\n".join(lines) + "\n"


def _load(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _fmt(value: Any, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}{suffix}"
    return f"{value}{suffix}"


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def _config(invokes: dict[str, Any], store: str, concurrency: int) -> dict[str, Any] | None:
    for config in invokes.get("configs", []):
        if config["store"] == store and config["concurrency"] == concurrency:
            found: dict[str, Any] = config
            return found
    return None


def _invokes(invokes: dict[str, Any]) -> list[str]:
    start = invokes.get("machine_at_start", {})
    end = invokes.get("machine_at_end", {})
    history = invokes.get("history", 0)
    echo = invokes.get("echo", {})
    lines = [
        "## Card clicks (invokes)",
        "",
        "Store \u201csmall\u201d holds only the cases clicked on (as many as clickers); "
        f"\u201c{history}\u201d holds those plus {history:,} closed cases and {history:,} finished "
        "requests. Load average "
        f"{start.get('load_average')} at start, {end.get('load_average')} at end ({start.get('cpus')} CPUs).",
        "",
        "\u201cvs echo\u201d divides by the echo bot's clicks per second measured just before that "
        "configuration, at the same concurrency (the echo-bot rows below are from the start of the run). "
        "\u201cbenchmark CPU\u201d is the benchmark process's own (client, sandbox tenant, connector), "
        "which shares the two cores with the bot.",
        "",
        "| click | concurrency | store | p50 ms | p95 ms | p99 ms | clicks/s | vs echo | bot CPU ms/click "
        "| errors | benchmark CPU ms/click |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("refused", "request", "approval"):
        for config in invokes.get("configs", []):
            figures = config[kind]
            baseline = config.get("echo") or echo.get(str(config["concurrency"]), {})
            if "skipped" in figures:
                minutes = figures.get("estimated_seconds", 0) / 60
                lines.append(
                    f"| {kind} | {config['concurrency']} | {config['store']} | skipped: over the time "
                    f"budget (≈{minutes:.0f} min of bot CPU) | | | | | | | |"
                )
                continue
            lines.append(
                f"| {kind} | {config['concurrency']} | {config['store']} | {_fmt(figures['p50_ms'])} | "
                f"{_fmt(figures['p95_ms'])} | {_fmt(figures['p99_ms'])} | {_fmt(figures['per_second'])} | "
                f"{_ratio(figures['per_second'], baseline.get('per_second'))} | "
                f"{_fmt(figures['cpu_ms_per_click'])} | {figures['errors']}/{figures['clicks']} | "
                f"{_fmt(figures.get('benchmark_cpu_ms_per_click'))} |"
            )
    for config in invokes.get("agents", []):
        # The same refused clicks on the Teams transport of the Microsoft 365 Agents SDK.
        figures, baseline = config["refused"], config.get("echo", {})
        lines.append(
            f"| refused, TEAMS_SDK=agents | {config['concurrency']} | {config['store']} | "
            f"{_fmt(figures['p50_ms'])} | {_fmt(figures['p95_ms'])} | {_fmt(figures['p99_ms'])} | "
            f"{_fmt(figures['per_second'])} | {_ratio(figures['per_second'], baseline.get('per_second'))} | "
            f"{_fmt(figures['cpu_ms_per_click'])} | {figures['errors']}/{figures['clicks']} | "
            f"{_fmt(figures.get('benchmark_cpu_ms_per_click'))} |"
        )
    for workers, figures in echo.items():
        if isinstance(figures, dict):
            lines.append(
                f"| echo bot | {workers} | – | {_fmt(figures['p50_ms'])} | {_fmt(figures['p95_ms'])} | "
                f"{_fmt(figures['p99_ms'])} | {_fmt(figures['per_second'])} | 1.00× | "
                f"{_fmt(figures['cpu_ms_per_click'])} | {figures['errors']}/{figures['clicks']} | "
                f"{_fmt(figures.get('benchmark_cpu_ms_per_click'))} |"
            )
    lines += [
        "",
        f"| with history ({history:,}) ÷ small store | concurrency | p99 | CPU per click | clicks/s |",
        "|---|---|---|---|---|",
    ]
    for kind in ("refused", "request", "approval"):
        for config in invokes.get("configs", []):
            if config["store"] == "small":
                continue
            small = _config(invokes, "small", config["concurrency"])
            if small is None:
                continue
            big, little = config[kind], small[kind]
            lines.append(
                f"| {kind} | {config['concurrency']} | {_ratio(big.get('p99_ms'), little.get('p99_ms'))} | "
                f"{_ratio(big.get('cpu_ms_per_click'), little.get('cpu_ms_per_click'))} | "
                f"{_ratio(big.get('per_second'), little.get('per_second'))} |"
            )
    lines += ["", "| bot process | peak RSS MB | exit after SIGTERM s |", "|---|---|---|"]
    for config in invokes.get("configs", []):
        lines.append(
            f"| store {config['store']}, {config['concurrency']} clicker(s) | "
            f"{_fmt(config.get('peak_rss_mb'))} | {_fmt(config.get('sigterm_exit_seconds'))} |"
        )
    if "peak_rss_mb" in echo:
        lines.append(f"| echo bot | {echo['peak_rss_mb']} | – |")
    lines.append("")
    return lines


def _approvals(approvals: dict[str, Any]) -> list[str]:
    return [
        "## Approval → executed → thread reply",
        "",
        f"{approvals['approvals']} approvals ({approvals['back_to_back']} back to back on different "
        f"identities), {approvals['without_reply']} without a reply. The floor is the time the sandbox "
        "tenant and the recording connector spent on the Graph and Bot Connector calls each approval made.",
        "",
        "| | latency ms | floor ms | ratio |",
        "|---|---|---|---|",
        f"| p50 | {_fmt(approvals['latency_p50_ms'])} | {_fmt(approvals['floor_p50_ms'])} | "
        f"{_fmt(approvals['ratio_p50'], '×')} |",
        f"| p95 | {_fmt(approvals['latency_p95_ms'])} | {_fmt(approvals['floor_p95_ms'])} | "
        f"{_fmt(approvals['ratio_p95'], '×')} |",
        "",
    ]


def _storm(storm: dict[str, Any]) -> list[str]:
    runs = storm.get("runs", [])
    if not runs:
        return []
    keys = [k for k in runs[0] if k != "mode"]
    lines = [
        "## Alert storm",
        "",
        "Teams' documented limits enforced by the recording connector, Graph's documented throttling by "
        "the sandbox. `lost_alerts`: alerts whose id is not on their identity's card as the channel last "
        "received it.",
        "",
        "| | " + " | ".join(r["mode"] for r in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    lines += [f"| {k} | " + " | ".join(_fmt(r.get(k)) for r in runs) + " |" for k in keys]
    lines.append("")
    return lines


def _targets(
    invokes: dict[str, Any] | None, approvals: dict[str, Any] | None, storm: dict[str, Any] | None
) -> list[str]:
    checks: list[tuple[str, str, bool | None]] = []
    if invokes:
        history = str(invokes.get("history"))
        small, big = _config(invokes, "small", 1), _config(invokes, history, 1)
        if small and big:
            p99 = _quotient(big["refused"].get("p99_ms"), small["refused"].get("p99_ms"))
            cpu = _quotient(big["refused"].get("cpu_ms_per_click"), small["refused"].get("cpu_ms_per_click"))
            checks.append(("refused-click p99, history ÷ small ≤ 1.2", _fmt(p99, "×"), _at_most(p99, 1.2)))
            checks.append(("refused-click CPU, history ÷ small ≤ 1.2", _fmt(cpu, "×"), _at_most(cpu, 1.2)))
        for store in ("small", history):
            config = _config(invokes, store, 20)
            echo = (config or {}).get("echo", invokes.get("echo", {}).get("20", {})).get("per_second")
            if config and echo:
                refused = _quotient(config["refused"].get("per_second"), echo)
                request = _quotient(config["request"].get("per_second"), echo)
                checks.append(
                    (
                        f"refused clicks/s at 20 ≥ 0.8× echo (store {store})",
                        _fmt(refused, "×"),
                        _at_least(refused, 0.8),
                    )
                )
                checks.append(
                    (
                        f"request clicks/s at 20 ≥ 0.5× echo (store {store})",
                        _fmt(request, "×"),
                        _at_least(request, 0.5),
                    )
                )
        rss = max(
            (
                c["peak_rss_mb"]
                for c in invokes.get("configs", [])
                if c["store"] == history and "peak_rss_mb" in c
            ),
            default=None,
        )
        if rss is not None:
            checks.append((f"peak RSS with {history} cases ≤ 150 MB", _fmt(rss, " MB"), rss <= 150))
    if approvals:
        for p in ("p50", "p95"):
            ratio = approvals.get(f"ratio_{p}")
            checks.append((f"approval → reply {p} ≤ 1.5× floor", _fmt(ratio, "×"), _at_most(ratio, 1.5)))
    if storm:
        for run in storm.get("runs", []):
            checks.append(
                (f"storm ({run['mode']}) lost_alerts = 0", _fmt(run["lost_alerts"]), run["lost_alerts"] == 0)
            )
    if not checks:
        return []
    lines = [
        "## Targets (issue: clicks that cost the same after a year of cases)",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    for name, value, met in checks:
        lines.append(f"| {name} | {value} | {'met' if met else 'missed' if met is False else '–'} |")
    lines.append("")
    return lines


def _quotient(a: Any, b: Any) -> float | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return None
    return round(a / b, 2)


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit
