"""Microsoft Graph JSON batching: many Graph calls in few HTTP requests, each answered on its own.

``POST /$batch`` carries at most 20 requests (https://learn.microsoft.com/graph/json-batching).
Graph answers the batch 200 when it could parse it and gives every request its own ``status``,
``headers`` and ``body``; the answers may come in any order and are matched by ``id``. Requests
inside a batch are throttled one by one against the limits of the service they call
(https://learn.microsoft.com/graph/throttling#throttling-and-batching): some may come back 429
with their own ``Retry-After`` while the rest succeed, and only those are sent again, after the
longest wait any of them asked for.

:class:`GraphBatcher` sends a list of :class:`BatchRequest` this way and returns one
:class:`BatchAnswer` per request, in the order given. It keeps the Graph client's rules:

- the batch itself goes through the client's chokepoint (token, ``client-request-id``, retries
  of a whole-batch 429/503 honouring ``Retry-After``, typed errors);
- a request marked ``idempotent=False`` (a remediation POST) is never sent again once Graph may
  have acted on it: a 500/502/504 for it, or a batch whose answer was lost, leaves it
  *outcome unknown* (:class:`~bot.errors.GraphOutcomeUnknown`) for the caller to read back;
- 429 (and 503, which says nothing was done) are retried for every request, and 504 for
  idempotent ones, at most ``max_attempts`` times per request and never past the deadline;
- a 429 or 503 holds back everything else bound for the same service until its
  ``Retry-After`` has passed, and the run then slows down (one batch per wait, more again after
  clean answers), so that a throttled run goes at the pace Graph allows instead of spending
  requests on 429s;
- a batch carries at most one Identity Protection request, sent in the client's Identity
  Protection slot (one request per second per tenant, counted inside a batch too);
- at most ``concurrency`` batches are in flight at once.

Bodies are never logged: a password reset's body holds the new password.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from bot.errors import GraphError, GraphOutcomeUnknown
from bot.graph import GraphClient, decode
from bot.graph.client import MAX_BATCH_REQUESTS
from bot.log_context import ids_bound

log = logging.getLogger(__name__)

# Awaited with the indexes of requests about to be sent for the first time (see GraphBatcher.send).
BeforeSend = Callable[[list[int]], Awaitable[None]]

# Statuses that say the request was not carried out (429: throttled, 503: not processed).
_NOT_DONE = frozenset({429, 503})
# A gateway timeout: an idempotent request may simply be sent again.
_RETRY_IF_IDEMPOTENT = frozenset({504})
# Answers that do not rule out that a non-idempotent request was carried out.
_OUTCOME_UNKNOWN = frozenset({500, 502, 504})

# Identity Protection's requests share one request per second per tenant, batched or not.
_IDENTITY_PROTECTION = "/identityProtection/"

# The least pace (seconds per round of batches) after a throttled batch without a Retry-After.
_MIN_PACE = 1.0
# ... and the most: a longer wait is held by the service's gate, not repeated for every batch.
_MAX_PACE = 5.0
# The most clean batches a throttled run waits for before it sends faster again.
_MAX_RAMP = 16

# Characters left as they are in a query value: OData's own syntax reads better unescaped.
_QUERY_SAFE = "$,'()"


@dataclass(frozen=True)
class BatchRequest:
    """One Graph call to send inside a batch.

    ``path`` is relative to the version root with its segments already encoded
    (``/users/<id>``; see :func:`bot.graph.path_segment`); ``params`` its query. A ``body`` is
    sent as JSON with ``Content-Type: application/json``, as the batching docs require.
    ``idempotent=False`` marks a call that must not run twice. ``client_request_id`` (a GUID)
    names the call in Graph's logs; give the same one for the same logical call every time.
    """

    method: str
    path: str
    params: Mapping[str, str] | None = None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotent: bool = True
    client_request_id: str = ""

    def url(self) -> str:
        """The relative URL Graph wants in the batch: path and encoded query."""
        if not self.path.startswith("/"):
            raise ValueError(
                f"a batched request needs a path relative to the version root, not {self.path!r}"
            )
        if not self.params:
            return self.path
        return f"{self.path}?{urlencode(dict(self.params), safe=_QUERY_SAFE, quote_via=quote)}"

    def describe(self) -> str:
        """``METHOD path`` for messages (never the body)."""
        return f"{self.method.upper()} {self.path}"


@dataclass(frozen=True)
class BatchAnswer:
    """What became of one request: Graph's answer to it, or why there is none.

    ``status`` is the request's own HTTP status (0 when Graph gave it none), ``error`` the typed
    error for anything but a 2xx (:class:`~bot.errors.GraphOutcomeUnknown` when it may or may
    not have been carried out), ``attempts`` how many times it was sent.
    """

    status: int
    body: Any
    headers: Mapping[str, str]
    request_id: str
    attempts: int
    error: GraphError | None = None

    @property
    def ok(self) -> bool:
        """Whether Graph carried the request out (a 2xx answer)."""
        return self.error is None and 200 <= self.status < 300


@dataclass
class _Item:
    index: int
    request: BatchRequest
    ready_at: float = 0.0
    attempts: int = 0
    answer: BatchAnswer | None = None
    # The last answer that asked for a retry, kept to explain a retry that never came.
    last: tuple[int, Mapping[str, str], bytes, str] | None = None


class GraphBatcher:
    """Sends Graph requests in JSON batches of at most 20, a bounded number at a time."""

    def __init__(
        self,
        graph: GraphClient,
        *,
        concurrency: int = 4,
        max_attempts: int = 5,
        batch_size: int = MAX_BATCH_REQUESTS,
        max_wait: float = 150.0,
    ) -> None:
        """``concurrency`` batches in flight at once; ``max_attempts`` sends per request;
        ``max_wait`` the longest ``Retry-After`` honoured (150 s: the longest window of the
        documented identity limits; a caller's deadline may end the wait sooner).

        Waits and the clock are the Graph client's (tests give it virtual time).
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 1 <= batch_size <= MAX_BATCH_REQUESTS:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_REQUESTS}")
        self._graph = graph
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._batch_size = batch_size
        self._max_wait = max_wait

    @property
    def concurrency(self) -> int:
        """How many batches may be in flight at once."""
        return self._concurrency

    async def send(
        self,
        requests: Sequence[BatchRequest],
        *,
        deadline: float | None = None,
        before_send: BeforeSend | None = None,
    ) -> list[BatchAnswer]:
        """Send every request; one answer per request, in the order given.

        ``deadline`` is an instant of the Graph client's monotonic clock: no retry waits past it
        (a request still throttled then keeps its 429 as the answer), and a request whose first
        turn comes after it is not sent at all. ``before_send`` is awaited with the indexes (in
        ``requests``) of the requests a batch is about to send for the first time, just before
        it goes; if it raises, those requests are not sent and their answer says why (the
        caller records "dispatched" there, so that a takeover knows what may have gone out).
        """
        for request in requests:
            request.url()  # refuses a path Graph would not take, before anything is sent
        items = [_Item(index, request) for index, request in enumerate(requests)]
        if not items:
            return []
        run = _Run(self, items, deadline, before_send)
        workers = min(self._concurrency, -(-len(items) // self._batch_size))
        tasks = [asyncio.create_task(run.worker()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            # One worker failed (or the caller was cancelled): stop the others, then re-raise.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        answers = []
        for item in items:
            assert item.answer is not None, "every request ends with an answer"
            answers.append(item.answer)
        return answers


class _Run:
    """One :meth:`GraphBatcher.send`: the requests waiting, the batches in flight, the workers.

    Each worker takes up to a batch of the requests whose time has come, sends it, and puts the
    ones to retry back with the time they may go again. A worker with nothing to send waits for
    the earliest of those times, or, when every remaining request is in flight, for a batch to
    come back.
    """

    def __init__(
        self,
        batcher: GraphBatcher,
        items: list[_Item],
        deadline: float | None,
        before_send: BeforeSend | None,
    ) -> None:
        self._batcher = batcher
        self._before_send = before_send
        self._graph = batcher._graph
        self._waiting = list(items)
        self._open = len(items)
        self._deadline = deadline
        self._changed = asyncio.Event()
        # Batches that may be in flight (at most the concurrency; halved while Graph throttles),
        # those in flight, and per service the instant before which nothing goes to it (the
        # Retry-After of its last 429 or 503).
        self._allowed = batcher._concurrency
        self._in_flight = 0
        self._gates: dict[str, float] = {}
        # While recovering from throttling: seconds per round of ``_allowed`` batches (0: not
        # pacing), when the next batch may start, and clean batches since the last change.
        self._pace = 0.0
        self._next_start = 0.0
        self._clean = 0
        self._throttlings = 0

    async def worker(self) -> None:
        while self._open > 0:
            now = self._graph.monotonic()
            if self._deadline is not None:
                late = [item for item in self._waiting if self._due(item) > self._deadline]
                if late:
                    self._expire(late, "Graph asked to wait past the deadline")
                    continue
            ready = [item for item in self._waiting if self._due(item) <= now]
            if ready and self._in_flight < self._allowed:
                if self._pace and now < self._next_start:
                    await self._graph.sleep(self._next_start - now)
                    continue
                if self._pace:
                    self._next_start = now + self._pace / self._allowed
                chunk = _chunk(sorted(ready, key=lambda item: item.index), self._batcher._batch_size)
                taken = {id(item) for item in chunk}
                self._waiting = [item for item in self._waiting if id(item) not in taken]
                self._in_flight += 1
                try:
                    throttled = await self._send(chunk)
                finally:
                    self._in_flight -= 1
                    self._changed.set()
                self._adapt(throttled)
                continue
            if self._waiting and not ready:
                await self._graph.sleep(min(self._due(item) for item in self._waiting) - now)
                continue
            # Everything left is in flight, or as many batches as allowed are: wait for one.
            self._changed.clear()
            await self._changed.wait()

    def _adapt(self, throttled: float | None) -> None:
        """Slow down while Graph throttles this run, and speed up again as it stops.

        Graph does not say how fast it will take requests, only how long to wait; sending at
        full speed again after each wait would meet a 429 for most of each round. After a
        throttled batch, one batch goes per the wait Graph asked for; after a run of clean
        batches one more is allowed at once, until the run is back to full concurrency and
        unpaced. The run of clean batches needed doubles with every throttling of the same run
        (2, 4, 8, at most 16), so a run at the edge of a quota probes it less and less often.
        """
        if throttled is not None:
            self._throttlings += 1
            self._allowed = 1
            self._clean = 0
            # A long Retry-After ends a quota's window: the next one is whole again, so the
            # pace is bounded (the gate has held everything back for the wait itself).
            self._pace = min(max(throttled, _MIN_PACE), _MAX_PACE)
            return
        if not self._pace:
            return
        self._clean += 1
        if self._clean < min(2**self._throttlings, _MAX_RAMP):
            return
        self._clean = 0
        if self._allowed >= self._batcher._concurrency:
            self._pace = 0.0
        else:
            self._allowed += 1

    def _due(self, item: _Item) -> float:
        """When a request may go: its own retry time, and not before its service's Retry-After."""
        return max(item.ready_at, self._gates.get(_service(item.request.path), 0.0))

    def _expire(self, late: list[_Item], reason: str) -> None:
        """End ``late`` requests now: never sent, or given up with their last answer."""
        gone = {id(item) for item in late}
        self._waiting = [item for item in self._waiting if id(item) not in gone]
        for item in late:
            if item.attempts == 0:
                self._not_sent(item, reason)
            else:
                self._give_up(item, f"and {reason}")

    async def _send(self, chunk: list[_Item]) -> float | None:
        """Send one batch and sort out its answers; the longest wait Graph asked for if it
        throttled any of it (None when it did not)."""
        first = [item for item in chunk if item.attempts == 0]
        if first and self._deadline is not None and self._graph.monotonic() > self._deadline:
            for item in first:
                self._not_sent(item, "the deadline passed before its turn came")
            chunk = [item for item in chunk if item.attempts > 0]
        elif first and self._before_send is not None:
            try:
                await self._before_send([item.index for item in first])
            except Exception as exc:
                for item in first:
                    self._not_sent(item, str(exc) or type(exc).__name__)
                chunk = [item for item in chunk if item.attempts > 0]
        if not chunk:
            return None
        ids = {f"{position + 1}": item for position, item in enumerate(chunk)}
        payload = [_wire(batch_id, item.request) for batch_id, item in ids.items()]
        if any(_paced(item.request.path) for item in chunk):
            await self._graph.identity_protection_slot()
        idempotent = all(item.request.idempotent for item in chunk)
        for item in chunk:
            item.attempts += 1
        try:
            response = await self._graph.post_batch(payload, idempotent=idempotent, deadline=self._deadline)
        except GraphOutcomeUnknown as exc:
            # The batch may have been carried out: its idempotent requests go again, the others
            # are left for the caller to read back.
            for item in chunk:
                if item.request.idempotent and item.attempts < self._batcher._max_attempts:
                    self._retry(item, self._graph.backoff(item.attempts))
                else:
                    self._finish(item, _failed(item, exc))
            return None
        except GraphError as exc:
            # Refused or throttled as a whole after the client's own retries: nothing was done.
            for item in chunk:
                self._finish(item, _failed(item, exc))
            return _MIN_PACE if exc.status in _NOT_DONE else None
        answered = _responses(response.body)
        statuses: list[int] = []
        waits: list[float] = []
        for batch_id, item in ids.items():
            entry = answered.get(batch_id.lower())
            if entry is None:
                self._unanswered(item, response.request_id)
                continue
            statuses.append(entry.status)
            self._handle(item, entry, response.request_id, waits)
        throttled = max(waits) if waits else None
        clean = all(200 <= status < 400 for status in statuses)
        with ids_bound(graph_request_id=response.request_id):
            log.log(
                logging.DEBUG if clean else logging.INFO,
                "Graph $batch of %d requests answered %d: %s",
                len(chunk),
                response.status,
                _tally(statuses),
            )
        return throttled

    def _handle(self, item: _Item, entry: _Entry, batch_request_id: str, waits: list[float]) -> None:
        """Finish one request from its answer, or put it back to be sent again; a throttled
        one adds the wait Graph asked for to ``waits``."""
        request = item.request
        method, path = request.method.upper(), request.path
        status, headers, content = entry.status, entry.headers, entry.content
        request_id = headers.get("request-id") or decode.error_details(headers, content).request_id
        request_id = request_id or batch_request_id
        if 200 <= status < 400:
            self._finish(
                item,
                BatchAnswer(status, decode.parse_json(content), headers, request_id, item.attempts),
            )
            return
        if not request.idempotent and status in _OUTCOME_UNKNOWN:
            error: GraphError = decode.outcome_unknown_answer(method, path, status, headers, content)
            self._finish(item, _error_answer(item, status, headers, content, request_id, error))
            return
        retryable = status in _NOT_DONE or (request.idempotent and status in _RETRY_IF_IDEMPOTENT)
        if not retryable:
            error = decode.refused(method, path, status, headers, content)
            self._finish(item, _error_answer(item, status, headers, content, request_id, error))
            return
        item.last = (status, headers, content, request_id)
        delay = self._graph.retry_after(headers.get("retry-after"))
        max_wait = self._batcher._max_wait
        if delay is not None and delay > max_wait:
            self._give_up(item, f"and asked to wait {delay:g} s, more than the {max_wait:g} s cap")
            return
        if item.attempts >= self._batcher._max_attempts:
            self._give_up(item, "")
            return
        # Identity Protection's 429s carry no Retry-After: the client's jittered backoff.
        wait = delay if delay is not None else self._graph.backoff(item.attempts)
        if status in _NOT_DONE:
            # The service is throttled, not only this request: what else goes to it waits too.
            waits.append(wait)
            service = _service(request.path)
            self._gates[service] = max(self._gates.get(service, 0.0), self._graph.monotonic() + wait)
        self._retry(item, wait)

    def _unanswered(self, item: _Item, batch_request_id: str) -> None:
        """Graph's batch answer names no response for this request: its fate is unknown."""
        request = item.request
        message = (
            f"Graph's batch answer (request-id {batch_request_id}) has no response for {request.describe()}"
        )
        if request.idempotent and item.attempts < self._batcher._max_attempts:
            self._retry(item, self._graph.backoff(item.attempts))
            return
        error = GraphOutcomeUnknown(
            f"{message}; it may have been carried out, so it was not sent again: read the state back",
            method=request.method.upper(),
            path=request.path,
            request_id=batch_request_id,
        )
        self._finish(item, BatchAnswer(0, None, {}, batch_request_id, item.attempts, error))

    def _retry(self, item: _Item, wait: float) -> None:
        at = self._graph.monotonic() + max(0.0, wait)
        if self._deadline is not None and at > self._deadline:
            self._give_up(item, f"and waiting {wait:g} s more would pass the deadline")
            return
        item.ready_at = at
        self._waiting.append(item)

    def _give_up(self, item: _Item, reason: str) -> None:
        request = item.request
        if item.last is None:
            # Sent, but its answer was lost, and there is no time to send it again.
            lost = GraphOutcomeUnknown(
                f"Graph's answer to {request.describe()} was lost {reason}; it may have been "
                "carried out: read the state back",
                method=request.method.upper(),
                path=request.path,
            )
            self._finish(item, BatchAnswer(0, None, {}, "", item.attempts, lost))
            return
        status, headers, content, request_id = item.last
        error = decode.exhausted(
            request.method.upper(),
            request.path,
            status,
            headers,
            content,
            attempts=item.attempts,
            reason=reason,
        )
        self._finish(item, _error_answer(item, status, headers, content, request_id, error))

    def _not_sent(self, item: _Item, reason: str) -> None:
        request = item.request
        error = GraphError(
            f"{request.describe()} was not sent: {reason}; nothing was done",
            method=request.method.upper(),
            path=request.path,
        )
        self._finish(item, BatchAnswer(0, None, {}, "", 0, error))

    def _finish(self, item: _Item, answer: BatchAnswer) -> None:
        item.answer = answer
        self._open -= 1


@dataclass(frozen=True)
class _Entry:
    status: int
    headers: Mapping[str, str]
    content: bytes


def _paced(path: str) -> bool:
    """Whether a request counts against Identity Protection's one request per second per tenant."""
    return path.startswith(_IDENTITY_PROTECTION)


def _chunk(ready: list[_Item], size: int) -> list[_Item]:
    """The next batch: up to ``size`` requests in order, at most one for Identity Protection
    (it allows one request per second, counted inside a batch too)."""
    chunk: list[_Item] = []
    paced = False
    for item in ready:
        if _paced(item.request.path):
            if paced:
                continue
            paced = True
        chunk.append(item)
        if len(chunk) == size:
            break
    return chunk


def _service(path: str) -> str:
    """Which Graph service a path goes to, as Graph throttles them (users, security, ...)."""
    segments = path.strip("/").split("/")
    if segments[0] == "security" and len(segments) > 1:
        return "/".join(segments[:2])  # alerts and Defender for Identity are limited apart
    return segments[0]


def _wire(batch_id: str, request: BatchRequest) -> dict[str, Any]:
    """The request as the batch carries it: id, method, relative url, headers, JSON body."""
    headers = {name: value for name, value in request.headers.items()}
    headers["client-request-id"] = request.client_request_id or str(uuid.uuid4())
    entry: dict[str, Any] = {"id": batch_id, "method": request.method.upper(), "url": request.url()}
    if request.body is not None:
        headers["Content-Type"] = "application/json"
        entry["body"] = request.body
    entry["headers"] = headers
    return entry


def _responses(body: Any) -> dict[str, _Entry]:
    """The batch answer's responses by lower-cased id (ids are not case-sensitive); odd ones skipped."""
    found: dict[str, _Entry] = {}
    responses = body.get("responses") if isinstance(body, dict) else None
    for response in responses if isinstance(responses, list) else []:
        if not isinstance(response, dict):
            continue
        batch_id, status = response.get("id"), response.get("status")
        if not isinstance(batch_id, str) or not isinstance(status, int) or isinstance(status, bool):
            continue
        raw_headers = response.get("headers")
        headers = (
            {str(k).lower(): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, dict) else {}
        )
        inner = response.get("body")
        content = b"" if inner is None else json.dumps(inner).encode("utf-8")
        found.setdefault(batch_id.lower(), _Entry(status, headers, content))
    return found


def _error_answer(
    item: _Item, status: int, headers: Mapping[str, str], content: bytes, request_id: str, error: GraphError
) -> BatchAnswer:
    return BatchAnswer(status, decode.parse_json(content), headers, request_id, item.attempts, error)


def _failed(item: _Item, exc: GraphError) -> BatchAnswer:
    return BatchAnswer(exc.status, None, {}, exc.request_id, item.attempts, exc)


def _tally(statuses: Sequence[int]) -> str:
    counts: dict[int, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{count}× {status}" for status, count in sorted(counts.items())) or "no responses"
