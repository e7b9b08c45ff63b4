"""The approval page: a case's card as a signed-in web page, for phones and proof of who decided.

``GET /approve/<case id>`` shows what the case card shows (who, why, the account, the alerts,
the request and its sign-offs) and the same choices, to people the policy makes responders or
approvers, signed in with Entra ID (:mod:`bot.graph.signin`). A form post goes through the very
use case a card click does (:meth:`RemediationService.handle_card_action`: the same policy,
compare-and-swap, audit and card update), with the sign-in as its proof of identity, so the
card and the page never disagree.

``GET /approve/bulk/<bulk request id>`` does the same for a campaign's bulk request (storm mode):
the action, how many identities, the privileged ones listed apart, the protected accounts left
out and the target set's SHA-256, with approve, reject and cancel running the campaign card's own
use case (:meth:`bot.services.campaigns.CampaignDesk.handle`); the approve form carries the hash
it showed, and a form naming another target set is refused.

Security, in the order a request meets it:

- every answer under ``/approve`` carries ``Content-Security-Policy`` (no script at all, the one
  style block by hash, ``frame-ancestors 'none'``, ``form-action 'self'``), ``X-Frame-Options:
  DENY``, ``Cache-Control: no-store``, ``Referrer-Policy: same-origin`` (so browsers send
  ``Origin`` with our own forms) and ``nosniff``;
- the session is a cookie (``__Host-`` prefix: ``Secure``, ``Path=/``, no domain; ``HttpOnly``;
  ``SameSite=Strict``) sealed with ``APPROVAL_PAGE_SESSION_KEY`` (Fernet: AES with an HMAC),
  valid for ``APPROVAL_PAGE_SESSION_MINUTES``, naming the person, their tenant and how they
  signed in; a sign-in in flight (msal's flow: PKCE verifier, state, nonce) is a second sealed
  cookie, ``SameSite=None`` so that it comes back with Entra ID's cross-site form post, for ten
  minutes; an answer is believed (an error shown, a code redeemed) only with that flow's ``state``;
- each session is also a claim in the store (expiring with it, shared by every replica): signing
  out releases it, so a copy of the cookie kept from before is refused;
- every form carries a CSRF token bound to the session (HMAC of its random id), and a post whose
  ``Origin`` is not the page's is refused;
- a visitor who is not signed in is sent to sign in before anything is looked up; a signed-in
  person gets the same 404 for "no such case" and "not yours to see" (neither responder nor
  approver);
- a form is read strictly (size, UTF-8, known fields once each, lengths) before anything runs:
  hostile input gets a precise 4xx and writes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken

from bot.domain.approval import MAX_REASON_CHARS
from bot.domain.authn import Authentication
from bot.domain.campaigns import BulkRequest, bulk_step_up
from bot.domain.models import ActionRequest, Actor, Case, CaseStatus, RequestState, ResponseAction
from bot.domain.plans import blocked, offered_actions
from bot.domain.policy import Policy, StepUp
from bot.errors import RemediationError
from bot.graph.signin import EntraSignIn, SignedIn, SignInError
from bot.services import RemediationService
from bot.store.base import Store
from cards.campaign import note_input_id
from cards.case import detection_label, format_time, request_headline
from cards.text import plain

log = logging.getLogger(__name__)

SESSION_COOKIE = "__Host-rb-approval"
FLOW_COOKIE = "__Host-rb-signin"
FLOW_SECONDS = 600
MAX_FORM_BYTES = 8 * 1024
CASE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")  # \Z: "$" would pass a trailing newline
DECISIONS = ("approve", "reject", "cancel", "retry")
DONE_VERBS = frozenset({*DECISIONS, *(a.value for a in ResponseAction)})
FORM_FIELDS = frozenset({"csrf", "verb", "request", "version", "reason"})
# A campaign's bulk request: its decisions, the campaign card's verbs for them, and the form's
# "request" field, the SHA-256 of the target set the person was shown.
BULK_DECISIONS = ("approve", "reject", "cancel")
BULK_VERBS = {"approve": "bulkApprove", "reject": "bulkReject", "cancel": "bulkCancel"}
TARGET_HASH = re.compile(r"^[0-9a-f]{64}\Z")
MAX_TARGETS_LISTED = 100

_STYLE = (
    "*{box-sizing:border-box}body{font:16px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;"
    "color:#1b1b1b;background:#f5f5f5}main{max-width:640px;margin:0 auto;padding:12px}"
    "section,header.case{background:#fff;border-radius:8px;padding:12px 14px;margin:0 0 12px;"
    "overflow-wrap:anywhere}header.case.high{border-left:6px solid #a4262c}"
    "header.case.medium{border-left:6px solid #8a5a00}.kicker{font-size:13px;font-weight:700;"
    "text-transform:uppercase;letter-spacing:.02em}.high .kicker{color:#a4262c}.medium .kicker{color:#8a5a00}"
    "h1{font-size:22px;margin:4px 0 0}.sub{color:#555;margin:0}.status{float:right;font-weight:700}"
    ".badge{display:block;margin-top:8px;padding:6px 8px;border-radius:6px;font-weight:600;"
    "background:#1b1b1b;color:#fff}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px;margin:0}"
    "dt{color:#555}dd{margin:0}ul{padding-left:18px;margin:6px 0}h2{font-size:17px;margin:0 0 6px}"
    ".note{border:2px solid #a4262c}.ok{border:2px solid #107c10}textarea{width:100%;min-height:72px;"
    "font:inherit;padding:8px}label{font-weight:600;display:block;margin-bottom:4px}"
    ".actions{display:flex;flex-wrap:wrap;gap:8px;margin-top:8px}button,a.button{font:inherit;"
    "padding:10px 14px;border-radius:6px;border:1px solid #1b1b1b;background:#fff;color:#1b1b1b;"
    "text-decoration:none;min-height:44px}button.primary,a.button{background:#0f6cbd;color:#fff;"
    "border-color:#0f6cbd}button.danger{background:#a4262c;color:#fff;border-color:#a4262c}"
    "footer{font-size:14px;color:#555;padding:0 4px 24px}footer form{display:inline}"
    "footer button{min-height:auto;padding:4px 8px}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class _Expired(Exception):
    """A sealed cookie that was genuine but is too old."""


class _Forged(Exception):
    """A cookie the bot did not seal (or sealed for another purpose)."""


class CookieSealer:
    """Seals small JSON values into cookies: encrypted and authenticated, with their age."""

    def __init__(self, secret: str) -> None:
        digest = hashlib.sha256(b"remediation-bot approval page cookies\x00" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self._csrf_key = hashlib.sha256(b"remediation-bot approval page csrf\x00" + secret.encode()).digest()

    def seal(self, purpose: str, value: Mapping[str, Any], now: datetime) -> str:
        """``value`` sealed for ``purpose`` at ``now``."""
        data = json.dumps({"purpose": purpose, **value}, separators=(",", ":")).encode()
        return self._fernet.encrypt_at_time(data, int(now.timestamp())).decode("ascii")

    def open(self, purpose: str, token: str, now: datetime, max_age: int) -> dict[str, Any]:
        """The value sealed for ``purpose``; raise _Expired or _Forged."""
        moment = int(now.timestamp())
        try:
            data = self._fernet.decrypt_at_time(token.encode("ascii"), max_age, moment)
        except (InvalidToken, UnicodeError, ValueError):
            try:
                # Genuine but old, or never ours?
                self._fernet.decrypt_at_time(token.encode("ascii"), 10 * 365 * 86400, moment)
            except (InvalidToken, UnicodeError, ValueError):
                raise _Forged from None
            raise _Expired from None
        try:
            value = json.loads(data)
        except ValueError:
            raise _Forged from None
        if not isinstance(value, dict) or value.get("purpose") != purpose:
            raise _Forged
        return value

    def csrf(self, session_id: str) -> str:
        """The CSRF token of the session ``session_id``."""
        return hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class PageSession:
    """A signed-in person on the page."""

    session_id: str
    object_id: str
    tenant_id: str
    name: str
    upn: str
    acrs: tuple[str, ...]
    amr: tuple[str, ...]
    auth_time: datetime | None

    @property
    def actor(self) -> Actor:
        """The person as the use cases know them (by Entra object id)."""
        return Actor(object_id=self.object_id, name=self.name or self.upn)

    @property
    def authentication(self) -> Authentication:
        """How they signed in, for the policy's step-up and the audit trail."""
        return Authentication(method="signin", acrs=self.acrs, amr=self.amr, auth_time=self.auth_time)

    def dump(self) -> dict[str, Any]:
        """The cookie's content."""
        return {
            "sid": self.session_id,
            "oid": self.object_id,
            "tid": self.tenant_id,
            "name": self.name,
            "upn": self.upn,
            "acrs": list(self.acrs),
            "amr": list(self.amr),
            "at": int(self.auth_time.timestamp()) if self.auth_time else None,
        }

    @classmethod
    def load(cls, value: Mapping[str, Any]) -> PageSession:
        """From the cookie's content (already authenticated by the seal)."""
        at = value.get("at")
        return cls(
            session_id=str(value["sid"]),
            object_id=str(value["oid"]),
            tenant_id=str(value["tid"]),
            name=str(value.get("name", "")),
            upn=str(value.get("upn", "")),
            acrs=tuple(str(v) for v in value.get("acrs", [])),
            amr=tuple(str(v) for v in value.get("amr", [])),
            auth_time=datetime.fromtimestamp(at, UTC) if isinstance(at, int) else None,
        )


class FormProblem(Exception):
    """A form the page refuses before anything runs."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _urlencoded(body: bytes) -> str:
    """An urlencoded body as text: ASCII only, every ``%`` an escape (browsers encode ``%``)."""
    text = body.decode("ascii")
    if _BAD_ESCAPE.search(text):
        # parse_qsl would keep "%zz" as it is; no browser sends it, so it is not a form of ours.
        raise ValueError("a % that is not an escape")
    return text


def read_form(body: bytes) -> dict[str, str]:
    """The fields of an urlencoded form, strictly: UTF-8, known fields once each, no NUL."""
    try:
        text = _urlencoded(body)
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), errors="strict", max_num_fields=10
        )
    except UnicodeError:
        raise FormProblem(400, "The form is not valid UTF-8; nothing was done.") from None
    except ValueError:
        raise FormProblem(400, "The form is malformed; nothing was done.") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name not in FORM_FIELDS:
            raise FormProblem(400, "The form has a field the page does not send; nothing was done.")
        if name in fields:
            raise FormProblem(400, f"The form repeats the field {name}; nothing was done.")
        if "\x00" in value:
            raise FormProblem(400, f"The field {name} holds a NUL character; nothing was done.")
        fields[name] = value
    return fields


CALLBACK_FIELDS = frozenset(
    {"code", "state", "error", "error_description", "error_uri", "session_state", "client_info"}
)


def _callback_fields(body: bytes) -> dict[str, str]:
    """Entra ID's form_post answer: the fields the flow reads, each once."""
    try:
        pairs = parse_qsl(_urlencoded(body), keep_blank_values=True, errors="strict", max_num_fields=20)
    except (UnicodeError, ValueError):
        raise FormProblem(400, "This sign-in answer is malformed.") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise FormProblem(400, "This sign-in answer repeats a field.")
        if name in CALLBACK_FIELDS:
            fields[name] = value
    return fields


ServiceGetter = Callable[[web.Request], RemediationService]
StoreGetter = Callable[[web.Request], Store]
SESSION_CLAIM = "approval-page-session:"


class ApprovalPage:
    """The routes under ``/approve``."""

    def __init__(
        self,
        *,
        service: ServiceGetter,
        store: StoreGetter,
        sign_in: EntraSignIn,
        policy: Policy,
        base_url: str,
        session_key: str,
        session_minutes: int,
        clock: Callable[[], datetime],
    ) -> None:
        """Serve the page at ``base_url``/approve, signing people in with ``sign_in``."""
        self._service = service
        self._store = store
        self._sign_in = sign_in
        self._policy = policy
        self._base = base_url.rstrip("/")
        self._origin = "{0.scheme}://{0.netloc}".format(urlsplit(self._base))
        self._sealer = CookieSealer(session_key)
        self._session_seconds = session_minutes * 60
        self._clock = clock

    async def aclose(self) -> None:
        """Release the sign-in's connections."""
        await self._sign_in.aclose()

    def routes(self) -> list[web.RouteDef]:
        """The page's routes (fixed paths before the case pattern)."""
        return [
            web.post("/approve/callback", self.callback),
            web.get("/approve/signin", self.start_sign_in),
            web.post("/approve/signout", self.sign_out),
            web.get("/approve/signed-out", self.signed_out),
            web.get("/approve/bulk/{bulk_id}", self.show_bulk),
            web.post("/approve/bulk/{bulk_id}", self.decide_bulk),
            web.get("/approve/{case_id}", self.show),
            web.post("/approve/{case_id}", self.decide),
        ]

    @web.middleware
    async def headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every answer under /approve (errors too) gets the page's security headers."""
        if request.path != "/approve" and not request.path.startswith("/approve/"):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = _page(
                "Not found" if exc.status == 404 else "Refused",
                f"<p>{html.escape(exc.reason)}</p>",
                exc.status,
            )
            if "Allow" in exc.headers:  # a 405 names the methods the path takes (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
        response.headers.update(SECURITY_HEADERS)
        return response

    # -- signing in and out -----------------------------------------------------------------

    async def start_sign_in(self, request: web.Request) -> web.StreamResponse:
        """``/approve/signin?case=<id>[&step_up=1]`` (or ``bulk=<id>``, a campaign's bulk
        request): off to Entra ID."""
        named = [kind for kind in ("case", "bulk") if kind in request.query]
        if len(named) != 1:
            return _message("Bad request", "That link names no case.", 400)
        kind = named[0]
        target = request.query.get(kind, "")
        if not CASE_ID.match(target):
            return _message("Bad request", "That link names no case.", 400)
        step_up = self._policy.step_up if request.query.get("step_up") == "1" else None
        return await self._to_entra(kind, target, step_up)

    async def _to_entra(self, kind: str, target: str, step_up: StepUp | None) -> web.StreamResponse:
        try:
            flow = await self._sign_in.begin(step_up=step_up)
        except Exception:
            log.exception("approval page: the sign-in could not start")
            return _message("Unavailable", "Signing in is not possible right now; try again.", 503)
        sealed = self._sealer.seal("flow", {"flow": flow, kind: target}, self._clock())
        response = _redirect(str(flow["auth_uri"]))
        # SameSite=None: Entra ID posts the answer back from its own site (form_post), and only a
        # cookie allowed on cross-site requests comes with it. It holds a sign-in in flight, sealed,
        # and the state in it must match the answer's.
        response.set_cookie(
            FLOW_COOKIE, sealed, max_age=FLOW_SECONDS, path="/", secure=True, httponly=True, samesite="None"
        )
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """Entra ID posts the person back here with a code (or an error)."""
        if request.content_type != "application/x-www-form-urlencoded":
            return _message("Refused", "This is not a sign-in answer.", 415)
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return _message("Refused", "This sign-in answer is too large.", 413)
        try:
            posted = _callback_fields(await self._body(request))
        except FormProblem as problem:
            return _message("Refused", problem.message, problem.status)
        sealed = request.cookies.get(FLOW_COOKIE, "")
        try:
            value = self._sealer.open("flow", sealed, self._clock(), FLOW_SECONDS)
        except (_Expired, _Forged):
            return _message(
                "Sign-in expired", "This sign-in is unknown or too old. Open the link again.", 400
            )
        flow = value.get("flow")
        kind = "bulk" if "bulk" in value else "case"
        case_id = value.get(kind)
        if not isinstance(flow, dict) or not isinstance(case_id, str) or not CASE_ID.match(case_id):
            return _message(
                "Sign-in expired", "This sign-in is unknown or too old. Open the link again.", 400
            )
        # The answer must carry this browser's sign-in's state before anything in it is believed
        # or shown, an error included: the flow cookie comes along on any site's POST (SameSite=None).
        if not hmac.compare_digest(posted.get("state", "").encode(), str(flow.get("state", "")).encode()):
            log.warning(
                "approval page: a sign-in answer without this sign-in's state, from %s", request.remote
            )
            return _message(
                "Refused", "This sign-in answer does not belong to your sign-in. Open the link again.", 400
            )
        try:
            person = await self._sign_in.complete(flow, posted)
        except SignInError as exc:
            log.warning("approval page: sign-in refused: %s", exc.message)
            answer = _message("Not signed in", exc.message, exc.status)
            _forget(answer, FLOW_COOKIE, "None")
            return answer
        session = _session_of(person)
        now = self._clock()
        try:
            # The session lives while its claim does: signing out releases it, on every replica.
            await self._store(request).claim_replay(
                SESSION_CLAIM + session.session_id,
                expires_at=now + timedelta(seconds=self._session_seconds),
                now=now,
            )
        except RemediationError as exc:
            log.error("approval page: a session could not be recorded: %s", exc.message)
            return _message("Unavailable", "The bot's store is unavailable; try again.", 503)
        log.info(
            "approval page: %s signed in (amr %s, acrs %s)",
            session.object_id,
            ",".join(session.amr),
            ",".join(session.acrs),
        )
        target = _target_path(kind, case_id)
        # A page, not a redirect: the session cookie is SameSite=Strict, and a browser sends it
        # only on a navigation that starts on our own site, not on Entra ID's redirect chain.
        answer = _page(
            "Signed in",
            f'<meta http-equiv="refresh" content="0;url={html.escape(target)}">'
            f'<section><p>Signed in. <a class="button" href="{html.escape(target)}">'
            f"Continue to the {'bulk request' if kind == 'bulk' else 'case'}</a></p></section>",
            200,
        )
        answer.set_cookie(
            SESSION_COOKIE,
            self._sealer.seal("session", session.dump(), self._clock()),
            max_age=self._session_seconds,
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        _forget(answer, FLOW_COOKIE, "None")
        return answer

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        """End the session (a form with the CSRF token): its claim released, its cookie deleted."""
        session = await self._session(request)
        if not isinstance(session, PageSession):
            return session
        refused = await self._check_post(request, session)
        if refused is not None:
            return refused
        try:
            fields = read_form(await self._body(request))
        except FormProblem as problem:
            return _message("Refused", problem.message, problem.status)
        if not hmac.compare_digest(fields.get("csrf", ""), self._sealer.csrf(session.session_id)):
            return _message("Refused", "This form is not from your session (CSRF); nothing was done.", 403)
        try:
            await self._store(request).release_replay(SESSION_CLAIM + session.session_id)
        except RemediationError as exc:
            log.error("approval page: a sign-out could not be recorded: %s", exc.message)
            return _message("Unavailable", "Signing out is not possible right now; try again.", 503)
        answer = _redirect("/approve/signed-out", 303)
        _forget(answer, SESSION_COOKIE, "Strict")
        return answer

    async def signed_out(self, request: web.Request) -> web.StreamResponse:
        """Where signing out ends."""
        return _message("Signed out", "You are signed out of the approval page.", 200)

    # -- the case ---------------------------------------------------------------------------

    async def show(self, request: web.Request) -> web.StreamResponse:
        """The case page; signed-out visitors are sent to sign in first."""
        case_id = request.match_info["case_id"]
        session = await self._session(request, sign_in_for=case_id)
        if not isinstance(session, PageSession):
            return session
        if not CASE_ID.match(case_id):
            return _not_found()
        done = request.query.get("done", "")
        note = _done(done) if done in DONE_VERBS else ""
        try:
            return await self._render(self._service(request), case_id, session, note=note, ok=bool(note))
        except RemediationError as exc:
            log.error("approval page: case %s could not be read: %s", case_id, exc.message)
            return _message("Unavailable", "The bot's store is unavailable; try again.", 503)

    async def decide(self, request: web.Request) -> web.StreamResponse:
        """A form on the page: the same use case as the card's button."""
        case_id = request.match_info["case_id"]
        form = await self._decision_form(request, case_id)
        if not isinstance(form, tuple):
            return form
        session, fields = form
        verb = fields.get("verb", "")
        if verb not in DECISIONS and verb not in {a.value for a in ResponseAction}:
            return _message("Refused", "Unknown action; nothing was done.", 400)
        version = fields.get("version", "")
        if not version.isascii() or not version.isdigit() or len(version) > 9:
            return _message("Refused", "The form names no card version; nothing was done.", 400)
        reason = fields.get("reason", "")
        try:
            service = self._service(request)
            case, _ = await self._visible(service, case_id, session)
            if case is None:
                return _not_found()
            data: dict[str, Any] = {"caseId": case.id, "cardVersion": int(version), "reason": reason}
            if verb in DECISIONS:
                request_id = fields.get("request", "")
                owned = await service.views.latest_request(case.id)
                if owned is None or owned.id != request_id:
                    return _message(
                        "Refused", "That request is not this case's current one; nothing was done.", 409
                    )
                data["requestId"] = request_id
            answer = await service.handle_card_action(session.actor, verb, data, via=session.authentication)
            if answer.error_status:
                return _message("Refused", answer.error_message, answer.error_status)
            if answer.refusal:
                return await self._render(
                    service,
                    case.id,
                    session,
                    note=answer.refusal,
                    status=409 if answer.stale else 403,
                    step_up=answer.step_up,
                )
            # Done: back to the page by GET, so reloading it never sends the form again.
            return _redirect(f"/approve/{quote(case.id, safe='')}?done={verb}", 303)
        except RemediationError as exc:
            log.error("approval page: %s on case %s failed: %s", verb, case_id, exc.message)
            return _message(
                "Unavailable", f"The bot could not complete that just now: {exc.message} Try again.", 503
            )

    async def _decision_form(
        self, request: web.Request, object_id: str
    ) -> tuple[PageSession, dict[str, str]] | web.StreamResponse:
        """The signed-in person and the fields of a decision form on the page of ``object_id`` (a
        case or a bulk request), or the answer refusing it: no session, a cross-site post, a
        malformed body, a CSRF token not of this session, an id of no sane shape, a reason too long.
        """
        session = await self._session(request)
        if not isinstance(session, PageSession):
            return session
        refused = await self._check_post(request, session)
        if refused is not None:
            return refused
        try:
            fields = read_form(await self._body(request))
        except FormProblem as problem:
            return _message("Refused", problem.message, problem.status)
        if not hmac.compare_digest(fields.get("csrf", ""), self._sealer.csrf(session.session_id)):
            return _message("Refused", "This form is not from your session (CSRF); nothing was done.", 403)
        if not CASE_ID.match(object_id):
            return _not_found()
        reason = fields.get("reason", "").strip()
        if len(reason) > MAX_REASON_CHARS:
            return _message(
                "Refused",
                f"The text is {len(reason):,} characters long; at most {MAX_REASON_CHARS}. Nothing was done.",
                400,
            )
        return session, fields

    # -- a campaign's bulk request ----------------------------------------------------------

    async def show_bulk(self, request: web.Request) -> web.StreamResponse:
        """A campaign's bulk request; signed-out visitors are sent to sign in first."""
        bulk_id = request.match_info["bulk_id"]
        session = await self._session(request, sign_in_for=bulk_id, kind="bulk")
        if not isinstance(session, PageSession):
            return session
        if not CASE_ID.match(bulk_id):
            return _not_found()
        done = request.query.get("done", "")
        note = _done(done) if done in BULK_DECISIONS else ""
        try:
            return await self._render_bulk(
                self._service(request), self._store(request), bulk_id, session, note=note, ok=bool(note)
            )
        except RemediationError as exc:
            log.error("approval page: bulk request %s could not be read: %s", bulk_id, exc.message)
            return _message("Unavailable", "The bot's store is unavailable; try again.", 503)

    async def decide_bulk(self, request: web.Request) -> web.StreamResponse:
        """A decision on a bulk request: the same use case as the campaign card's buttons."""
        bulk_id = request.match_info["bulk_id"]
        form = await self._decision_form(request, bulk_id)
        if not isinstance(form, tuple):
            return form
        session, fields = form
        verb = fields.get("verb", "")
        if verb not in BULK_DECISIONS:
            return _message("Refused", "Unknown action; nothing was done.", 400)
        if "version" in fields:
            return _message("Refused", "The form has a field the page does not send; nothing was done.", 400)
        shown = fields.get("request", "")
        if not TARGET_HASH.match(shown):
            return _message("Refused", "The form names no target set; nothing was done.", 400)
        note = fields.get("reason", "")
        try:
            service = self._service(request)
            bulk = await self._visible_bulk(service, self._store(request), bulk_id, session)
            if bulk is None:
                return _not_found()
            if not hmac.compare_digest(shown, bulk.target_hash):
                return _message(
                    "Refused", "That is not this bulk request's target set; nothing was done.", 409
                )
            data = {"bulkId": bulk.id, note_input_id(bulk.id): note}
            answer = await service.handle_card_action(
                session.actor, BULK_VERBS[verb], data, via=session.authentication
            )
            if answer.error_status:
                return _message("Refused", answer.error_message, answer.error_status)
            if answer.refusal:
                return await self._render_bulk(
                    service,
                    self._store(request),
                    bulk.id,
                    session,
                    note=answer.refusal,
                    status=403,
                    step_up=answer.step_up,
                )
            # Done: back to the page by GET, so reloading it never sends the form again.
            return _redirect(f"{_target_path('bulk', bulk.id)}?done={verb}", 303)
        except RemediationError as exc:
            log.error("approval page: %s on bulk request %s failed: %s", verb, bulk_id, exc.message)
            return _message(
                "Unavailable", f"The bot could not complete that just now: {exc.message} Try again.", 503
            )

    async def _visible_bulk(
        self, service: RemediationService, store: Store, bulk_id: str, session: PageSession
    ) -> BulkRequest | None:
        """The bulk request if the person may see it (a responder or an approver), else None."""
        roles = await service.roles_of(session.object_id)
        if not (roles.responder or roles.approver):
            return None
        return await store.get_bulk(bulk_id)

    async def _render_bulk(
        self,
        service: RemediationService,
        store: Store,
        bulk_id: str,
        session: PageSession,
        *,
        note: str = "",
        ok: bool = False,
        status: int = 200,
        step_up: StepUp | None = None,
    ) -> web.StreamResponse:
        roles = await service.roles_of(session.object_id)
        if not (roles.responder or roles.approver):
            return _not_found()
        bulk = await store.get_bulk(bulk_id)
        if bulk is None:
            return _not_found()
        body = _bulk_html(
            bulk,
            session,
            approver=roles.approver,
            csrf=self._sealer.csrf(session.session_id),
            policy=self._policy,
            now=self._clock(),
            note=note,
            ok=ok,
            step_up=step_up,
        )
        return _page(f"Bulk {bulk.action.label.lower()} · approval", body, status)

    # -- pieces -------------------------------------------------------------------------------

    async def _session(
        self, request: web.Request, *, sign_in_for: str = "", kind: str = "case"
    ) -> PageSession | web.StreamResponse:
        sealed = request.cookies.get(SESSION_COOKIE)
        if not sealed:
            if sign_in_for and CASE_ID.match(sign_in_for):
                return _redirect(_sign_in_link(kind, sign_in_for))
            return _message("Sign in first", "You are not signed in; open the link from the card again.", 401)
        try:
            session = PageSession.load(
                self._sealer.open("session", sealed, self._clock(), self._session_seconds)
            )
        except _Expired:
            if sign_in_for and CASE_ID.match(sign_in_for):
                return _redirect(_sign_in_link(kind, sign_in_for))
            return _message(
                "Session expired", "Your session has expired: sign in again. Nothing was done.", 401
            )
        except (_Forged, KeyError, TypeError, ValueError):
            log.warning("approval page: a session cookie the bot did not issue, from %s", request.remote)
            answer = _message(
                "Refused", "Your session cookie is not valid; sign in again. Nothing was done.", 401
            )
            _forget(answer, SESSION_COOKIE, "Strict")
            return answer
        if session.tenant_id != self._sign_in.tenant_id:
            # Sealed by us, yet naming another tenant: never (a key shared with another bot?).
            log.warning("approval page: a session of tenant %s refused", session.tenant_id)
            answer = _message("Refused", "Your session is not of this organisation. Nothing was done.", 401)
            _forget(answer, SESSION_COOKIE, "Strict")
            return answer
        try:
            live = await self._store(request).replay_claimed(
                SESSION_CLAIM + session.session_id, now=self._clock()
            )
        except RemediationError as exc:
            log.error("approval page: a session could not be checked: %s", exc.message)
            return _message("Unavailable", "The bot's store is unavailable; try again.", 503)
        if not live:
            # Signed out (a copy of the cookie kept after signing out is worth nothing).
            if sign_in_for and CASE_ID.match(sign_in_for):
                return _redirect(_sign_in_link(kind, sign_in_for))
            answer = _message("Signed out", "This session has ended: sign in again. Nothing was done.", 401)
            _forget(answer, SESSION_COOKIE, "Strict")
            return answer
        return session

    async def _check_post(self, request: web.Request, session: PageSession) -> web.StreamResponse | None:
        origin = request.headers.get("Origin")
        if origin is not None and origin != self._origin:
            return _message("Refused", "This form was sent from another site; nothing was done.", 403)
        if request.content_type != "application/x-www-form-urlencoded":
            return _message("Refused", "Send the page's form as it is; nothing was done.", 415)
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return _message(
                "Refused", f"The form is larger than {MAX_FORM_BYTES} bytes; nothing was done.", 413
            )
        return None

    async def _body(self, request: web.Request) -> bytes:
        body = bytearray()
        async for chunk in request.content.iter_chunked(4096):
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise FormProblem(413, f"The form is larger than {MAX_FORM_BYTES} bytes; nothing was done.")
        return bytes(body)

    async def _visible(
        self, service: RemediationService, case_id: str, session: PageSession
    ) -> tuple[Case | None, tuple[bool, bool]]:
        """The case if the person may see it (a responder or an approver), else None."""
        roles = await service.roles_of(session.object_id)
        if not (roles.responder or roles.approver):
            return None, (False, False)
        case = await service.views.find_case(case_id)
        return case, (roles.responder, roles.approver)

    async def _render(
        self,
        service: RemediationService,
        case_id: str,
        session: PageSession,
        *,
        note: str = "",
        ok: bool = False,
        status: int = 200,
        step_up: StepUp | None = None,
    ) -> web.StreamResponse:
        case, (responder, approver) = await self._visible(service, case_id, session)
        if case is None:
            return _not_found()
        latest = await service.views.latest_request(case.id)
        body = _case_html(
            case,
            latest,
            session,
            responder=responder,
            approver=approver,
            csrf=self._sealer.csrf(session.session_id),
            policy=self._policy,
            now=self._clock(),
            note=note,
            ok=ok,
            step_up=step_up,
        )
        return _page(f"{case.identity.display_name or 'Case'} · approval", body, status)


def _session_of(person: SignedIn) -> PageSession:
    return PageSession(
        session_id=secrets.token_urlsafe(24),
        object_id=person.object_id,
        tenant_id=person.tenant_id,
        name=person.name,
        upn=person.upn,
        acrs=person.acrs,
        amr=person.amr,
        auth_time=person.auth_time,
    )


def _target_path(kind: str, target_id: str) -> str:
    """The page of a case (``kind`` "case") or of a campaign's bulk request ("bulk")."""
    prefix = "/approve/bulk/" if kind == "bulk" else "/approve/"
    return prefix + quote(target_id, safe="")


def _sign_in_link(kind: str, target_id: str, *, step_up: bool = False) -> str:
    """Where signing in for that page starts (``step_up``: asking for the policy's context)."""
    link = f"/approve/signin?{kind}={quote(target_id, safe='')}"
    return link + "&step_up=1" if step_up else link


def _done(verb: str) -> str:
    return {
        "approve": "Your approval is recorded.",
        "reject": "The request is rejected.",
        "cancel": "The request is cancelled.",
        "retry": "The action is being retried.",
    }.get(verb, "Your request is recorded.")


# -- HTML ---------------------------------------------------------------------------------------


def _e(value: object, limit: int = 200) -> str:
    """Untrusted text as inert HTML: one line, cut, defanged (cards.text.plain), escaped."""
    return html.escape(plain(value, limit), quote=True)


def _forget(response: web.StreamResponse, name: str, samesite: str) -> None:
    """Delete a cookie; a ``__Host-`` cookie is only replaced by one that is ``Secure`` too."""
    response.del_cookie(name, path="/", secure=True, httponly=True, samesite=samesite)


def _redirect(location: str, status: int = 302) -> web.Response:
    return web.Response(status=status, headers={"Location": location, **SECURITY_HEADERS})


def _page(title: str, body: str, status: int) -> web.Response:
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="same-origin">'
        f"<title>{_e(title, 120)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return web.Response(text=document, status=status, content_type="text/html", headers=SECURITY_HEADERS)


def _message(title: str, text: str, status: int) -> web.Response:
    return _page(title, f"<section><h2>{html.escape(title)}</h2><p>{_e(text, 600)}</p></section>", status)


def _not_found() -> web.Response:
    # One answer for "no such case" and "not yours to see".
    return _message("Not found", "There is nothing here for you. Check the link, or ask who sent it.", 404)


def _case_html(
    case: Case,
    request: ActionRequest | None,
    session: PageSession,
    *,
    responder: bool,
    approver: bool,
    csrf: str,
    policy: Policy,
    now: datetime,
    note: str,
    ok: bool,
    step_up: StepUp | None,
) -> str:
    # Phone first: who and why, the request, the choices; the details below.
    parts = [_header_html(case), _account_html(case), _alerts_html(case)]
    if request is not None:
        parts.append(_request_html(request))
    if note:
        parts.append(
            f'<section class="{"ok" if ok else "note"}" role="alert"><p>{_e(note, 600)}</p></section>'
        )
    auth = session.authentication
    needed = step_up or _step_up_needed(
        case, request, policy, auth, now, responder=responder, approver=approver
    )
    if needed is not None:
        minutes = int(needed.max_age.total_seconds() // 60)
        link = _sign_in_link("case", case.id, step_up=True)
        parts.append(
            '<section class="note"><h2>Fresh sign-in needed</h2>'
            f"<p>Deciding on this needs a sign-in with MFA from the last {minutes} minutes. "
            "Your current sign-in does not provide it.</p>"
            f'<p><a class="button" href="{html.escape(link)}">Sign in again with MFA</a></p></section>'
        )
    parts += _forms_html(case, request, session, responder=responder, approver=approver, csrf=csrf)
    parts.append(_facts_html(case))
    parts.append(_footer_html(session, csrf))
    return "".join(parts)


def _footer_html(session: PageSession, csrf: str) -> str:
    how = "with MFA" if "mfa" in session.amr else "with a password only"
    contexts = f", authentication context {', '.join(_e(a, 8) for a in session.acrs)}" if session.acrs else ""
    when = format_time(session.auth_time) if session.auth_time else "unknown"
    return (
        f"<footer><p>Signed in as {_e(session.name or session.upn, 120)} ({_e(session.upn, 120)}) {how}"
        f"{contexts} at {when}. "
        '<form method="post" action="/approve/signout">'
        f'<input type="hidden" name="csrf" value="{csrf}">'
        '<button type="submit">Sign out</button></form></p></footer>'
    )


def _step_up_needed(
    case: Case,
    request: ActionRequest | None,
    policy: Policy,
    auth: Authentication,
    now: datetime,
    *,
    responder: bool,
    approver: bool,
) -> StepUp | None:
    step_up: StepUp | None = None
    if request is not None and request.state is RequestState.PENDING and approver:
        step_up = policy.step_up_for(request.action, privileged_target=bool(request.privileged_reason))
    elif (request is None or request.state.is_final) and responder and approver:
        # Opening a request needs it when the requester's own sign-off lets the action run.
        privileged = bool(case.privileged_reason)
        for action in offered_actions(case):
            if policy.approvals_for(action, privileged_target=privileged) <= 1:
                step_up = step_up or policy.step_up_for(action, privileged_target=privileged)
    if step_up is not None and not auth.satisfies(step_up, now):
        return step_up
    return None


def _header_html(case: Case) -> str:
    identity = case.identity
    severity = case.severity.value
    status = "Contained" if case.status is CaseStatus.CONTAINED else "Open"
    badges = []
    why_not = blocked(case)
    if why_not:
        badges.append(_e(why_not, 500))
    if case.protected:
        badges.append("Protected account: the bot never acts on it. Use your break-glass procedure.")
    if case.privileged_reason:
        badges.append(f"Privileged: {_e(case.privileged_reason)}. Every action needs two approvers.")
    return (
        f'<header class="case {html.escape(severity)}"><span class="status">{status}</span>'
        f'<div class="kicker">{html.escape(severity.upper())} · Compromised identity</div>'
        f"<h1>{_e(identity.display_name or identity.upn or 'Unknown user', 120)}</h1>"
        f'<p class="sub">{_e(identity.upn or identity.object_id, 120)}</p>'
        + "".join(f'<span class="badge">{b}</span>' for b in badges)
        + "</header>"
    )


def _account_html(case: Case) -> str:
    account = case.account
    if account.enabled is None:
        state = "Not read yet"
    else:
        where = "synced from on-premises AD" if case.facts.synced else "cloud-only"
        enabled = "Enabled" if account.enabled else "Disabled"
        state = f"{enabled}, {where} (read back {format_time(account.checked_at)})"
    return f"<section><dl><dt>Account</dt><dd>{_e(state)}</dd></dl></section>"


def _facts_html(case: Case) -> str:
    rows = [("Severity", html.escape(case.severity.value.capitalize()))]
    facts = case.facts
    if facts.risk_state and facts.risk_state != "none":
        level = f" ({_e(facts.risk_level, 40)})" if facts.risk_level and facts.risk_level != "none" else ""
        rows.append(("User risk", f"{_e(facts.risk_state, 40)}{level}"))
    for signal in facts.signals[:3]:
        where = " · ".join(_e(p, 80) for p in (signal.ip_address, signal.location) if p)
        origin = f" from {where}" if where else ""
        detected = _e(detection_label(signal.detection), 80)
        rows.append(("Sign-in risk", f"{detected}{origin} ({format_time(signal.detected_at)})"))
    sources = sorted(
        {a.source.label for a in case.alerts}
        | {detection_label(a.detection_source) for a in case.alerts if a.detection_source}
    )
    rows += [
        ("Detected by", _e(", ".join(sources) or "none")),
        ("First seen", format_time(case.first_seen)),
        ("Last seen", format_time(case.last_seen)),
        ("Case", _e(case.id, 64)),
    ]
    return "<section><dl>" + "".join(f"<dt>{t}</dt><dd>{v}</dd>" for t, v in rows) + "</dl></section>"


def _alerts_html(case: Case) -> str:
    newest = sorted(case.alerts, key=lambda a: (a.updated_at, a.id), reverse=True)
    items = []
    for alert in newest[:5]:
        techniques = f" · {_e(', '.join(alert.techniques), 120)}" if alert.techniques else ""
        items.append(
            f"<li><strong>{_e(alert.title) or '(untitled alert)'}</strong> — "
            f"{html.escape(alert.severity.value)} · "
            f"{html.escape(alert.source.label)} · {format_time(alert.created_at)}{techniques}</li>"
        )
    more = len(case.alerts) - len(items)
    tail = f"<p>… and {more} more in Defender</p>" if more > 0 else ""
    count = len(case.alerts)
    plural = "s" if count != 1 else ""
    return f"<section><h2>Why: {count} alert{plural}</h2><ul>{''.join(items)}</ul>{tail}</section>"


def _request_html(request: ActionRequest) -> str:
    reason = f": “{_e(request.reason, 500)}”" if request.reason else ""
    rows = [
        (
            "Sign-offs",
            f"{len(request.approvals)} of {request.required_approvals}: "
            + (_e(", ".join(a.label for a in request.approvals), 300) or "nobody yet"),
        )
    ]
    if request.state in (RequestState.PENDING, RequestState.APPROVED):
        rows.append(("Who can approve", f"an approver other than {_e(request.requester.label, 120)}"))
        rows.append(("Expires", format_time(request.expires_at)))
    if request.privileged_reason:
        rows.append(("Why two", _e(request.privileged_reason)))
    if request.decision_note:
        rows.append(("Note", _e(request.decision_note, 500)))
    result = ""
    if request.result is not None:
        result = f"<p>{_e(request.result.summary, 500)}</p>"
        if request.result.verified_state:
            verified_at = format_time(request.result.verified_at)
            result += f"<p>Verified: {_e(request.result.verified_state)} at {verified_at}</p>"
    return (
        f"<section><h2>{html.escape(request_headline(request))}</h2>"
        f"<p>Requested by {_e(request.requester.label, 120)} at {format_time(request.created_at)}{reason}</p>"
        "<dl>" + "".join(f"<dt>{t}</dt><dd>{v}</dd>" for t, v in rows) + f"</dl>{result}</section>"
    )


def _forms_html(
    case: Case,
    request: ActionRequest | None,
    session: PageSession,
    *,
    responder: bool,
    approver: bool,
    csrf: str,
) -> list[str]:
    action_url = f"/approve/{quote(case.id, safe='')}"

    def form(inner: str, request_id: str = "") -> str:
        hidden = (
            f'<input type="hidden" name="csrf" value="{csrf}">'
            f'<input type="hidden" name="version" value="{case.revision}">'
        )
        if request_id:
            hidden += f'<input type="hidden" name="request" value="{html.escape(request_id)}">'
        opening = f'<form method="post" action="{html.escape(action_url)}">'
        return f"<section>{opening}{hidden}{inner}</form></section>"

    forms = []
    actor = session.actor
    if (
        request is not None
        and request.state in (RequestState.PENDING, RequestState.APPROVED)
        and not blocked(case)
    ):
        is_requester = actor.same_person(request.requester)
        if request.state is RequestState.PENDING and approver and not is_requester:
            forms.append(
                form(
                    '<label for="note">Note (optional, recorded with your decision)</label>'
                    f'<textarea id="note" name="reason" maxlength="{MAX_REASON_CHARS}"></textarea>'
                    '<div class="actions">'
                    '<button class="primary" type="submit" name="verb" value="approve">Approve</button>'
                    '<button class="danger" type="submit" name="verb" value="reject">Reject</button></div>',
                    request.id,
                )
            )
        if is_requester:
            forms.append(
                form(
                    '<div class="actions">'
                    '<button type="submit" name="verb" value="cancel">Cancel request</button></div>',
                    request.id,
                )
            )
        if not forms:
            forms.append(
                "<section><p>Only approvers other than the requester can approve or reject "
                "this request.</p></section>"
            )
    if (
        request is not None
        and request.state is RequestState.FAILED
        and request.started_at is not None
        and (approver or actor.same_person(request.requester))
        and not blocked(case)
    ):
        forms.append(
            form(
                f'<div class="actions"><button class="primary" type="submit" name="verb" value="retry">'
                f"Retry {html.escape(request.action.label.lower())}</button></div>",
                request.id,
            )
        )
    offered = offered_actions(case)
    if responder and offered and (request is None or request.state.is_final):
        buttons = "".join(
            f'<button class="{"danger" if action is ResponseAction.DISABLE_ACCOUNT else ""}" type="submit" '
            f'name="verb" value="{action.value}">{html.escape(action.label)}</button>'
            for action in offered
        )
        forms.append(
            form(
                '<label for="reason">Reason (recorded in the audit log)</label>'
                f'<textarea id="reason" name="reason" maxlength="{MAX_REASON_CHARS}" required '
                'placeholder="e.g. Pass-the-ticket from an unknown host; containing until reviewed">'
                "</textarea>"
                f'<div class="actions">{buttons}</div>'
            )
        )
    return forms


def _bulk_html(
    bulk: BulkRequest,
    session: PageSession,
    *,
    approver: bool,
    csrf: str,
    policy: Policy,
    now: datetime,
    note: str,
    ok: bool,
    step_up: StepUp | None,
) -> str:
    """A campaign's bulk request as the approver sees it: the action, the counts, the privileged
    targets listed apart, the protected accounts left out, the target set's hash; the choices."""
    approval = bulk.approval
    done, failed, pending = bulk.tally()
    privileged = bulk.privileged
    header = (
        '<header class="case high"><div class="kicker">STORM · Bulk request</div>'
        f"<h1>{html.escape(bulk.action.label)}: {len(bulk.targets)} identities</h1>"
        f'<p class="sub">{_e(bulk.scope_label, 200)}</p>'
        + (
            f'<span class="badge">Privileged: {len(privileged)} of the identities hold an admin role.</span>'
            if privileged
            else ""
        )
        + "</header>"
    )
    reason = f": “{_e(approval.reason, 500)}”" if approval.reason else ""
    rows = [
        ("Action", html.escape(bulk.action.label)),
        ("Identities", f"{len(bulk.targets)} ({len(privileged)} privileged)"),
        ("Left out (protected)", str(len(bulk.protected))),
        ("Target set SHA-256", f"<code>{html.escape(bulk.target_hash)}</code>"),
        (
            "Sign-offs",
            f"{len(approval.approvals)} of {approval.required_approvals}: "
            + (_e(", ".join(a.label for a in approval.approvals), 300) or "nobody yet"),
        ),
    ]
    if bulk.state in (RequestState.PENDING, RequestState.APPROVED):
        rows.append(("Who can approve", f"approvers other than {_e(approval.requester.label, 120)}"))
        rows.append(("Expires", format_time(approval.expires_at)))
    if bulk.outcomes:
        rows.append(("Progress", f"{done} done · {failed} failed · {pending} pending verification"))
    if approval.decision_note:
        rows.append(("Note", _e(approval.decision_note, 500)))
    parts = [
        header,
        f"<section><h2>{html.escape(request_headline(approval))}</h2>"
        f"<p>Requested by {_e(approval.requester.label, 120)} at "
        f"{format_time(approval.created_at)}{reason}</p>"
        "<dl>" + "".join(f"<dt>{t}</dt><dd>{v}</dd>" for t, v in rows) + "</dl></section>",
    ]
    if privileged:
        parts.append(
            f"<section><h2>Privileged identities ({len(privileged)})</h2><ul>"
            + "".join(
                f"<li>{_e(t.upn or t.label, 120)} — {_e(t.privileged_reason, 120)}</li>"
                for t in privileged[:MAX_TARGETS_LISTED]
            )
            + "</ul></section>"
        )
    if bulk.protected:
        parts.append(
            f"<section><h2>Left out: protected ({len(bulk.protected)})</h2>"
            "<p>The bot never acts on these accounts.</p><ul>"
            + "".join(f"<li>{_e(label, 160)}</li>" for label in bulk.protected[:MAX_TARGETS_LISTED])
            + "</ul></section>"
        )
    if note:
        parts.append(
            f'<section class="{"ok" if ok else "note"}" role="alert"><p>{_e(note, 600)}</p></section>'
        )
    actor = session.actor
    is_requester = actor.same_person(approval.requester)
    deciding = bulk.state is RequestState.PENDING and approver and not is_requester
    needed = step_up
    if needed is None and deciding:
        rule = bulk_step_up(policy, bulk)
        if rule is not None and not session.authentication.satisfies(rule, now):
            needed = rule
    if needed is not None:
        minutes = int(needed.max_age.total_seconds() // 60)
        link = _sign_in_link("bulk", bulk.id, step_up=True)
        parts.append(
            '<section class="note"><h2>Fresh sign-in needed</h2>'
            f"<p>Deciding on this needs a sign-in with MFA from the last {minutes} minutes. "
            "Your current sign-in does not provide it.</p>"
            f'<p><a class="button" href="{html.escape(link)}">Sign in again with MFA</a></p></section>'
        )

    def form(inner: str) -> str:
        return (
            f'<section><form method="post" action="{html.escape(_target_path("bulk", bulk.id))}">'
            f'<input type="hidden" name="csrf" value="{csrf}">'
            f'<input type="hidden" name="request" value="{html.escape(bulk.target_hash)}">'
            f"{inner}</form></section>"
        )

    if deciding:
        parts.append(
            form(
                '<label for="note">Note (optional, recorded with your decision)</label>'
                f'<textarea id="note" name="reason" maxlength="{MAX_REASON_CHARS}"></textarea>'
                '<div class="actions">'
                '<button class="primary" type="submit" name="verb" value="approve">'
                "Approve bulk action</button>"
                '<button class="danger" type="submit" name="verb" value="reject">Reject</button></div>'
            )
        )
    if is_requester and bulk.state in (RequestState.PENDING, RequestState.APPROVED):
        parts.append(
            form(
                '<div class="actions">'
                '<button type="submit" name="verb" value="cancel">Cancel bulk request</button></div>'
            )
        )
    elif bulk.state is RequestState.PENDING and not deciding:
        parts.append(
            "<section><p>Only approvers other than the requester can approve or reject "
            "this bulk request.</p></section>"
        )
    others = [t for t in bulk.targets if not t.privileged_reason]
    if others:
        shown = others[:MAX_TARGETS_LISTED]
        hidden = len(others) - len(shown)
        more = f"<p>… and {hidden} more (see the audit log)</p>" if hidden else ""
        parts.append(
            f"<section><details><summary>The other identities ({len(others)})</summary><ul>"
            + "".join(f"<li>{_e(t.upn or t.label, 120)}</li>" for t in shown)
            + f"</ul>{more}</details></section>"
        )
    parts.append(_footer_html(session, csrf))
    return "".join(parts)
