"""The push intake (``POST /api/alerts``): authenticate, parse and validate pushed alerts.

Sentinel automation, Logic Apps or any SOAR can push alerts instead of waiting for the poll. A
request is authenticated with an HMAC-SHA256 signature over ``<timestamp>.<raw body>`` under a
shared secret, inside a replay window; the body is one Graph security alert, a batch of them
(``{"value": [...]}`` or a JSON array), or a minimal form. Everything is validated before
anything is stored, so a bad item rejects the whole request with the list of field errors.

A signed request is accepted once: :meth:`PushAuthenticator.replay_claim` names the record the
endpoint claims in the store (shared by every replica) before storing the alerts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.domain.models import Alert, AlertSource, IdentityRef, Severity
from bot.tenant.intake import parse_graph_alert, parse_time

SIGNATURE_HEADER = "X-Remediation-Signature"
TIMESTAMP_HEADER = "X-Remediation-Timestamp"
REPLAY_WINDOW_SECONDS = 300
MAX_BODY_BYTES = 1024 * 1024
MAX_ITEMS = 500
MAX_ERRORS = 200


@dataclass(frozen=True)
class Rejection:
    """Why a push was refused: an HTTP status and what to tell the sender."""

    status: int
    message: str
    errors: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class ReplayClaim:
    """The record that marks one signed request as received: its key and when it may be forgotten."""

    key: str
    expires_at: datetime


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value a sender computes (documented in the README)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass
class PushAuthenticator:
    """Checks signatures and the time window; names the replay record of an authentic request."""

    secret: str
    window: int = REPLAY_WINDOW_SECONDS
    now: Callable[[], float] = time.time

    def check(self, headers: Mapping[str, str], body: bytes) -> Rejection | None:
        """``None`` when the request is authentic and inside the window, else a 401 rejection."""
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not timestamp or not signature:
            return Rejection(401, f"Sign the request: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}.")
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            return Rejection(401, f"{TIMESTAMP_HEADER} must be Unix seconds.")
        if abs(self.now() - int(timestamp)) > self.window:
            return Rejection(401, f"The signature timestamp is outside the {self.window} s window.")
        if not signature.isascii() or not hmac.compare_digest(sign(self.secret, timestamp, body), signature):
            return Rejection(401, "The signature does not match the body.")
        return None

    def replay_claim(self, headers: Mapping[str, str]) -> ReplayClaim:
        """The replay record of a request :meth:`check` accepted.

        Keyed by the signature (one per timestamp and body), kept until well after the window
        has closed for the request's timestamp: by then every replica refuses it as stale anyway.
        """
        signature = headers.get(SIGNATURE_HEADER, "")
        digest = hashlib.sha256(signature.encode()).hexdigest()
        expires = int(headers.get(TIMESTAMP_HEADER, "0")) + 2 * self.window
        return ReplayClaim(key=f"push:{digest}", expires_at=datetime.fromtimestamp(expires, UTC))


def parse_push(data: Any, *, now: Callable[[], datetime]) -> list[Alert] | Rejection:
    """Every alert in the parsed body, or a 400 listing each field error (nothing partial).

    ``data`` is the body as :func:`bot.web.jsonguard.load_json` read it. Every field the bot reads is
    checked for its type before anything else looks at it, so a wrong type is a field error
    naming the field, never a crash later on.
    """
    items: Any
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict) and isinstance(data.get("value"), list):
        items = data["value"]
    elif isinstance(data, dict):
        items = [data]
    else:
        return Rejection(400, 'Send one alert object, a JSON array of them, or {"value": [...]}.')
    if not items:
        return Rejection(400, "The request holds no alerts.")
    if len(items) > MAX_ITEMS:
        return Rejection(413, f"At most {MAX_ITEMS} alerts per request; split the batch.")
    alerts: list[Alert] = []
    errors: list[dict[str, str]] = []
    batch = isinstance(data, list) or "value" in data
    for index, item in enumerate(items):
        where = f"[{index}]" if batch else ""
        parsed = _parse_item(item, now)
        if isinstance(parsed, Alert):
            alerts.append(parsed)
        else:
            errors += [{"field": f"{where}{name}".lstrip("."), "error": problem} for name, problem in parsed]
    if errors:
        message = "Some alerts are not valid; nothing was stored."
        if len(errors) > MAX_ERRORS:
            message += f" The first {MAX_ERRORS} of {len(errors)} field errors are listed."
        return Rejection(400, message, tuple(errors[:MAX_ERRORS]))
    return alerts


Problems = list[tuple[str, str]]

MAX_ID_LENGTH = 256
"""Alert ids, object ids and UPNs longer than this are refused (Entra UPNs stop at 113)."""

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_USER_EVIDENCE = "#microsoft.graph.security.userEvidence"
_SEVERITIES = ", ".join(s.value for s in Severity if s is not Severity.UNKNOWN)


def _kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for a field error."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _text(
    obj: dict[str, Any], name: str, path: str, problems: Problems, *, required: bool = False
) -> str | None:
    """``obj[name]`` when it is a string (or absent/null and optional), else a field error."""
    value = obj.get(name)
    field = f"{path}.{name}"
    if value is None or (required and isinstance(value, str) and not value.strip()):
        if required:
            problems.append((field, "is required (a non-empty string)"))
        return None
    if not isinstance(value, str):
        problems.append((field, f"must be a string, not {_kind(value)}"))
        return None
    return value


def _identifier(
    obj: dict[str, Any], name: str, path: str, problems: Problems, *, required: bool = False
) -> str | None:
    """A string that keys stored rows: bounded, one line, no control characters."""
    count = len(problems)
    value = _text(obj, name, path, problems, required=required)
    if value is None or len(problems) > count:
        return None
    value = value.strip()
    if len(value) > MAX_ID_LENGTH:
        problems.append((f"{path}.{name}", f"must be at most {MAX_ID_LENGTH} characters"))
        return None
    if _CONTROL.search(value):
        problems.append((f"{path}.{name}", "must not contain control characters"))
        return None
    return value or None


def _object_id(obj: dict[str, Any], name: str, path: str, problems: Problems) -> str | None:
    value = _identifier(obj, name, path, problems)
    if value is not None and not _GUID.fullmatch(value):
        problems.append((f"{path}.{name}", "must be an Entra object id (a GUID)"))
        return None
    return value


def _upn(obj: dict[str, Any], name: str, path: str, problems: Problems) -> str | None:
    value = _identifier(obj, name, path, problems)
    if value is not None and ("@" not in value or any(c.isspace() for c in value)):
        problems.append((f"{path}.{name}", "must be a user principal name (name@domain, no spaces)"))
        return None
    return value


def _time(
    obj: dict[str, Any], name: str, path: str, problems: Problems, *, required: bool = False
) -> datetime | None:
    count = len(problems)
    value = _text(obj, name, path, problems, required=required)
    if not value or len(problems) > count:
        return None
    parsed = parse_time(value)
    if parsed is None:
        problems.append((f"{path}.{name}", "must be an ISO 8601 time"))
    return parsed


def _object(obj: dict[str, Any], name: str, path: str, problems: Problems) -> dict[str, Any] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append((f"{path}.{name}", f"must be an object, not {_kind(value)}"))
        return None
    return value


def _strings(obj: dict[str, Any], name: str, path: str, problems: Problems) -> list[str]:
    value = obj.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append((f"{path}.{name}", "must be an array of strings"))
        return []
    return value


def _parse_item(item: Any, now: Callable[[], datetime]) -> Alert | Problems:
    if not isinstance(item, dict):
        return [("", f"must be an object, not {_kind(item)}")]
    if "evidence" in item or "serviceSource" in item:
        return _graph_alert(item)
    return _minimal(item, now)


def _graph_alert(item: dict[str, Any]) -> Alert | Problems:
    """A Graph ``alerts_v2`` alert: every field ``parse_graph_alert`` reads, type-checked first."""
    problems: Problems = []
    _identifier(item, "id", "", problems, required=True)
    _text(item, "title", "", problems, required=True)
    _time(item, "createdDateTime", "", problems, required=True)
    for name in ("lastUpdateDateTime", "firstActivityDateTime", "lastActivityDateTime"):
        _time(item, name, "", problems)
    for name in ("severity", "status", "alertWebUrl", "detectionSource"):
        _text(item, name, "", problems)
    _strings(item, "mitreTechniques", "", problems)
    _strings(item, "systemTags", "", problems)
    source = item.get("serviceSource")
    if source not in (AlertSource.DEFENDER_FOR_IDENTITY.value, AlertSource.IDENTITY_PROTECTION.value):
        problems.append(
            (".serviceSource", "must be microsoftDefenderForIdentity or azureAdIdentityProtection")
        )
    _evidence(item.get("evidence"), problems)
    if problems:
        return problems
    alert = parse_graph_alert(item)
    if alert is None:
        return [(".evidence", "names no user (userEvidence with azureAdUserId or userPrincipalName)")]
    return alert


def _evidence(evidence: Any, problems: Problems) -> None:
    if evidence is None:
        return
    if not isinstance(evidence, list):
        problems.append((".evidence", f"must be an array, not {_kind(evidence)}"))
        return
    for index, entry in enumerate(evidence):
        path = f".evidence[{index}]"
        if not isinstance(entry, dict):
            problems.append((path, f"must be an object, not {_kind(entry)}"))
            continue
        kind = _text(entry, "@odata.type", path, problems)
        if kind != _USER_EVIDENCE:
            continue
        _strings(entry, "roles", path, problems)
        account = _object(entry, "userAccount", path, problems)
        if account is None:
            continue
        where = f"{path}.userAccount"
        _upn(account, "userPrincipalName", where, problems)
        _object_id(account, "azureAdUserId", where, problems)
        for name in ("displayName", "accountName", "userSid"):
            _text(account, name, where, problems)


def _minimal(item: dict[str, Any], now: Callable[[], datetime]) -> Alert | Problems:
    problems: Problems = []
    alert_id = _identifier(item, "id", "", problems, required=True)
    title = _text(item, "title", "", problems, required=True)
    severity = item.get("severity", "medium")
    if not isinstance(severity, str) or severity not in {s.value for s in Severity}:
        problems.append((".severity", f"must be one of {_SEVERITIES}"))
    source = _text(item, "source", "", problems)
    url = _text(item, "url", "", problems)
    created = _time(item, "createdDateTime", "", problems) if "createdDateTime" in item else None
    user = item.get("user")
    target: IdentityRef | None = None
    if not isinstance(user, dict) or not (user.get("objectId") or user.get("userPrincipalName")):
        problems.append((".user", 'is required: {"objectId": ...} or {"userPrincipalName": ...}'))
    else:
        object_id = _object_id(user, "objectId", ".user", problems)
        upn = _upn(user, "userPrincipalName", ".user", problems)
        display_name = _text(user, "displayName", ".user", problems)
        if object_id or upn:
            target = IdentityRef(object_id=object_id, upn=upn, display_name=display_name or None)
    if problems or alert_id is None or title is None or target is None:
        return problems or [(".user", "names no user")]
    when = created or now()
    return Alert(
        id=f"push:{alert_id}",
        source=AlertSource.PUSHED,
        title=title.strip(),
        severity=Severity(str(severity)),
        status="new",
        created_at=when,
        updated_at=when,
        web_url=url or None,
        detection_source=source or "pushed",
        target=target,
    )
