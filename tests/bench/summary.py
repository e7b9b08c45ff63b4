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
        lines += _campaign(storm)
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
        return f"{value + 0.0:g}{suffix}"  # + 0.0: -0.0 reads as 0
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


# (label, one-card figure, storm-mode figure, target) per row of the storm-mode table.
_CAMPAIGN_ROWS: tuple[tuple[str, str | None, str | None, str], ...] = (
    ("identities × alerts", "identities", "identities", "1,000 × 10"),
    ("top-level channel posts during the storm", "channel_posts", "top_level_posts", "≤ 3"),
    (
        "s from the alerts stored to the last card / the campaign card",
        "last_card_seconds_after_stored",
        "card_seconds_after_stored",
        "≤ 10",
    ),
    (
        "s from the storm's start to the last card / the campaign card",
        "seconds_to_last_card",
        "seconds_to_card",
        "–",
    ),
    ("lost alerts (counted from the channel)", "lost_alerts", "lost_alerts", "0"),
    ("Graph requests per alert during the storm", "graph_calls_per_alert", "graph_calls_per_alert", "–"),
    ("Teams 429s / Graph 429s", "throttled", "throttled", "–"),
    ("peak RSS MB", "peak_rss_mb", "peak_rss_mb", "≤ 250"),
    ("disable all: identities contained (protected left out)", None, "contained_identities", "all"),
    (
        "disable all: s from the second approval to all disabled and verified",
        None,
        "disable_all_seconds",
        "–",
    ),
    ("disable all: floor s (Graph's limits; sandbox time)", None, "floor", "–"),
    ("disable all: measured ÷ floor", None, "disable_ratio_to_floor", "≤ 1.3×"),
    (
        "disable all: Graph HTTP requests per identity contained",
        None,
        "graph_requests_per_identity",
        "≤ 0.15",
    ),
)


def _figure(run: dict[str, Any] | None, key: str | None) -> str:
    if run is None or key is None:
        return "–"
    if key == "identities":
        return f"{run.get('identities')} × {run.get('alerts', 0) // max(run.get('identities') or 1, 1)}"
    if key == "throttled":
        return f"{_fmt(run.get('connector_429s'))} / {_fmt(run.get('graph_429s'))}"
    if key == "seconds_to_card":
        stored, card = run.get("seconds_to_store"), run.get("card_seconds_after_stored")
        return (
            _fmt(round(stored + card, 1))
            if isinstance(stored, int | float) and isinstance(card, int | float)
            else "–"
        )
    if key == "floor":
        return (
            f"{_fmt(run.get('floor_seconds'))} ({_fmt(run.get('floor_limits_seconds'))}; "
            f"{_fmt(run.get('floor_service_seconds'))})"
        )
    if key == "contained_identities":
        verified = run.get("verified_identities")
        kept = "protected one left enabled" if run.get("protected_left_enabled") else "PROTECTED ONE DISABLED"
        return f"{verified} verified of {run.get(key)}; {kept}"
    return _fmt(run.get(key))


def _campaign(storm: dict[str, Any]) -> list[str]:
    campaigns = storm.get("campaign") or []
    if not campaigns:
        return []
    baseline = {r["mode"]: r for r in storm.get("runs", [])}
    header = (
        "| | "
        + " | ".join(f"{c['mode']}: one card per identity | {c['mode']}: storm mode" for c in campaigns)
        + " | target |"
    )
    lines = [
        "## Alert storm in storm mode, beside one card per identity (same run)",
        "",
        "Storm mode with the default rule (more than 20 identities in 10 minutes); then \u201cdisable "
        "all\u201d asked for and approved by two approvers through real card clicks. Definitions in "
        "tests/bench/storm.py. Reachable alerts: the identity listed on the campaign card's pages "
        "(paged through) and the alert id on that identity's card (Show card). The floor is the larger "
        "of what Graph's identity-and-access quotas allow and the sandbox's own time for the batches "
        "needed (tests/bench/campaign.py). "
        f"Load average {storm.get('load_average_at_start')} at start, "
        + ", ".join(f"{c['mode']} {c.get('load_average_after')}" for c in campaigns)
        + f" after each storm-mode run ({storm.get('cpus')} CPUs).",
        "",
        header,
        "|---|" + "---|---|" * len(campaigns) + "---|",
    ]
    for label, one, many, target in _CAMPAIGN_ROWS:
        cells = []
        for run in campaigns:
            cells += [_figure(baseline.get(run["mode"]), one), _figure(run, many)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
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
        for run in storm.get("campaign") or []:
            mode = run["mode"]
            card = run.get("card_seconds_after_stored")
            ratio = run.get("disable_ratio_to_floor")
            per = run.get("graph_requests_per_identity")
            rss = run.get("peak_rss_mb")
            checks += [
                (
                    f"storm mode ({mode}) campaign card ≤ 10 s after stored",
                    _fmt(card, " s"),
                    _at_most(card, 10),
                ),
                (
                    f"storm mode ({mode}) top-level posts ≤ 3",
                    _fmt(run.get("top_level_posts")),
                    _at_most(run.get("top_level_posts"), 3),
                ),
                (
                    f"storm mode ({mode}) lost_alerts = 0",
                    _fmt(run.get("lost_alerts")),
                    run.get("lost_alerts") == 0,
                ),
                (
                    f"storm mode ({mode}) disable all, every identity verified",
                    f"{_fmt(run.get('verified_identities'))} of {_fmt(run.get('contained_identities'))}",
                    bool(run.get("disable_all_finished")) and bool(run.get("protected_left_enabled")),
                ),
                (f"storm mode ({mode}) disable all ≤ 1.3× floor", _fmt(ratio, "×"), _at_most(ratio, 1.3)),
                (f"storm mode ({mode}) Graph requests per identity ≤ 0.15", _fmt(per), _at_most(per, 0.15)),
                (f"storm mode ({mode}) peak RSS ≤ 250 MB", _fmt(rss, " MB"), _at_most(rss, 250)),
            ]
    if not checks:
        return []
    lines = [
        "## Targets (issues: clicks that cost the same after a year of cases; storm mode)",
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


def _at_most(value: Any, limit: float) -> bool | None:
    return value <= limit if isinstance(value, int | float) else None


def _at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit
