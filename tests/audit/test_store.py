"""The audit trail as stored in SQLite, tampered with by real SQL, and checked by the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.domain.audit import AuditEvent, verify_chain
from bot.errors import StoreError
from bot.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ALEX = "aaaaaaaa-0000-4000-8000-000000000001"
KINDS = ["case.opened", "request.opened", "request.approved", "action.started", "action.succeeded"]


async def _append(store: SqliteStore, index: int, **overrides: Any) -> AuditEvent:
    arguments: dict[str, Any] = {
        "at": T0 + timedelta(minutes=index),
        "actor_id": ALEX,
        "actor_name": "Alex Wilber",
        "kind": KINDS[index % len(KINDS)],
        "case_id": "case-1",
        "request_id": "req-1",
        "identity": "adele.vance@contoso.com",
        "payload": {"reason": f"step {index}", "verified": index % 2 == 0},
        **overrides,
    }
    return await store.append_audit(**arguments)


def _make_trail(path: Path, count: int = 6) -> list[AuditEvent]:
    async def fill() -> list[AuditEvent]:
        store = SqliteStore(path)
        try:
            return [await _append(store, index) for index in range(count)]
        finally:
            await store.close()

    return asyncio.run(fill())


def _stored(path: Path) -> list[AuditEvent]:
    async def read() -> list[AuditEvent]:
        store = SqliteStore(path)
        try:
            return await store.list_audit()
        finally:
            await store.close()

    return asyncio.run(read())


def _sql(path: Path, statement: str, *params: Any) -> None:
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute(statement, params)
    finally:
        db.close()


def _row(path: Path, sequence: int) -> tuple[Any, ...]:
    db = sqlite3.connect(path)
    try:
        row: tuple[Any, ...] = db.execute(
            "SELECT at, actor_id, kind, case_id, request_id, identity, data, hash FROM audit_events "
            "WHERE sequence = ?",
            (sequence,),
        ).fetchone()
        return row
    finally:
        db.close()


def _verify_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", "--store-url", f"sqlite:///{path}"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "bot.db"
    _make_trail(path)
    return path


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    the_store = SqliteStore(tmp_path / "bot.db")
    yield the_store
    await the_store.close()


# -- appending and reading ----------------------------------------------------------------------


async def test_appended_events_chain_and_read_back_equal(store: SqliteStore) -> None:
    appended = [await _append(store, index) for index in range(5)]

    stored = await store.list_audit()

    assert stored == appended
    assert [e.sequence for e in stored] == [1, 2, 3, 4, 5]
    assert verify_chain(stored).ok
    assert (await store.verify_audit()).ok


async def test_concurrent_appends_make_one_gap_free_chain(store: SqliteStore) -> None:
    appended = await asyncio.gather(*(_append(store, index) for index in range(50)))

    stored = await store.list_audit()

    assert [e.sequence for e in stored] == list(range(1, 51))
    assert sorted(appended, key=lambda e: e.sequence) == stored
    assert verify_chain(stored).ok
    assert (await store.verify_audit()).ok


async def test_two_stores_on_one_file_append_in_turn(tmp_path: Path) -> None:
    # Two connections stand in for two processes: BEGIN IMMEDIATE serialises them in SQLite.
    first, second = SqliteStore(tmp_path / "bot.db"), SqliteStore(tmp_path / "bot.db")
    try:
        await asyncio.gather(*(_append(s, i) for i in range(20) for s in (first, second)))
        stored = await first.list_audit()
    finally:
        await first.close()
        await second.close()

    assert [e.sequence for e in stored] == list(range(1, 41))
    assert verify_chain(stored).ok


async def test_a_payload_that_is_not_json_is_refused_and_nothing_is_stored(store: SqliteStore) -> None:
    await _append(store, 0)

    with pytest.raises(ValueError, match=r"payload\['when'\]: a datetime is not JSON-serializable"):
        await _append(store, 1, payload={"when": T0})

    assert [e.sequence for e in await store.list_audit()] == [1]
    assert (await _append(store, 2)).sequence == 2


async def test_list_audit_filters_by_identity_and_case_and_keeps_the_newest(store: SqliteStore) -> None:
    await _append(store, 0, identity="Adele.Vance@contoso.com", case_id="case-1")
    await _append(store, 1, identity="lee.gu@contoso.com", case_id="case-2")
    await _append(store, 2, identity="adele.vance@contoso.com", case_id="case-1")
    await _append(store, 3, identity=None, case_id=None)
    await _append(store, 4, identity="adele.vance@contoso.com", case_id="case-3")

    adele = await store.list_audit(identity="ADELE.VANCE@contoso.com")

    assert [e.sequence for e in adele] == [1, 3, 5]
    assert {e.identity for e in adele} == {"adele.vance@contoso.com"}

    async def sequences(**filters: Any) -> list[int]:
        return [e.sequence for e in await store.list_audit(**filters)]

    assert await sequences(case_id="case-1") == [1, 3]
    assert await sequences(identity="adele.vance@contoso.com", case_id="case-3") == [5]
    assert await sequences(identity="adele.vance@contoso.com", limit=2) == [3, 5]
    assert await sequences(limit=10) == [1, 2, 3, 4, 5]
    assert await sequences(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        await store.list_audit(limit=-1)


def test_nothing_in_the_bot_updates_or_deletes_audit_rows() -> None:
    offenders = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "bot").rglob("*.py")
        for statement in ("UPDATE audit_events", "DELETE FROM audit_events", "REPLACE INTO audit_events")
        if statement.lower() in path.read_text().lower()
    ]
    assert offenders == []


# -- tampering: verify_chain and the CLI name the first broken event ----------------------------


def _edit_payload(path: Path) -> None:
    data = json.loads(_row(path, 3)[6])
    data["payload"]["reason"] = "nothing to see here"
    _sql(path, "UPDATE audit_events SET data = ? WHERE sequence = 3", json.dumps(data))


def _delete(path: Path) -> None:
    _sql(path, "DELETE FROM audit_events WHERE sequence = 3")


def _swap_data(path: Path) -> None:
    third, fourth = _row(path, 3)[6], _row(path, 4)[6]
    _sql(path, "UPDATE audit_events SET data = ? WHERE sequence = 3", fourth)
    _sql(path, "UPDATE audit_events SET data = ? WHERE sequence = 4", third)


def _swap_rows(path: Path) -> None:
    third, fourth = _row(path, 3), _row(path, 4)
    update = (
        "UPDATE audit_events SET at = ?, actor_id = ?, kind = ?, case_id = ?, request_id = ?, identity = ?, "
        "data = ?, hash = ? WHERE sequence = ?"
    )
    _sql(path, update, *fourth, 3)
    _sql(path, update, *third, 4)


REORDERED = "event 4 follows event 2: out of order, event 3 is stored after it (reordered)"


@pytest.mark.parametrize(
    ("tamper", "first_broken", "problem"),
    [
        (_edit_payload, 3, "event 3: its hash does not match its content (modified)"),
        (_delete, 4, "event 4 follows event 2: sequence gap (deleted)"),
        (_swap_data, 4, REORDERED),
        (_swap_rows, 4, REORDERED),
    ],
    ids=["modified", "deleted", "reordered-data", "reordered-rows"],
)
def test_tampering_is_found_at_the_first_broken_event(
    trail: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Path], None],
    first_broken: int,
    problem: str,
) -> None:
    tamper(trail)

    check = verify_chain(_stored(trail))
    code, output = _verify_cli(trail, capsys)

    assert (check.ok, check.first_broken, check.problem) == (False, first_broken, problem)
    assert code == 1
    assert output == f"audit chain broken: {problem}\n"


def test_an_edited_query_column_is_found_by_the_cli(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The chain lives in `data`, but `history` queries the identity column: hiding an event
    # there must not pass verification.
    _sql(trail, "UPDATE audit_events SET identity = 'someone.else@contoso.com' WHERE sequence = 3")

    code, output = _verify_cli(trail, capsys)

    assert code == 1
    assert "event 3: its identity column does not match its data (modified)" in output


def test_unreadable_data_is_found_by_the_cli_and_refused_by_the_store(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(trail, "UPDATE audit_events SET data = '{\"sequence\": 3}' WHERE sequence = 3")

    code, output = _verify_cli(trail, capsys)

    assert code == 1
    assert "event 3: its stored data is not a readable audit event (modified)" in output
    with pytest.raises(StoreError, match="audit event 3 cannot be read back"):
        _stored(trail)


def test_the_earliest_break_wins_over_a_later_unreadable_row(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(trail, "UPDATE audit_events SET data = 'garbage' WHERE sequence = 5")
    data = json.loads(_row(trail, 2)[6])
    data["actor_name"] = "Someone Else"
    _sql(trail, "UPDATE audit_events SET data = ? WHERE sequence = 2", json.dumps(data))

    code, output = _verify_cli(trail, capsys)

    assert code == 1
    assert output.startswith("audit chain broken: event 2: its hash does not match its content (modified)")


def test_a_renumbered_row_is_found_by_the_cli(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(trail, "UPDATE audit_events SET sequence = 100 WHERE sequence = 6")

    code, output = _verify_cli(trail, capsys)

    assert code == 1
    assert "event 6 is stored under sequence 100 (moved)" in output


# -- the CLI ------------------------------------------------------------------------------------


def test_verify_reports_an_intact_chain(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = _verify_cli(trail, capsys)

    assert code == 0
    assert output == "audit chain intact: 6 events\n"


def test_verify_reads_store_url_from_the_environment(
    trail: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORE_URL", f"sqlite:///{trail}")

    assert main(["audit", "verify"]) == 0
    assert "audit chain intact: 6 events" in capsys.readouterr().out


def test_verify_never_creates_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORE_URL", raising=False)
    monkeypatch.chdir(tmp_path)

    code = main(["audit", "verify"])  # the bot's default: sqlite:///data/remediation-bot.db

    assert code == 2
    assert "no database at data/remediation-bot.db" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    missing = tmp_path / "elsewhere" / "bot.db"
    assert main(["audit", "verify", "--store-url", f"sqlite:///{missing}"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["verify", "export"])
def test_a_store_that_cannot_be_audited_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_text("these are not the rows you are looking for\n" * 100)

    assert main(["audit", command, "--store-url", "mysql://db/bot"]) == 2
    assert "STORE_URL" in capsys.readouterr().err
    assert (
        main(["audit", command, "--store-url", "postgresql://auditor:hunter2@unreachable.invalid/bot"]) == 2
    )
    unreachable = capsys.readouterr().err
    assert "connecting to postgresql://auditor:***@unreachable.invalid/bot failed" in unreachable
    assert "hunter2" not in unreachable
    assert main(["audit", command, "--store-url", f"sqlite:///{not_a_database}"]) == 2
    assert "cannot open" in capsys.readouterr().err


def _check_export(text: str, expected: list[AuditEvent]) -> None:
    lines = text.splitlines()
    assert len(lines) == len(expected)
    for line, event in zip(lines, expected, strict=True):
        record = json.loads(line)
        assert set(record) == set(AuditEvent.model_fields)
        assert AuditEvent.model_validate_json(line) == event
        # An auditor can recompute every hash from the export alone.
        stated = record.pop("hash")
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(canonical.encode()).hexdigest() == stated


def test_export_writes_json_lines_to_a_file(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "audit.jsonl"

    code = main(["audit", "export", "--store-url", f"sqlite:///{trail}", "--out", str(out)])

    assert code == 0
    assert capsys.readouterr().out == ""
    _check_export(out.read_text(encoding="utf-8"), _stored(trail))


def test_export_writes_json_lines_to_stdout(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["audit", "export", "--store-url", f"sqlite:///{trail}", "--out", "-"])

    assert code == 0
    _check_export(capsys.readouterr().out, _stored(trail))


def test_export_of_a_tampered_trail_keeps_what_is_stored(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Export is evidence, not a verdict: a modified event is exported as it stands.
    _edit_payload(trail)

    assert main(["audit", "export", "--store-url", f"sqlite:///{trail}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[2])["payload"]["reason"] == "nothing to see here"
