"""Chaos run: three replicas on PostgreSQL under a push + click workload, killed and stopped at
random, then checked for what the bot promises.

    make chaos                                      # 60 s, a random seed (printed)
    CHAOS_SECONDS=120 CHAOS_SEED=42 make chaos      # longer, and the same decisions again
    python -m tests.chaos.run --names mixed          # people named by object id or by UPN

Real parts only: ``remediation-bot serve`` processes (tests/support/replica.py) sharing one
PostgreSQL schema of their own, the sandbox tenant (Entra ID and Graph, recording every request)
and the recording Bot Connector. The workload pushes signed alerts to ``/api/alerts``, adds
alerts the leader polls, and clicks Disable then Approve on the cards through
``/api/messages``, each time on a random replica. Meanwhile replicas get SIGKILL (and are
restarted) or SIGSTOP for a few seconds (then SIGCONT). At the end every replica is brought
back, the run settles, and these must hold:

- one open case per person;
- at most one Graph write per approved request, and exactly one for each that succeeded;
- one result reply per execution (a duplicate only with the "re-sent after a restart" line);
- one card per case (a second only with the "posted again after a restart" note);
- no request left approved or executing, no result unreported, no card left behind (settling
  may take as long as the work keeps moving; nothing moving for a while, or a request executing
  whose job is finished, fails at once);
- an intact audit chain;
- no 5xx from any replica.

A summary is printed; the exit code is 1 on any violation. The seed fixes every random decision
(who is named, which replica is hit and how); the timing of processes is the machine's.

``--names mixed`` names each person by object id or by UPN at random (a Defender alert or a
minimal push may carry only the UPN); CI runs it so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import psycopg
import yaml
from psycopg import sql

from bot.domain.models import Case, RequestState
from bot.services import LATE_NOTE, REPOSTED_NOTE, RESENT_MARKER
from bot.store import open_store
from bot.store.base import Store
from bot.web.push import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from devtools.sandbox import SandboxTenant
from tests.support.connector import ConnectorCall, RecordingConnector
from tests.support.harness import card_action, install_activity, invoke_activity
from tests.support.replica import Replica, free_port, replica_env

SECRET = "chaos-run-shared-secret-0123456789abcdef0123"
REQUESTER = {"id": "aaaaaaaa-0000-4000-8000-000000000001", "name": "Alex Wilber"}
APPROVER = {"id": "aaaaaaaa-0000-4000-8000-000000000002", "name": "Megan Bowen"}
LEASE_SECONDS = 3.0
REPOSTED = REPOSTED_NOTE.split(":")[0]
RESENT = RESENT_MARKER.split(":")[0]
CORRECTION = LATE_NOTE.split(":")[0]
RESULT_REPLY = re.compile(r"\*\*Disable account (succeeded|FAILED|submitted)")
QUIET_SECONDS = 3 * LEASE_SECONDS
# Settling is judged by progress, not by a fixed time: a loaded machine finishes the work
# slower, but it keeps finishing it. Work left behind waits at most a lease (jobs, cards) and
# a sweep (every card lease here) before a replica picks it up, then a few Graph and Teams
# calls (each bounded by GRAPH_TIMEOUT_SECONDS and Teams' retries). Nothing finishing for
# STALL_SECONDS means nobody is going to: a stuck state, reported with what the jobs show.
GRAPH_TIMEOUT_SECONDS = 10.0
STALL_SECONDS = 20 * LEASE_SECONDS + 2 * GRAPH_TIMEOUT_SECONDS


def people(count: int) -> list[dict[str, str]]:
    return [
        {
            "id": f"7e000000-0000-4000-8000-{i:012d}",
            "userPrincipalName": f"chaos{i:03d}@contoso.com",
            "displayName": f"Chaos Person {i:03d}",
        }
        for i in range(count)
    ]


def with_search_path(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query["options"] = f"{query.get('options', '')} -csearch_path={schema}".strip()
    return urlunsplit(parts._replace(query=urlencode(query)))


class Node:
    """One replica slot: the process currently in it, and what chaos did to it."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self._env = env
        self._logs = logs
        self._starts = 0
        self.state = "down"  # up | stopped | down | starting
        self.replica: Replica | None = None

    async def start(self) -> None:
        self.state = "starting"
        self._starts += 1
        env = {**self._env, "PORT": str(free_port())}
        self.replica = Replica(env, self._logs / f"{self.name}-{self._starts}.log")
        await self.replica.wait_healthy(120)
        self.state = "up"

    def kill(self) -> None:
        assert self.replica is not None
        self.replica.kill()
        self.state = "down"

    async def pause(self, seconds: float) -> None:
        assert self.replica is not None
        pid = self.replica.process.pid
        os.kill(pid, signal.SIGSTOP)
        self.state = "stopped"
        try:
            await asyncio.sleep(seconds)
        finally:
            if self.replica.process.poll() is None:
                os.kill(pid, signal.SIGCONT)
            self.state = "up"

    def stop(self) -> None:
        if self.replica is not None:
            if self.state == "stopped":
                os.kill(self.replica.process.pid, signal.SIGCONT)
            self.replica.stop()
        self.state = "down"

    @property
    def url(self) -> str:
        assert self.replica is not None
        return self.replica.url

    def logs(self) -> list[Path]:
        return sorted(self._logs.glob(f"{self.name}-*.log"))


@dataclass
class Tally:
    """What the workload saw from outside."""

    answers: Counter[str] = field(default_factory=Counter)  # "push 202", "click 200", ...
    unanswered: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    polled: int = 0
    kills: int = 0
    pauses: list[float] = field(default_factory=list)


class Chaos:
    def __init__(self, args: argparse.Namespace, seed: int, store_url: str, work: Path) -> None:
        self.args = args
        self.rng = random.Random(seed)
        self.store_url = store_url
        self.work = work
        self.people = people(args.people)
        self.tally = Tally()
        self.nodes: list[Node] = []
        self.tenant = SandboxTenant(
            {"users": [*self.people, _user(REQUESTER), _user(APPROVER)], "alerts": []},
            cert_dir=work / "tenant",
        )
        self.connector = RecordingConnector()
        self.http: aiohttp.ClientSession | None = None
        self.stopping = asyncio.Event()
        self.clicked: dict[str, str] = {}  # case id -> "requested" | "approved"
        self.answer_cards: dict[str, dict[str, Any]] = {}
        self.faults: set[asyncio.Task[None]] = set()  # pauses running, restarts scheduled
        self._last_answer: Any = {}

    # -- set-up ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.tenant.start()
        await self.connector.start()
        policy = self.work / "policy.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "responders": {"users": [REQUESTER["id"]]},
                    "approvers": {"users": [REQUESTER["id"], APPROVER["id"]]},
                    "approvals": {"disableAccount": 2},
                    "privileged_targets": {"roles": []},
                    "blast_radius_per_hour": 10000,
                    # The chaos run drives the one-card-per-identity path (its clicks are on each
                    # person's card): 40 people opening at once would otherwise be a campaign.
                    # Campaigns under crashes: tests/store/test_storm_crash.py.
                    "storm": {"threshold": 1000000},
                }
            )
        )
        env = replica_env(
            self.tenant,
            store_url=self.store_url,
            policy=policy,
            port=0,
            PUSH_SHARED_SECRET=SECRET,
            POLL_INTERVAL_SECONDS="2",
            JOB_POLL_SECONDS="0.5",
            JOB_LEASE_SECONDS=str(LEASE_SECONDS),
            CARD_LEASE_SECONDS=str(LEASE_SECONDS),
            CARD_UPDATE_COALESCE_SECONDS="0.5",
            GRAPH_IDENTITY_PROTECTION_INTERVAL="0.05",
            GRAPH_TIMEOUT_SECONDS=str(GRAPH_TIMEOUT_SECONDS),
        )
        env.pop("REMEDIATION_FAULT_POINTS", None)
        logs = self.work / "logs"
        logs.mkdir()
        self.nodes = [Node(f"replica{n}", env, logs) for n in range(self.args.replicas)]
        await asyncio.gather(*(node.start() for node in self.nodes))
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        status = await self._post(
            self.nodes[0], "/api/messages", install_activity(self.connector.service_url)
        )
        if not 200 <= status < 300:
            raise RuntimeError(f"installing the bot answered {status}")

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        for node in self.nodes:
            node.stop()
        await self.connector.stop()
        await self.tenant.stop()

    # -- the workload ---------------------------------------------------------------------------

    def _live(self) -> list[Node]:
        # What a load balancer would send to: any process it believes is there (a stopped one
        # still accepts connections and then never answers).
        return [n for n in self.nodes if n.state in ("up", "stopped")]

    async def _post(
        self, node: Node, path: str, payload: Any, headers: dict[str, str] | None = None, *, what: str = ""
    ) -> int:
        assert self.http is not None
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        kind = what or path
        try:
            async with self.http.post(
                f"{node.url}{path}",
                data=body,
                headers={"Content-Type": "application/json", **(headers or {})},
            ) as answer:
                text = await answer.text()
                self.tally.answers[f"{kind} {answer.status}"] += 1
                if answer.status >= 500:
                    self.tally.server_errors.append(f"{kind} on {node.name}: {answer.status} {text[:300]}")
                if what == "click" and answer.status == 200:
                    self._last_answer = json.loads(text) if text else {}
                return answer.status
        except (aiohttp.ClientError, TimeoutError):
            self.tally.unanswered[kind] += 1
            return 0

    def _name(self, person: dict[str, str]) -> dict[str, str]:
        if self.args.names == "mixed" and self.rng.random() < 0.5:
            return {"userPrincipalName": person["userPrincipalName"]}
        return {"objectId": person["id"]}

    async def push(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            person = self.rng.choice(self.people)
            body = json.dumps(
                {
                    "id": f"chaos-{n}",
                    "title": f"Chaos alert {n}",
                    "severity": self.rng.choice(["medium", "high"]),
                    "source": "chaos",
                    "user": self._name(person),
                }
            ).encode()
            for _ in range(3):  # a sender retries on another replica when it gets no answer
                live = self._live()
                if not live:
                    break
                timestamp = str(int(time.time()))
                headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(SECRET, timestamp, body)}
                if await self._post(self.rng.choice(live), "/api/alerts", body, headers, what="push"):
                    break
            await asyncio.sleep(self.rng.uniform(0.05, 0.4))

    async def poll_feed(self) -> None:
        """Alerts in the tenant for the polling leader to find (Graph names people by both)."""
        sources = ("microsoftDefenderForIdentity", "azureAdIdentityProtection")
        while not self.stopping.is_set():
            person = self.rng.choice(self.people)
            self.tenant.add_alert(
                {
                    "user": person["userPrincipalName"],
                    "serviceSource": self.rng.choice(sources),
                    "title": f"Polled alert {self.tally.polled}",
                    "severity": "high",
                }
            )
            self.tally.polled += 1
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))

    def _cards_by_case(self) -> dict[str, list[ConnectorCall]]:
        posts: dict[str, list[ConnectorCall]] = defaultdict(list)
        for post in self.connector.of_kind("create"):
            case_id = case_of(post.card)
            if case_id:
                posts[case_id].append(post)
        return posts

    def _current_card(self, posts: list[ConnectorCall]) -> dict[str, Any]:
        ids = {p.activity_id for p in posts}
        updates = [u for u in self.connector.of_kind("update") if u.activity_id in ids]
        return ((updates[-1] if updates else posts[-1]).card) or {}

    async def click(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))
            cases = {c: p for c, p in self._cards_by_case().items() if self.clicked.get(c) != "approved"}
            live = self._live()
            if not cases or not live:
                continue
            case_id = self.rng.choice(sorted(cases))
            posts = cases[case_id]
            card = self.answer_cards.pop(case_id, None) or self._current_card(posts)
            requested = self.clicked.get(case_id) == "requested"
            verb, person = ("approve", APPROVER) if requested else ("disableAccount", REQUESTER)
            try:
                data = dict(card_action(card, verb)["data"], reason="chaos run")
            except AssertionError:
                continue  # not on this card (yet, or any more); look again later
            activity = invoke_activity(
                self.connector.service_url,
                self.rng.choice(posts).conversation_id,
                user_object_id=person["id"],
                user_name=person["name"],
                verb=verb,
                data=data,
            )
            self._last_answer = {}
            if await self._post(self.rng.choice(live), "/api/messages", activity, what="click") != 200:
                continue
            answered = self._last_answer.get("value") if isinstance(self._last_answer, dict) else None
            if not isinstance(answered, dict):
                continue
            self.answer_cards[case_id] = answered
            if _has(answered, "approve"):
                self.clicked[case_id] = "requested"
            elif requested or "already" in json.dumps(answered):
                self.clicked[case_id] = "approved"

    async def chaos(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))
            up = [n for n in self.nodes if n.state == "up"]
            if len(up) <= 1:
                continue  # keep one replica answering, or the run tests nothing
            node = self.rng.choice(up)
            if self.rng.random() < 0.5:
                node.kill()
                self.tally.kills += 1
                self.faults.add(asyncio.create_task(self._restart_later(node, self.rng.uniform(0.5, 3.0))))
            else:
                seconds = self.rng.uniform(0.5, 5.0)
                self.tally.pauses.append(seconds)
                self.faults.add(asyncio.create_task(node.pause(seconds)))

    async def _restart_later(self, node: Node, delay: float) -> None:
        await asyncio.sleep(delay)
        if node.state == "down":
            await node.start()

    async def run(self, seconds: float) -> None:
        tasks = [
            asyncio.create_task(work())
            for work in (self.push, self.poll_feed, self.click, self.click, self.chaos)
        ]
        await asyncio.sleep(seconds)
        self.stopping.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Bring every replica back: the survivors and the restarted ones must finish the work.
        await asyncio.gather(*self.faults)
        await asyncio.gather(*(node.start() for node in self.nodes if node.state == "down"))

    # -- settling and checking ------------------------------------------------------------------

    async def settle(self, store: Store, limit: float) -> str:
        """Wait until nothing is left to do and the channel has been quiet for a while.

        Returns what is stuck: the work left when nothing changed for ``STALL_SECONDS`` (no
        request, card or channel call moving), or at once a request executing whose job is
        finished (no worker will ever carry it on); or whatever is left after ``limit``.
        """
        deadline = time.monotonic() + limit
        calls, quiet_since = -1, time.monotonic()
        seen: list[str] = []
        changed = time.monotonic()
        while time.monotonic() < deadline:
            # The jobs first: a job is finished only after its request is, so a job finished
            # before a read that still shows its request executing is stuck for good.
            jobs = await job_rows(self.store_url)
            pending = await unfinished(store)
            now = time.monotonic()
            if len(self.connector.calls) != calls:
                calls, quiet_since = len(self.connector.calls), now
            if not pending and now - quiet_since >= QUIET_SECONDS:
                return ""
            if pending != seen:
                seen, changed = pending, now
            abandoned = [e for e in await with_jobs(store, pending, jobs) if e.endswith("(job finished)")]
            if abandoned:
                return "abandoned: " + ", ".join(abandoned)
            if now - max(changed, quiet_since) >= STALL_SECONDS:
                return f"nothing moved for {STALL_SECONDS:g} s: " + ", ".join(
                    await with_jobs(store, pending, await job_rows(self.store_url))
                )
            await asyncio.sleep(0.5)
        left = await unfinished(store)
        return ", ".join(await with_jobs(store, left, await job_rows(self.store_url))) or (
            "the channel never went quiet"
        )

    async def check(self, store: Store) -> tuple[list[str], dict[str, Any]]:
        violations: list[str] = []
        by_key = {p["id"].lower(): p["id"] for p in self.people}
        by_key |= {p["userPrincipalName"].lower(): p["id"] for p in self.people}
        cases = await store.list_cases()
        person_of: dict[str, str] = {}
        open_cases: Counter[str] = Counter()
        for case in cases:
            person = _person(case, by_key)
            if person is None:
                violations.append(f"case {case.id} names nobody the tenant knows: {case.identity}")
                continue
            person_of[case.id] = person
            open_cases[person] += 1
        for person, count in open_cases.items():
            if count > 1:
                violations.append(f"person {person} has {count} open cases")

        writes: Counter[str] = Counter()
        for r in self.tenant.requests:
            if r.method == "PATCH" and isinstance(r.json, dict) and "accountEnabled" in r.json:
                writes[r.path.rsplit("/", 1)[-1].lower()] += 1
        audit = await store.list_audit()
        late = Counter(e.request_id for e in audit if e.kind == "action.late_result")
        taken_over = sum(1 for e in audit if e.kind == "action.taken_over")
        dispatched: Counter[str] = Counter()
        succeeded: Counter[str] = Counter()
        explained: Counter[str] = Counter()
        replies_total = resent_total = corrected_total = ran = 0
        cards = self._cards_by_case()
        for case in cases:
            requests = await store.list_requests(case.id)
            person = person_of.get(case.id, "?")
            threads = {p.activity_id for p in cards.get(case.id, [])}
            replies = [
                c.text
                for c in self.connector.of_kind("send")
                if c.conversation_id.partition(";messageid=")[2] in threads and RESULT_REPLY.search(c.text)
            ]
            finished = [r for r in requests if r.state in (RequestState.SUCCEEDED, RequestState.FAILED)]
            if len(requests) > 1:
                violations.append(f"case {case.id} has {len(requests)} requests; the workload asks once")
            for request in finished:
                ran += request.started_at is not None
                dispatched[person] += request.dispatched
                succeeded[person] += request.state is RequestState.SUCCEEDED
                explained[person] += late[request.id]
            corrections = [t for t in replies if t.startswith(CORRECTION)]
            replies = [t for t in replies if not t.startswith(CORRECTION) and "Verification update" not in t]
            plain = [t for t in replies if RESENT not in t]
            replies_total += len(replies)
            resent_total += len(replies) - len(plain)
            corrected_total += len(corrections)
            for request in finished:
                stored = request.result
                if late[request.id] and stored is not None and not stored.succeeded and not corrections:
                    violations.append(
                        f"case {case.id}: a late result took effect and the thread was not told"
                    )
            ran_here = [r for r in finished if r.started_at is not None]
            if ran_here and not replies:
                violations.append(f"case {case.id}: its result never reached the thread")
            if len(plain) > 1:
                violations.append(f"case {case.id}: {len(plain)} result replies without the re-send line")
            posted = cards.get(case.id, [])
            if not posted:
                violations.append(f"case {case.id}: no card was posted")
            elif sum(REPOSTED not in p.text for p in posted) > 1:
                violations.append(f"case {case.id}: {len(posted)} cards, more than one without the note")
        for person in set(writes) | set(dispatched):
            if writes[person] > dispatched[person]:
                violations.append(
                    f"person {person}: {writes[person]} Graph writes for {dispatched[person]} sent request(s)"
                )
            if writes[person] < succeeded[person]:
                violations.append(
                    f"person {person}: {succeeded[person]} succeeded, {writes[person]} Graph writes"
                )
            if writes[person] > succeeded[person] + explained[person]:
                violations.append(
                    f"person {person}: {writes[person]} Graph writes, "
                    f"{succeeded[person]} recorded as succeeded"
                )
        check = await store.verify_audit()
        if not check.ok:
            violations.append(f"audit chain: {check.problem}")
        violations += [f"5xx: {error}" for error in self.tally.server_errors]
        violations += [f"Graph contract: {v}" for v in self.tenant.violations]
        posts = self.connector.of_kind("create")
        summary = {
            "cases": len(cases),
            "cards": len(posts),
            "cards_posted_again": sum(REPOSTED in p.text for p in posts),
            "actions_run": ran,
            "graph_writes": sum(writes.values()),
            "result_replies": replies_total,
            "result_replies_resent": resent_total,
            "takeovers": taken_over,
            "late_results": sum(late.values()),
            "corrections": corrected_total,
            "audit_events": check.checked,
        }
        return violations, summary


def _user(person: dict[str, str]) -> dict[str, str]:
    return {
        "id": person["id"],
        "userPrincipalName": f"{person['id'][:8]}@contoso.com",
        "displayName": person["name"],
    }


def case_of(card: dict[str, Any] | None) -> str:
    """The case id the card's buttons carry."""
    found = re.search(r'"caseId": "([^"]+)"', json.dumps(card or {}))
    return found.group(1) if found else ""


def _has(card: dict[str, Any], verb: str) -> bool:
    try:
        card_action(card, verb)
    except AssertionError:
        return False
    return True


def _person(case: Case, by_key: dict[str, str]) -> str | None:
    for key in (case.identity.object_id, case.identity.upn):
        if key and key.lower() in by_key:
            return by_key[key.lower()]
    return None


async def unfinished(store: Store) -> list[str]:
    """What is still to be done: requests running or unreported, cards missing or behind."""
    left = [
        f"request {r.id} {r.state.value}"
        for r in await store.list_requests_in([RequestState.APPROVED, RequestState.EXECUTING])
    ]
    left += [
        f"request {r.id} unreported"
        for r in await store.list_requests_in([RequestState.SUCCEEDED, RequestState.FAILED])
        if r.reported_attempt < r.attempt
    ]
    left += [f"case {c.id} card behind" for c in await store.list_cases() if c.needs_publishing]
    return left


async def job_rows(url: str) -> dict[str, str]:
    """Each execution job's key and how it stands (worker, lease, claims, finished)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        cursor = await connection.execute(
            "SELECT key, worker, attempts, finished_at IS NOT NULL, lease_until < now() FROM jobs"
        )
        rows = await cursor.fetchall()
    return {
        key: "job finished"
        if finished
        else f"job claimed {attempts} times, by {worker}, lease {'lapsed' if lapsed else 'live'}"
        for key, worker, attempts, finished, lapsed in rows
    }


async def with_jobs(store: Store, pending: list[str], jobs: dict[str, str]) -> list[str]:
    """``pending`` with what the job of each request left executing shows."""
    keys = {r.id: r.idempotency_key for r in await store.list_requests_in([RequestState.EXECUTING])}
    described = []
    for entry in pending:
        parts = entry.split()
        if parts[0] == "request" and parts[-1] == RequestState.EXECUTING.value and parts[1] in keys:
            entry += f" ({jobs.get(keys[parts[1]], 'no job')})"
        described.append(entry)
    return described


async def main(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    names = "object id or UPN at random" if args.names == "mixed" else "object id"
    print(
        f"chaos: seed {seed}, {args.seconds:g} s, {args.replicas} replicas, "
        f"{args.people} people named by {names}",
        flush=True,
    )
    base = args.postgres_url
    schema = f"chaos_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.Error as exc:
        print(f"chaos: PostgreSQL is not reachable ({' '.join(str(exc).split())})", file=sys.stderr)
        return 2
    url = with_search_path(base, schema)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        work = Path(args.keep or tmp)
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        chaos = Chaos(args, seed, url, work)
        store: Store | None = None
        try:
            await chaos.start()
            started = time.monotonic()
            await chaos.run(args.seconds)
            store = await open_store(url)
            stuck = await chaos.settle(store, args.settle)
            settled_in = time.monotonic() - started - args.seconds
            violations, summary = await chaos.check(store)
            if stuck:
                violations.append(f"did not settle: {stuck}")
        finally:
            if store is not None:
                await store.close()
            await chaos.close()
            if not args.keep:
                with psycopg.connect(base, autocommit=True) as admin:
                    admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        tally = chaos.tally
        pauses = tally.pauses
        print(
            f"  workload: {_counts(tally.answers)}; no answer: {_counts(tally.unanswered) or 'none'}; "
            f"{tally.polled} polled alerts"
        )
        pause_range = f" ({min(pauses):.1f}-{max(pauses):.1f} s)" if pauses else ""
        print(f"  faults: {tally.kills} SIGKILL (each restarted), {len(pauses)} SIGSTOP{pause_range}")
        print(f"  settled {settled_in:.0f} s after the chaos stopped")
        print("  outcome: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()))
        if violations:
            print(f"chaos: {len(violations)} VIOLATION(S) (seed {seed}):")
            for violation in violations[:50]:
                print(f"  - {violation}")
            if args.keep:
                print(f"  replica logs kept in {work / 'logs'}")
            return 1
        print(f"chaos: every invariant held (seed {seed})")
        return 0


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in sorted(counter.items()))


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("CHAOS_SECONDS", "60")))
    seed = os.environ.get("CHAOS_SEED")
    parser.add_argument("--seed", type=int, default=int(seed) if seed else None)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument(
        "--names",
        choices=("objectid", "mixed"),
        default=os.environ.get("CHAOS_NAMES", "objectid"),
        help="how pushes name people: always by object id, or by object id or UPN at random",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=600.0,
        help="seconds allowed to finish the work while it keeps moving (stuck work fails sooner)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test",
    )
    parser.add_argument("--keep", default="", help="keep the work folder (logs) and the schema here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(arguments())))
