"""Cases, requests and chat data whose every untrusted field comes from a supplier of strings.

The property tests fill them once with generated (hostile or huge) strings and once with a
neutral ``"x"``: what the bot writes is the same in both, so any difference in a rendering's
markdown structure was added by untrusted text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import cycle

from bot.domain.audit import AuditEvent
from bot.domain.models import (
    AccountState,
    ActionRequest,
    ActionResult,
    Actor,
    Alert,
    AlertSource,
    CardRef,
    Case,
    ChannelRef,
    IdentityFacts,
    IdentityRef,
    LinkedAccount,
    Provider,
    RequestState,
    ResponseAction,
    RiskSignal,
    Severity,
    StepOutcome,
    Verification,
)
from devtools.samples import T0

# Fragments an attacker would try; the property tests mix them with generated text.
HOSTILE = [
    "[click me](https://evil.io/login)",
    "[x](javascript:alert(1))",
    "![img](https://evil.io/p.png)",
    "<https://evil.io>",
    "<a href='https://evil.io'>portal</a>",
    "<at>Megan Bowen</at>",
    "<b>bold</b><script>x</script>",
    "https://evil.io/reset",
    "http://security.microsoft.com.evil.io/alerts",
    "https://security.microsoft.com@evil.io/",
    "www.evil.com",
    "evil.io",
    "evil.zip",
    "//evil.io/x",
    "evil\u3002io",
    "security.microsoft.com",
    "mailto:a@evil.io?subject=x",
    "a@evil.io",
    "lee.gu@contoso.com",
    "evil.io@x.co",
    "(evil.io@x.co)",
    "¹lee.gu@contoso.com",
    "évil.io@x.co",
    "a@evil.io|www.evil.com",
    "¢.evil.io",
    "\n# Heading\n",
    "\n- item\n",
    "\n1. item\n",
    "\n> quote\n",
    "\n---\n",
    "\n===\n",
    "| a | b |",
    "`code`",
    "```\nfence\n```",
    "**bold** _it_ ~~del~~",
    "\\[escaped\\]",
    "&lt;at&gt;x&lt;/at&gt;",
    "&#91;x&#93;(https://evil.io)",
    "[ref]: https://evil.io",
    "[ref]",
    "\u202egnp.exe",
    "\u2066isolated\u2069",
    "zero\u200bwidth\u200d\u2060",
    "\u200e\u200f\u061c",
    "\ufeff\u00ad",
    "\U000e0041\U000e0042",
    "\u3164\u115f",
    "a\u0301\u0301\u0301\u0301\u0301\u0301",
    "\t\r\n\x0b\x0c\x1c",
    "\x00\x07\x1b[31m",
    "😀👨\u200d👩\u200d👧",
    "O'Brien & Sons",
    "{{name}} ${x} %s",
]


@dataclass
class World:
    """Everything the renderers take, built from one supplier of untrusted strings."""

    case: Case
    request: ActionRequest
    note: str
    alert: Alert
    channel: ChannelRef
    events: list[AuditEvent]
    word: str
    upn: str
    sentence: str


def build(
    strings: Callable[[], str],
    *,
    alerts: int = 2,
    state: RequestState = RequestState.SUCCEEDED,
    many: int = 2,
) -> World:
    """A case of ``alerts`` alerts and a request in ``state``, every untrusted field from ``strings``.

    ``many`` is how many techniques per alert (of a case with few alerts), sign-in risks, result
    steps, sign-offs and audit events there are (2, or thousands to test sizes).
    """
    s = strings
    identity = IdentityRef(object_id=s(), upn=s(), display_name=s(), on_prem_sid=s())
    alert_list = tuple(
        Alert(
            id=f"{s()}-{i}",  # distinct, as alert ids are
            source=AlertSource.PUSHED if i % 2 else AlertSource.DEFENDER_FOR_IDENTITY,
            title=s(),
            severity=Severity.HIGH if i == 0 else Severity.MEDIUM,
            status=s(),
            created_at=T0 - timedelta(minutes=i),
            updated_at=T0 - timedelta(minutes=i),
            web_url=s(),
            detection_source=s(),
            techniques=tuple(s() for _ in range(many if alerts <= 10 else 2)),
            target=identity,
        )
        for i in range(alerts)
    )
    facts = IdentityFacts(
        risk_state=s(),
        risk_level=s(),
        # Account ids Defender for Identity returns for the person's linked accounts.
        linked=(
            LinkedAccount(identity_id=s(), identifier=s(), provider=Provider.ACTIVE_DIRECTORY, enabled=True),
            LinkedAccount(identity_id=s(), identifier=s(), provider=Provider.OKTA),
        ),
        signals=tuple(
            RiskSignal(detection=s(), detected_at=T0, ip_address=s(), location=s()) for _ in range(many)
        ),
    )
    case = Case(
        id="c3f9a2b7d104",  # the bot's own id, echoed in the buttons' data
        identity=identity,
        alerts=alert_list,
        opened_at=T0,
        card=CardRef(
            conversation_id="19:x@thread.tacv2;messageid=1764060000000", activity_id="1764060000000"
        ),
        account=AccountState(enabled=True, checked_at=T0),
        facts=facts,
        privileged_reason=s(),
    )
    requester = Actor(object_id=s(), name=s(), teams_id=s())
    step = StepOutcome(
        step=s(),
        provider=Provider.ENTRA,
        ok=False,
        message=s(),
        verification=Verification.CONTRADICTED,
        verified_state=s(),
        verified_at=T0,
        graph_request_id=s(),
        correlation_id=s(),
        note=s(),
    )
    result = ActionResult(
        succeeded=False,
        summary=s(),
        verified_state=s(),
        verified_at=T0,
        graph_request_id=s(),
        steps=tuple(
            step.model_copy(
                update={"ok": i % 2 == 1, "verification": list(Verification)[i % len(Verification)]}
            )
            for i in range(many)
        ),
        recheck_at=T0,
    )
    request = ActionRequest(
        id="r1",
        case_id=case.id,
        action=ResponseAction.DISABLE_ACCOUNT,
        requester=requester,
        reason=s(),
        state=state,
        created_at=T0,
        expires_at=T0 + timedelta(minutes=30),
        approvals=tuple(Actor(object_id=s(), name=s()) for _ in range(many)),
        required_approvals=2,
        privileged_reason=s(),
        idempotency_key="k",
        decided_by=Actor(object_id=s(), name=s()),
        decision_note=s(),
        reminded_at=T0,
        started_at=T0,
        finished_at=T0,
        result=result,
    )
    events = [
        AuditEvent(
            sequence=i + 1,
            at=T0,
            actor_id=s(),
            actor_name=s(),
            kind=kind,
            case_id=case.id,
            request_id=request.id,
            identity=s(),
            payload={"reason": s()} if i == 0 else {"summary": s()} if i == 1 else {"title": s()},
            previous_hash="0",
            hash="0",
        )
        for i, kind in enumerate(["request.opened", "request.succeeded", *(s() for _ in range(many - 1))])
    ]
    return World(
        case=case,
        request=request,
        note=s(),
        alert=alert_list[0].model_copy(update={"severity": Severity.HIGH}),
        channel=ChannelRef(
            channel_id="19:x@thread.tacv2", service_url="https://smba.trafficmanager.net/emea/"
        ),
        events=events,
        word=s(),
        upn=s(),
        sentence=s(),
    )


def supplier(values: list[str]) -> Callable[[], str]:
    """Hands out ``values`` in turn, over and over."""
    source: Iterator[str] = cycle(values or ["x"])
    return lambda: next(source)


def neutral() -> Callable[[], str]:
    """The harmless value for every field."""
    return lambda: "x"
