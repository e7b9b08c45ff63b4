"""Bound ids: isolated per turn/job, only safe values, rendered as fields by the bot's formatter."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from bot.cli.logs import formatter, setup_logging
from bot.errors import GraphForbidden
from bot.log_context import bind_ids, fresh_ids, ids_bound

log = logging.getLogger("bot.test")


def render(record_message: str, fmt: str = "json", exc: BaseException | None = None) -> str:
    record = logging.LogRecord("bot.test", logging.WARNING, __file__, 1, record_message, (), None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    return formatter(fmt).format(record)  # type: ignore[arg-type]


class Worker:
    @fresh_ids(lambda self, job, case: {"job": job})
    async def run(self, job: str, case: str) -> str:
        bind_ids(case_id=case)
        return render(f"ran {job}")


async def test_a_jobs_ids_end_with_the_job() -> None:
    worker = Worker()
    bind_ids(activity_id="turn-1")

    first = json.loads(await worker.run("job-1", "case-1"))
    after = json.loads(render("after the job"))
    second = json.loads(await worker.run("job-2", "case-2"))

    assert (first["job"], first["case_id"], first["activity_id"]) == ("job-1", "case-1", "turn-1")
    assert "job" not in after and "case_id" not in after and after["activity_id"] == "turn-1"
    assert (second["job"], second["case_id"]) == ("job-2", "case-2")


async def test_concurrent_tasks_see_only_their_own_ids() -> None:
    worker = Worker()
    lines = await asyncio.gather(*(worker.run(f"job-{n}", f"case-{n}") for n in range(20)))

    for n, line in enumerate(lines):
        fields = json.loads(line)
        assert (fields["job"], fields["case_id"]) == (f"job-{n}", f"case-{n}")


@pytest.mark.parametrize(
    "value", ["", None, "x" * 257, "case\nFORGED level=error", "tab\there", ["ok", "bad\r"], object()]
)
async def test_unsafe_or_empty_ids_are_not_bound(value: object) -> None:
    @fresh_ids()
    async def turn() -> str:
        bind_ids(case_id=value)
        return render("line")

    assert "case_id" not in json.loads(await turn())


def test_ids_bound_for_a_block_only() -> None:
    with ids_bound(graph_request_id="r-1"):
        inside = json.loads(render("inside"))
    outside = json.loads(render("outside"))

    assert inside["graph_request_id"] == "r-1" and "graph_request_id" not in outside


def test_an_error_line_carries_the_graph_request_id_it_failed_with() -> None:
    error = GraphForbidden(
        "403 from Graph", status=403, request_id="5e1f-req", path="/users/x", method="PATCH"
    )

    fields = json.loads(render("could not disable", exc=error))

    assert fields["graph_request_id"] == "5e1f-req" and fields["graph_status"] == 403
    assert fields["level"] == "warning" and fields["logger"] == "bot.test"
    assert "GraphForbidden" in json.dumps(fields["exception"])


def test_text_lines_show_the_ids_as_key_value() -> None:
    with ids_bound(case_id="c-9", request_id="r-9"):
        line = render("request r-9 succeeded", fmt="text")

    assert "request r-9 succeeded" in line and "case_id=c-9" in line and "request_id=r-9" in line
    assert "\n" not in line


def test_setup_logging_writes_json_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quieted = {
        name: logging.getLogger(name).level
        for name in ("msal", "botbuilder", "botframework", "httpx", "aiohttp.access")
    }
    try:
        setup_logging("INFO", "json")
        with ids_bound(request_id="r-7"):
            log.info("request %s verified", "r-7")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, quiet in quieted.items():
            logging.getLogger(name).setLevel(quiet)

    (line,) = [entry for entry in capsys.readouterr().err.splitlines() if "verified" in entry]
    fields = json.loads(line)
    assert fields["event"] == "request r-7 verified" and fields["request_id"] == "r-7"
