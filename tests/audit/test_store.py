"""The audit trail as stored in SQLite, tampered with by real SQL, and checked by the CLI.

The trail is keyed (``AUDIT_HMAC_KEY`` in the CLI's environment, the store's key when it
appends) unless a test says it is one from before the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.cli.main import main
from bot.domain.audit import AuditEvent, AuditKey, verify_chain
from bot.errors import StoreError
from bot.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ALEX = "aaaaaaaa-0000-4000-8000-000000000001"
KEY_SECRET = "the audit key from Key Vault - 32+ characters long"
KEY = AuditKey.from_secret(KEY_SECRET)
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


def _make_trail(path: Path, count: int = 6, key: AuditKey | None = KEY) -> list[AuditEvent]:
    async def fill() -> list[AuditEvent]:
        store = SqliteStore(path, audit_key=key)
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


def _verify_cli(path: Path, capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str]:
    code = main(["audit", "verify", "--store-url", f"sqlite:///{path}", *options])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(autouse=True)
def audit_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The auditor's environment: the key, as the bot has it; no earlier keys, no sandbox."""
    monkeypatch.setenv("AUDIT_HMAC_KEY", KEY_SECRET)
    monkeypatch.delenv("AUDIT_HMAC_PREVIOUS_KEYS", raising=False)
    monkeypatch.delenv("SANDBOX_MODE", raising=False)


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "bot.db"
    _make_trail(path)
    return path


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    the_store = SqliteStore(tmp_path / "bot.db", audit_key=KEY)
    yield the_store
    await the_store.close()


# -- appending and reading ----------------------------------------------------------------------


async def test_appended_events_chain_and_read_back_equal(store: SqliteStore) -> None:
    appended = [await _append(store, index) for index in range(5)]

    stored = await store.list_audit()

    assert stored == appended
    assert [e.sequence for e in stored] == [1, 2, 3, 4, 5]
    assert {e.key_id for e in stored} == {KEY.key_id}
    assert verify_chain(stored, [KEY]).ok
    assert (await store.verify_audit()).ok


async def test_concurrent_appends_make_one_gap_free_chain(store: SqliteStore) -> None:
    appended = await asyncio.gather(*(_append(store, index) for index in range(50)))

    stored = await store.list_audit()

    assert [e.sequence for e in stored] == list(range(1, 51))
    assert sorted(appended, key=lambda e: e.sequence) == stored
    assert verify_chain(stored, [KEY]).ok
    assert (await store.verify_audit()).ok


async def test_two_stores_on_one_file_append_in_turn(tmp_path: Path) -> None:
    # Two connections stand in for two processes: BEGIN IMMEDIATE serialises them in SQLite.
    first, second = (
        SqliteStore(tmp_path / "bot.db", audit_key=KEY),
        SqliteStore(tmp_path / "bot.db", audit_key=KEY),
    )
    try:
        await asyncio.gather(*(_append(s, i) for i in range(20) for s in (first, second)))
        stored = await first.list_audit()
    finally:
        await first.close()
        await second.close()

    assert [e.sequence for e in stored] == list(range(1, 41))
    assert verify_chain(stored, [KEY]).ok


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
    ("tamper", "first_broken", "problem", "exit_code"),
    [
        (_edit_payload, 3, "event 3: its hash does not match its content (modified)", 1),
        (_delete, 4, "event 4 follows event 2: sequence gap (deleted)", 3),
        (_swap_data, 4, REORDERED, 4),
        (_swap_rows, 4, REORDERED, 4),
    ],
    ids=["modified", "deleted", "reordered-data", "reordered-rows"],
)
def test_tampering_is_found_at_the_first_broken_event(
    trail: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Path], None],
    first_broken: int,
    problem: str,
    exit_code: int,
) -> None:
    tamper(trail)

    check = verify_chain(_stored(trail), [KEY])
    code, output = _verify_cli(trail, capsys)

    assert (check.ok, check.first_broken, check.problem) == (False, first_broken, problem)
    # Each kind of break has its own exit code (modified 1, deleted 3, reordered 4).
    assert code == exit_code
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

    assert code == 4  # reordered
    assert "event 6 is stored under sequence 100 (moved)" in output


# -- the CLI ------------------------------------------------------------------------------------


NO_CHECKPOINT_NOTE = (
    "note: no checkpoint was given, so newest events cut off, or a rewrite by someone holding the key, "
    "cannot be detected (give the thread's 'Audit checkpoint' lines with --checkpoints)\n"
)


def test_verify_reports_an_intact_chain(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = _verify_cli(trail, capsys)

    assert code == 0
    # The verdict, then what it cannot tell without a checkpoint.
    assert output == "audit chain intact: 6 events\n" + NO_CHECKPOINT_NOTE


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
        # An event from before the key has no key_id: its line is exactly what it always was.
        fields = set(AuditEvent.model_fields) - ({"key_id"} if event.key_id is None else set())
        assert set(record) == fields
        assert AuditEvent.model_validate_json(line) == event
        # An auditor can recompute every hash from the export alone: with the key (hmac) when
        # the event names one, with hashlib alone when it does not.
        stated = record.pop("hash")
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if event.key_id is None:
            assert hashlib.sha256(canonical).hexdigest() == stated
        else:
            assert record["key_id"] == KEY.key_id
            assert hmac.new(KEY_SECRET.encode(), canonical, hashlib.sha256).hexdigest() == stated


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


def test_an_export_of_a_trail_from_before_the_key_is_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "old.db"
    _make_trail(path, 3, key=None)

    assert main(["audit", "export", "--store-url", f"sqlite:///{path}"]) == 0
    _check_export(capsys.readouterr().out, _stored(path))


# -- the keyed trail: how an unkeyed one continues, rotation, fail closed ------------------------

OTHER_SECRET = "a different key than the bot's - also 32+ characters"
NEW_SECRET = "the audit key after a rotation, 32 characters plus"


def _append_with(path: Path, key: AuditKey | None, count: int) -> list[AuditEvent]:
    async def fill() -> list[AuditEvent]:
        store = SqliteStore(path, audit_key=key)
        try:
            return [await _append(store, 100 + index) for index in range(count)]
        finally:
            await store.close()

    return asyncio.run(fill())


def test_a_trail_from_before_the_key_continues_keyed_and_verify_says_what_is_not_keyed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bot.db"
    _make_trail(path, 3, key=None)  # written by an older version, before AUDIT_HMAC_KEY existed

    _append_with(path, KEY, 2)

    stored = _stored(path)
    assert [(e.kind, e.key_id) for e in stored[3:]] == [
        ("audit.key_changed", KEY.key_id),
        (KINDS[100 % len(KINDS)], KEY.key_id),
        (KINDS[101 % len(KINDS)], KEY.key_id),
    ]
    code, output = _verify_cli(path, capsys)
    assert code == 0
    assert output.startswith(
        "audit chain intact: 6 events\n"
        "note: 3 events from before an audit key was configured (plain SHA-256): "
        "anyone with the database could have rewritten those\n"
    )


def test_a_store_without_the_key_refuses_to_append_to_a_keyed_trail(trail: Path) -> None:
    with pytest.raises(StoreError, match=r"keyed \(its last event uses key k-.*set AUDIT_HMAC_KEY"):
        _append_with(trail, None, 1)

    assert len(_stored(trail)) == 6


def test_after_a_rotation_verify_needs_the_earlier_key_too(
    trail: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    new_key = AuditKey.from_secret(NEW_SECRET)
    _append_with(trail, new_key, 1)
    monkeypatch.setenv("AUDIT_HMAC_KEY", NEW_SECRET)

    code, output = _verify_cli(trail, capsys)
    assert code == 2
    assert output == (
        f"audit chain not verified: event 1 is keyed with key {KEY.key_id}, which was not given\n"
        f"keys given: {new_key.key_id} (AUDIT_HMAC_KEY, AUDIT_HMAC_PREVIOUS_KEYS)\n"
    )

    monkeypatch.setenv("AUDIT_HMAC_PREVIOUS_KEYS", f"{OTHER_SECRET},{KEY_SECRET}")
    code, output = _verify_cli(trail, capsys)
    assert output.startswith("audit chain intact: 8 events\n")
    assert code == 0  # 6 + the key change + 1


def test_verify_without_any_key_says_so(
    trail: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUDIT_HMAC_KEY")

    code, output = _verify_cli(trail, capsys)

    assert code == 2
    assert output == (
        f"audit chain not verified: event 1 is keyed with key {KEY.key_id}, which was not given\n"
        "no key was given: set AUDIT_HMAC_KEY "
        "(and AUDIT_HMAC_PREVIOUS_KEYS for keys used before a rotation)\n"
    )


# -- checkpoints: each kind of tampering named, with its exit code --------------------------------


def _checkpoint_line(path: Path, capsys: pytest.CaptureFixture[str], *options: str) -> str:
    assert main(["audit", "checkpoint", "--store-url", f"sqlite:///{path}", *options]) == 0
    return capsys.readouterr().out.strip()


def _rows(path: Path) -> list[AuditEvent]:
    db = sqlite3.connect(path)
    try:
        return [AuditEvent.model_validate_json(row[0]) for row in db.execute("SELECT data FROM audit_events")]
    finally:
        db.close()


def _rewrite(path: Path, events: list[AuditEvent]) -> None:
    for event in events:
        _sql(
            path,
            "UPDATE audit_events SET data = ?, hash = ?, kind = ?, identity = ? WHERE sequence = ?",
            event.to_json(),
            event.hash,
            event.kind,
            event.identity,
            event.sequence,
        )


def _edit_and_recompute(path: Path, key: AuditKey | None) -> None:
    """Edit event 3 and recompute every later hash (re-linking them): with ``key``, or without
    one (plain SHA-256) as someone who has the database but not the key would."""
    from bot.domain.audit import event_hash

    events = _rows(path)
    events[2] = events[2].model_copy(update={"payload": {"reason": "nothing to see here"}})
    for index in range(2, len(events)):
        relinked = events[index].model_copy(update={"previous_hash": events[index - 1].hash})
        events[index] = relinked.model_copy(update={"hash": event_hash(relinked, key)})
    _rewrite(path, events[2:])


def _truncate_newest(path: Path) -> None:
    _sql(path, "DELETE FROM audit_events WHERE sequence > 4")


def _delete_all(path: Path) -> None:
    _sql(path, "DELETE FROM audit_events")


def _recompute_without_the_key(path: Path) -> None:
    _edit_and_recompute(path, None)


def _recompute_with_the_key(path: Path) -> None:
    _edit_and_recompute(path, KEY)


@pytest.mark.parametrize(
    ("tamper", "exit_code", "problem"),
    [
        (
            _truncate_newest,
            5,
            "the trail ends at event 4, but checkpoint #6 was published: "
            "the newest events (at least events 5 to 6) were cut off (truncated)",
        ),
        (
            _delete_all,
            3,
            "the trail holds no events, but checkpoint #6 was published: every event was deleted",
        ),
        (
            _recompute_without_the_key,
            6,
            f"event 3: its hash is a plain SHA-256, not the HMAC under key {KEY.key_id}: "
            "edited and recomputed without the key",
        ),
        (_swap_rows, 4, REORDERED),
    ],
    ids=["truncated", "all-deleted", "recomputed-without-the-key", "reordered"],
)
def test_tampering_is_named_against_the_published_checkpoint(
    trail: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[Path], None],
    exit_code: int,
    problem: str,
) -> None:
    published = tmp_path / "checkpoints.txt"
    published.write_text(_checkpoint_line(trail, capsys) + "\n", encoding="utf-8")
    assert _verify_cli(trail, capsys, "--checkpoints", str(published)) == (
        0,
        "audit chain intact: 6 events, 1 checkpoint matched\n",
    )

    tamper(trail)
    code, output = _verify_cli(trail, capsys, "--checkpoints", str(published))

    assert (code, output) == (exit_code, f"audit chain broken: {problem}\n")


def test_a_rewrite_by_someone_holding_the_key_is_caught_up_to_the_checkpoint(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _checkpoint_line(trail, capsys)
    _recompute_with_the_key(trail)

    assert _verify_cli(trail, capsys)[0] == 0, "the documented limit: without a checkpoint it passes"
    code, output = _verify_cli(trail, capsys, "--checkpoint", line.split("#", 1)[1].replace(" · ", ":", 1))

    assert code == 7
    assert "event 6 is not the one checkpoint #6 published" in output
    assert f"rewritten after the checkpoint by someone holding key {KEY.key_id}" in output


def test_a_wrong_key_is_named_even_with_checkpoints(
    trail: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    line = _checkpoint_line(trail, capsys)
    other = AuditKey.from_secret(OTHER_SECRET)
    monkeypatch.setenv("AUDIT_HMAC_KEY", OTHER_SECRET)

    code, output = _verify_cli(trail, capsys, "--checkpoint", "6:" + line.split(" · ")[1])

    assert code == 2
    assert output == (
        f"audit chain not verified: event 1 is keyed with key {KEY.key_id}, which was not given\n"
        f"keys given: {other.key_id} (AUDIT_HMAC_KEY, AUDIT_HMAC_PREVIOUS_KEYS)\n"
    )


def test_a_checkpoint_that_is_not_the_bots_is_refused(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _checkpoint_line(trail, capsys)
    mac = line.rsplit(" ", 1)[1]
    forged = line.replace(mac, ("1" if mac[0] == "0" else "0") + mac[1:])

    code, output = _verify_cli(trail, capsys, "--checkpoint", forged)

    assert code == 2
    assert "checkpoint #6 is not authentic: its mac does not match" in output


def test_checkpoint_files_take_every_published_form(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _checkpoint_line(trail, capsys)
    as_json = _checkpoint_line(trail, capsys, "--json")
    head = _stored(trail)[-1]
    published = tmp_path / "checkpoints.txt"
    published.write_text(
        f"{line}\n\n{as_json}\n6:{head.hash[:16]}\n#6 · {head.hash[:20]}\n", encoding="utf-8"
    )

    code, output = _verify_cli(trail, capsys, "--checkpoints", str(published))

    assert (code, output) == (0, "audit chain intact: 6 events, 4 checkpoints matched\n")
    record = json.loads(as_json)
    assert (record["sequence"], record["hash"], record["key_id"]) == (6, head.hash, KEY.key_id)
    assert record["at"] is not None


def test_a_line_that_is_not_a_checkpoint_is_named(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    published = tmp_path / "checkpoints.txt"
    published.write_text("6:" + "a" * 16 + "\nhello there\n", encoding="utf-8")

    code, output = _verify_cli(trail, capsys, "--checkpoints", str(published))

    assert code == 2
    assert f"{published}, line 2 is not a checkpoint: expected SEQ:HASH" in output


def test_a_malformed_checkpoint_argument_is_a_usage_error(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "verify", "--store-url", f"sqlite:///{trail}", "--checkpoint", "6:abc"])

    assert exit_info.value.code == 2
    assert "'6:abc' is not a checkpoint" in capsys.readouterr().err


# -- audit checkpoint -----------------------------------------------------------------------------


def test_checkpoint_prints_the_head_authenticated_with_the_key(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    head = _stored(trail)[-1]

    line = _checkpoint_line(trail, capsys)

    message = f"remediation-bot audit checkpoint:6:{head.hash}:{KEY.key_id}"
    mac = hmac.new(KEY_SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()
    assert line == f"Audit checkpoint #6 · {head.hash} · {KEY.key_id} · mac {mac}"
    assert len(_stored(trail)) == 6, "taking a checkpoint writes nothing"


def test_checkpoint_needs_the_key(
    trail: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUDIT_HMAC_KEY")

    code = main(["audit", "checkpoint", "--store-url", f"sqlite:///{trail}"])

    captured = capsys.readouterr()
    assert (code, captured.out) == (2, "")
    assert "AUDIT_HMAC_KEY is not set" in captured.err


def test_checkpoint_refuses_to_vouch_for_a_broken_trail(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _recompute_without_the_key(trail)

    code = main(["audit", "checkpoint", "--store-url", f"sqlite:///{trail}"])

    out = capsys.readouterr().out
    assert code == 6
    assert out.startswith("audit chain broken: event 3: its hash is a plain SHA-256")
    assert "Audit checkpoint" not in out


def test_checkpoint_of_an_empty_trail_says_there_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bot.db"
    _make_trail(path, 0)

    code = main(["audit", "checkpoint", "--store-url", f"sqlite:///{path}"])

    captured = capsys.readouterr()
    assert (code, captured.out) == (0, "")
    assert "the audit trail is empty" in captured.err


def test_each_finding_has_its_own_exit_code_and_the_readme_lists_them() -> None:
    from bot.cli.audit import AUDIT_EXIT_CODES

    codes = sorted(AUDIT_EXIT_CODES.values())
    assert codes == list(range(8)), "distinct, 0 for intact"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for kind, code in AUDIT_EXIT_CODES.items():
        word = "not verifiable" if kind is not None and kind.value == "unverifiable" else kind
        assert (f"| {code} | intact" if kind is None else f"| {code} | **{word}**") in readme
