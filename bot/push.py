"""The push intake (``POST /api/alerts``): authenticate, parse and validate pushed alerts.

Sentinel automation, Logic Apps or any SOAR can push alerts instead of waiting for the poll. A
request is authenticated with an HMAC-SHA256 signature over ``<timestamp>.<raw body>`` under a
shared secret, inside a replay window; the body is one Graph security alert, a batch of them
(``{"value": [...]}`` or a JSON array), or a minimal form. Everything is validated before
anything is stored, so a bad item rejects the whole request with the list of field errors.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.domain.models import Alert, AlertSource, IdentityRef, Severity
from bot.intake import parse_graph_alert, parse_time

SIGNATURE_HEADER = "X-Remediation-Signature"
TIMESTAMP_HEADER = "X-Remediation-Timestamp"
REPLAY_WINDOW_SECONDS = 300
MAX_BODY_BYTES = 1024 * 1024
MAX_ITEMS = 500


@dataclass(frozen=True)
class Rejection:
    """Why a push was refused: an HTTP status and what to tell the sender."""

    status: int
    message: str
    errors: tuple[dict[str, str], ...] = ()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value a sender computes (documented in the README)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


@dataclass
class PushAuthenticator:
    """Checks signatures and refuses replays (a signature is accepted once inside its window)."""

    secret: str
    window: int = REPLAY_WINDOW_SECONDS
    now: Callable[[], float] = time.time
    _seen: dict[str, float] = field(default_factory=dict)

    def check(self, headers: Mapping[str, str], body: bytes) -> Rejection | None:
        """``None`` when the request is authentic and fresh, else a 401 rejection."""
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not timestamp or not signature:
            return Rejection(401, f"Sign the request: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}.")
        try:
            sent_at = int(timestamp)
        except ValueError:
            return Rejection(401, f"{TIMESTAMP_HEADER} must be Unix seconds.")
        current = self.now()
        if abs(current - sent_at) > self.window:
            return Rejection(401, f"The signature timestamp is outside the {self.window} s window.")
        if not hmac.compare_digest(sign(self.secret, timestamp, body), signature):
            return Rejection(401, "The signature does not match the body.")
        self._forget_before(current - self.window)
        if signature in self._seen:
            return Rejection(401, "This signed request was already received (replay).")
        return None

    def remember(self, headers: Mapping[str, str]) -> None:
        """Record a request's signature once its alerts are stored (a failed store may be retried)."""
        self._seen[headers.get(SIGNATURE_HEADER, "")] = self.now()

    def _forget_before(self, cutoff: float) -> None:
        for key in [k for k, seen in self._seen.items() if seen < cutoff]:
            del self._seen[key]


def parse_push(body: bytes, *, now: Callable[[], datetime]) -> list[Alert] | Rejection:
    """Every alert in the body, or a 400 listing each field error (nothing partial)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Rejection(400, f"The body is not valid JSON: {exc}")
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
        return Rejection(400, "Some alerts are not valid; nothing was stored.", tuple(errors))
    return alerts


def _parse_item(item: Any, now: Callable[[], datetime]) -> Alert | list[tuple[str, str]]:
    if not isinstance(item, dict):
        return [("", "must be an object")]
    if "evidence" in item or "serviceSource" in item:
        return _graph_alert(item)
    return _minimal(item, now)


def _graph_alert(item: dict[str, Any]) -> Alert | list[tuple[str, str]]:
    problems = [
        (f".{name}", "is required") for name in ("id", "title", "createdDateTime") if not item.get(name)
    ]
    source = item.get("serviceSource")
    if source not in (AlertSource.DEFENDER_FOR_IDENTITY.value, AlertSource.IDENTITY_PROTECTION.value):
        problems.append(
            (".serviceSource", "must be microsoftDefenderForIdentity or azureAdIdentityProtection")
        )
    if item.get("createdDateTime") and parse_time(item.get("createdDateTime")) is None:
        problems.append((".createdDateTime", "must be an ISO 8601 time"))
    if problems:
        return problems
    alert = parse_graph_alert(item)
    if alert is None:
        return [(".evidence", "names no user (userEvidence with azureAdUserId or userPrincipalName)")]
    return alert


def _minimal(item: dict[str, Any], now: Callable[[], datetime]) -> Alert | list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for name in ("id", "title"):
        if not isinstance(item.get(name), str) or not item[name].strip():
            problems.append((f".{name}", "is required (a non-empty string)"))
    severity = item.get("severity", "medium")
    if severity not in {s.value for s in Severity}:
        problems.append((".severity", "must be one of informational, low, medium, high"))
    user = item.get("user")
    if not isinstance(user, dict) or not (user.get("objectId") or user.get("userPrincipalName")):
        problems.append((".user", 'is required: {"objectId": ...} or {"userPrincipalName": ...}'))
    created = parse_time(item.get("createdDateTime")) if item.get("createdDateTime") else now()
    if created is None:
        problems.append((".createdDateTime", "must be an ISO 8601 time"))
    if problems or not isinstance(user, dict) or created is None:
        return problems
    source = str(item.get("source") or "pushed")
    return Alert(
        id=f"push:{item['id'].strip()}",
        source=AlertSource.PUSHED,
        title=item["title"].strip(),
        severity=Severity(severity),
        status="new",
        created_at=created,
        updated_at=created,
        web_url=item.get("url") if isinstance(item.get("url"), str) else None,
        detection_source=source,
        target=IdentityRef(
            object_id=user.get("objectId") or None,
            upn=user.get("userPrincipalName") or None,
            display_name=user.get("displayName") or None,
        ),
    )
