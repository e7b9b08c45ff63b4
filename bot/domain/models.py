"""The domain nouns: alerts, identities, cases, action requests. Pure data, no I/O.

Models are frozen pydantic models: every change makes a new object (``model_copy``), which is
what compare-and-swap storage and the pure approval state machine want, and they serialize to the
store as JSON without hand-written mappers.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base of every domain model: immutable, unknown fields rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Severity(StrEnum):
    """Alert severity, as Microsoft Graph names it; members are ordered by :attr:`rank`."""

    UNKNOWN = "unknown"
    INFORMATIONAL = "informational"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """0 for unknown up to 4 for high."""
        return _SEVERITY_RANKS[self]

    @classmethod
    def parse(cls, value: Any) -> Severity:
        """Graph's value, or :attr:`UNKNOWN` for anything unexpected (e.g. unknownFutureValue)."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN


# Ranks by declaration order, computed once: card rendering ranks every alert of a storm.
_SEVERITY_RANKS: dict[Severity, int] = {severity: rank for rank, severity in enumerate(Severity)}


class AlertSource(StrEnum):
    """Where an alert came from (Graph ``serviceSource`` values, plus our own)."""

    DEFENDER_FOR_IDENTITY = "microsoftDefenderForIdentity"
    IDENTITY_PROTECTION = "azureAdIdentityProtection"
    MANUAL = "manual"
    PUSHED = "pushed"

    @property
    def label(self) -> str:
        """The product name a responder knows."""
        return _SOURCE_LABELS[self]


_SOURCE_LABELS = {
    AlertSource.DEFENDER_FOR_IDENTITY: "Defender for Identity",
    AlertSource.IDENTITY_PROTECTION: "Entra ID Protection",
    AlertSource.MANUAL: "Opened by a responder",
    AlertSource.PUSHED: "Pushed by automation",
}


class IdentityRef(Frozen):
    """Who an alert is about, as far as the alert's evidence tells."""

    object_id: str | None = None
    upn: str | None = None
    display_name: str | None = None
    on_prem_sid: str | None = None

    @property
    def key(self) -> str:
        """The stable grouping key: the Entra object id, else the lower-cased UPN."""
        if self.object_id:
            return self.object_id.lower()
        if self.upn:
            return self.upn.lower()
        raise ValueError("an identity needs an Entra object id or a UPN")

    @property
    def label(self) -> str:
        """How a person names this identity: display name and UPN where known."""
        if self.display_name and self.upn:
            return f"{self.display_name} ({self.upn})"
        return self.display_name or self.upn or self.object_id or "unknown identity"

    def merged(self, other: IdentityRef) -> IdentityRef:
        """Fill fields this reference lacks from ``other`` (a later alert may know more)."""
        return IdentityRef(
            object_id=self.object_id or other.object_id,
            upn=self.upn or other.upn,
            display_name=self.display_name or other.display_name,
            on_prem_sid=self.on_prem_sid or other.on_prem_sid,
        )


# Ids the bot makes up for alerts that are not in Graph's ``alerts_v2``: a user Identity
# Protection flags at high risk, and an alert pushed in the minimal form. Nothing is ever written
# back to them (a comment there could only be a 404).
RISKY_USER_ALERT_PREFIX = "riskyUser:"
PUSHED_ALERT_PREFIX = "push:"

# The system tag Defender XDR puts on incidents and alerts where automatic attack disruption
# contained something (learn.microsoft.com/defender-xdr/autoad-results).
ATTACK_DISRUPTION_TAG = "attack disruption"


class Alert(Frozen):
    """One security alert about one identity, normalised from Graph ``alerts_v2``.

    ``disrupted`` says the alert carries Defender XDR's *Attack Disruption* system tag: automatic
    attack disruption contained its assets (for an identity, disabled the account).
    """

    id: str
    source: AlertSource
    title: str
    severity: Severity
    status: str
    created_at: datetime
    updated_at: datetime
    first_activity_at: datetime | None = None
    last_activity_at: datetime | None = None
    web_url: str | None = None
    detection_source: str | None = None
    techniques: tuple[str, ...] = ()
    incident_id: str | None = None  # the Defender incident the alert belongs to
    source_ips: tuple[str, ...] = ()  # IP addresses in the alert's evidence
    target: IdentityRef
    disrupted: bool = False

    @property
    def in_alerts_v2(self) -> bool:
        """Whether this is an alert of Graph's ``alerts_v2`` the bot may comment on.

        Cases opened by a responder, from Identity Protection's risky-user list or from a push
        in the minimal form have no such alert; a Graph alert pushed as such keeps its Graph id.
        """
        if self.source in (AlertSource.MANUAL, AlertSource.PUSHED):
            return False
        return not self.id.startswith((RISKY_USER_ALERT_PREFIX, PUSHED_ALERT_PREFIX))


class CardRef(Frozen):
    """Where a case's card lives in Teams: both ids are needed to update it and to reply."""

    conversation_id: str
    activity_id: str


class ChannelRef(Frozen):
    """The incident channel, captured from the bot's installation in the team."""

    channel_id: str
    service_url: str
    tenant_id: str | None = None
    team_id: str | None = None
    bot_id: str | None = None
    bot_name: str | None = None


class AccountState(Frozen):
    """The account's state as last read back from Microsoft Graph."""

    enabled: bool | None = None
    checked_at: datetime | None = None


class CaseStatus(StrEnum):
    """A case is open until the identity is contained (or a responder closes it)."""

    OPEN = "open"
    CONTAINED = "contained"


class Case(Frozen):
    """Everything known about one compromised identity; one open case per identity."""

    id: str
    identity: IdentityRef
    alerts: tuple[Alert, ...]
    status: CaseStatus = CaseStatus.OPEN
    opened_at: datetime
    card: CardRef | None = None
    account: AccountState = AccountState()
    facts: IdentityFacts = Field(default_factory=lambda: IdentityFacts())
    target_checked: bool = False
    protected: bool = False
    privileged_reason: str = ""
    revision: int = 1
    published_revision: int = 0
    publishing_by: str = ""  # the replica holding the card's publishing lease, if any
    publishing_until: datetime | None = None
    # Set when this case was closed into another case of the same person (one case per person):
    # the surviving case's id, and why, in plain words.
    merged_into: str = ""
    closed_reason: str = ""
    # How many times posting the first card was begun without its reference being saved: above
    # 1, an earlier post may have reached the channel (its replica died, or Teams' answer was
    # lost), so the next card says it was posted again.
    posting_claims: int = 0
    # The campaign (storm mode) this case joined, if any. A campaign member has no card of its
    # own until a responder asks for one (``card_requested``): the campaign card lists it.
    campaign_id: str = ""
    card_requested: bool = False
    # Contained before any responder acted: by Defender XDR's automatic attack disruption (an
    # alert of the case says so) or found disabled when the case opened. The card then asks to
    # keep it contained (ratify) or roll it back; ``ratified_at`` is when Keep contained ran.
    auto_contained_at: datetime | None = None
    auto_contained_by: str = ""
    ratified_at: datetime | None = None
    version: int = 0

    @property
    def severity(self) -> Severity:
        """The highest severity among the case's alerts."""
        return max((a.severity for a in self.alerts), key=lambda s: s.rank, default=Severity.UNKNOWN)

    @property
    def first_seen(self) -> datetime:
        """When the earliest alert was created."""
        return min(a.created_at for a in self.alerts) if self.alerts else self.opened_at

    @property
    def last_seen(self) -> datetime:
        """When the latest alert was last updated."""
        return max(a.updated_at for a in self.alerts) if self.alerts else self.opened_at

    def with_alert(self, alert: Alert) -> Case:
        """The case with ``alert`` added, or replaced when an alert with its id is present."""
        alerts = (*(a for a in self.alerts if a.id != alert.id), alert)
        alerts = tuple(sorted(alerts, key=lambda a: (a.created_at, a.id)))
        revised = self.revised(alerts=alerts, identity=self.identity.merged(alert.target))
        # A disruption-tagged alert says the account was contained automatically; the state
        # last read decides whether it still is.
        return revised.reconciled() if alert.disrupted else revised

    @property
    def disrupted_at(self) -> datetime | None:
        """When automatic attack disruption acted, as its earliest tagged alert tells (or None)."""
        times = [a.updated_at for a in self.alerts if a.disrupted]
        return min(times) if times else None

    @property
    def awaiting_ratification(self) -> bool:
        """Contained automatically and not yet kept contained or rolled back by a responder."""
        return (
            self.status is CaseStatus.CONTAINED
            and self.auto_contained_at is not None
            and self.ratified_at is None
        )

    def containment_checked(self) -> Case:
        """The case after its account was read again: automatic containment not yet kept by a
        responder lapses when the account reads enabled (someone re-enabled it), so the card
        offers the actions of an open case again instead of claiming it is contained."""
        if not self.awaiting_ratification or self.account.enabled is not True:
            return self
        return self.model_copy(
            update={"status": CaseStatus.OPEN, "auto_contained_at": None, "auto_contained_by": ""}
        )

    def reconciled(self) -> Case:
        """The case with automatic containment recognised: an open case whose account reads
        disabled was contained before anyone here acted, by attack disruption when an alert is
        tagged so, else by whoever disabled it. Nothing is re-enabled or changed in the tenant;
        the card then asks a responder to keep it contained or roll it back."""
        if self.status is not CaseStatus.OPEN or self.account.enabled is not False:
            return self
        disrupted = self.disrupted_at
        return self.model_copy(
            update={
                "status": CaseStatus.CONTAINED,
                "auto_contained_at": disrupted or self.account.checked_at or self.opened_at,
                "auto_contained_by": (
                    "Microsoft Defender XDR automatic attack disruption"
                    if disrupted
                    else "found disabled when the case opened"
                ),
                "ratified_at": None,
            }
        )

    def changed_by(self, alert: Alert) -> bool:
        """Whether recording ``alert`` changes this case: it is new to the case, or a newer
        version of one of its alerts (an older or identical copy changes nothing)."""
        previous = next((a for a in self.alerts if a.id == alert.id), None)
        return previous is None or (previous != alert and previous.updated_at <= alert.updated_at)

    @property
    def resolved(self) -> bool:
        """Whether the case's identity is known by its Entra object id (only then can it be acted on)."""
        return bool(self.identity.object_id)

    def rekeyed(self, identity: IdentityRef) -> Case:
        """This unresolved case, now knowing its person's Entra object id (from ``identity``).

        Facts read while the identity was unknown are read again before the card is next sent.
        """
        if not identity.object_id:
            raise ValueError("re-keying needs the Entra object id")
        known = self.identity.merged(identity).model_copy(update={"object_id": identity.object_id})
        return self.revised(identity=known, target_checked=False)

    def absorbing(self, other: Case) -> Case:
        """This case with ``other``'s alerts (and anything it knew of the identity) added."""
        merged = {a.id: a for a in other.alerts} | {a.id: a for a in self.alerts}
        alerts = tuple(sorted(merged.values(), key=lambda a: (a.created_at, a.id)))
        return self.revised(alerts=alerts, identity=self.identity.merged(other.identity))

    def closed_into(self, survivor_id: str, reason: str) -> Case:
        """This case closed as a duplicate of ``survivor_id``; its alerts now belong there."""
        return self.revised(merged_into=survivor_id, closed_reason=reason)

    def revised(self, **changes: Any) -> Case:
        """The case with ``changes`` applied and its card revision bumped.

        ``revision`` counts changes a responder can see; the card carries it, so a click on a
        card that no longer shows the current state is recognised as stale.
        """
        return self.model_copy(update={**changes, "revision": self.revision + 1})

    @property
    def needs_publishing(self) -> bool:
        """Whether the card in Teams is missing or older than the case.

        A case merged into another is never posted; a card it already had is updated once, to
        say where the person's case is now.
        """
        if self.merged_into:
            return self.card is not None and self.published_revision < self.revision
        if self.card is None and self.campaign_id and not self.card_requested:
            return False  # listed on its campaign's card; posted only on demand
        return self.card is None or self.published_revision < self.revision


class ResponseAction(StrEnum):
    """The response actions a responder can ask for."""

    DISABLE_ACCOUNT = "disableAccount"
    REVOKE_SESSIONS = "revokeSessions"
    FORCE_PASSWORD_CHANGE = "forcePasswordChange"
    CONFIRM_COMPROMISED = "confirmCompromised"
    DISMISS_RISK = "dismissRisk"
    ENABLE_ACCOUNT = "enableAccount"
    CONFIRM_SAFE = "confirmSafe"
    REQUIRE_SIGN_IN_AGAIN = "requireSignInAgain"
    MARK_COMPROMISED = "markCompromised"
    KEEP_CONTAINED = "keepContained"

    @property
    def label(self) -> str:
        """Button and thread wording."""
        return _ACTION_LABELS[self]


_ACTION_LABELS = {
    ResponseAction.DISABLE_ACCOUNT: "Disable account",
    ResponseAction.REVOKE_SESSIONS: "Revoke sessions",
    ResponseAction.FORCE_PASSWORD_CHANGE: "Force password change",
    ResponseAction.CONFIRM_COMPROMISED: "Confirm compromised",
    ResponseAction.DISMISS_RISK: "Dismiss risk",
    ResponseAction.ENABLE_ACCOUNT: "Re-enable account",
    ResponseAction.CONFIRM_SAFE: "Confirm safe",
    ResponseAction.REQUIRE_SIGN_IN_AGAIN: "Require sign-in again",
    ResponseAction.MARK_COMPROMISED: "Mark compromised in Defender",
    ResponseAction.KEEP_CONTAINED: "Keep contained",
}


class Provider(StrEnum):
    """The system that owns an account (Graph's ``security.identityProvider`` values)."""

    ENTRA = "entraID"
    ACTIVE_DIRECTORY = "activeDirectory"
    OKTA = "okta"

    @property
    def label(self) -> str:
        """The product name a responder knows."""
        return {"entraID": "Entra ID", "activeDirectory": "Active Directory", "okta": "Okta"}[self.value]


# What Defender for Identity's invokeAction supports per identity provider, as the
# ``security.account`` resource documents it
# (learn.microsoft.com/graph/api/resources/security-account?view=graph-rest-1.0).
DEFENDER_PROVIDER_ACTIONS: dict[str, frozenset[str]] = {
    "activeDirectory": frozenset({"disable", "enable", "forcePasswordReset"}),
    "entraID": frozenset(
        {"disable", "enable", "revokeAllSessions", "requireUserToSignInAgain", "markUserAsCompromised"}
    ),
    "okta": frozenset({"disable", "enable", "revokeAllSessions"}),
}


class LinkedAccount(Frozen):
    """One account of the identity as Defender for Identity knows it (``identityAccounts``).

    Defender for Identity links a person's accounts in Active Directory, Entra ID and Okta into
    one identity. ``enabled`` is the account's state where Graph shows it (the Entra user's
    ``accountEnabled``; the identity's ``isEnabled`` for an Active Directory account), else None.
    """

    identity_id: str  # the identityAccounts object id (the invokeAction path)
    identifier: str  # accounts[].identifier: the accountId invokeAction wants
    provider: Provider
    actions: frozenset[str] = frozenset()  # the actions Defender for Identity supports on it
    enabled: bool | None = None

    def supports(self, action: str) -> bool:
        """Whether Defender for Identity can run ``action`` on this account: its provider
        supports it (the docs) and the account lists it (when Graph listed any)."""
        documented = action in DEFENDER_PROVIDER_ACTIONS.get(self.provider.value, frozenset())
        return documented and (not self.actions or action in self.actions)


class RiskSignal(Frozen):
    """One Entra ID Protection risk detection, as context on the card: where and what."""

    detection: str  # riskEventType, e.g. unfamiliarFeatures, anonymizedIPAddress
    detected_at: datetime | None = None
    ip_address: str | None = None
    location: str | None = None  # "City, CC"


class IdentityFacts(Frozen):
    """What reading the identity from Entra ID, Identity Protection and Defender for Identity showed."""

    synced: bool = False  # mastered in on-premises Active Directory
    on_prem_sid: str | None = None
    risk_state: str | None = None
    risk_level: str | None = None
    defender_enabled: bool | None = None
    linked: tuple[LinkedAccount, ...] = ()
    signals: tuple[RiskSignal, ...] = ()
    read_at: datetime | None = None

    def linked_for(self, provider: Provider, action: str) -> LinkedAccount | None:
        """The Defender for Identity account of ``provider`` that supports ``action``, if any."""
        for account in self.linked:
            if account.provider is provider and account.supports(action):
                return account
        return None

    @property
    def providers(self) -> tuple[Provider, ...]:
        """The providers the person has accounts in: Entra ID always (the case is keyed on the
        Entra object id), then those Defender for Identity links, in a stable order."""
        found = {Provider.ENTRA, *(a.provider for a in self.linked)}
        return tuple(p for p in Provider if p in found)


class Verification(StrEnum):
    """How far reading the state back confirms an action."""

    VERIFIED = "verified"
    PENDING = "pending"  # eventually consistent: read again later
    UNVERIFIABLE = "unverifiable"  # Graph shows no state for it; the Action Center has the record
    CONTRADICTED = "contradicted"  # the state read back says it did not take effect
    NOT_RUN = "not run"


class StepOutcome(Frozen):
    """One Graph call of an action's plan, and what reading back showed."""

    step: str  # e.g. "Disable in Active Directory (Defender for Identity)"
    provider: Provider
    ok: bool
    message: str
    verification: Verification = Verification.NOT_RUN
    verified_state: str = ""
    verified_at: datetime | None = None
    graph_request_id: str = ""
    correlation_id: str = ""
    note: str = ""  # something a responder should know even when the step worked
    # The step's idempotency key: the request's key and what the step does to which account. A
    # step done in an earlier attempt is carried over by it and never sent again on a retry.
    key: str = ""

    @property
    def done(self) -> bool:
        """Sent and accepted, and not contradicted by reading back: never to be sent again."""
        return self.ok and self.verification in (Verification.VERIFIED, Verification.UNVERIFIABLE)


class Actor(Frozen):
    """A person who clicked: Entra object id (what authorization checks) and display name.

    ``teams_id`` is their Teams user id (``29:...``), kept so their card view can be refreshed.
    """

    object_id: str
    name: str = ""
    teams_id: str = ""

    def same_person(self, other: Actor) -> bool:
        """Whether both are the same Entra user (object ids compare case-insensitively)."""
        return self.object_id.lower() == other.object_id.lower()

    @property
    def label(self) -> str:
        """Display name, falling back to the object id."""
        return self.name or self.object_id


class RequestState(StrEnum):
    """Lifecycle of an action request (see :mod:`bot.domain.approval`)."""

    PENDING = "pending"
    APPROVED = "approved"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """No event moves a request out of a final state."""
        return self in _FINAL_STATES


_FINAL_STATES = frozenset(
    {
        RequestState.SUCCEEDED,
        RequestState.FAILED,
        RequestState.REJECTED,
        RequestState.EXPIRED,
        RequestState.CANCELLED,
    }
)


class ActionResult(Frozen):
    """What happened when the action ran, and what reading the state back showed.

    ``succeeded`` means every step ran without an error; ``verified`` that reading back confirmed
    every step. ``recheck_at`` is set while a step awaits a later read (eventual consistency).
    """

    succeeded: bool
    summary: str
    verified: bool = False
    verified_state: str = ""
    verified_at: datetime | None = None
    graph_request_id: str = ""
    steps: tuple[StepOutcome, ...] = ()
    recheck_at: datetime | None = None

    @property
    def correlation_ids(self) -> list[str]:
        """Defender Action Center correlation ids of the steps that have one."""
        return [s.correlation_id for s in self.steps if s.correlation_id]

    @property
    def pending_verification(self) -> bool:
        """Whether a step still waits for a later read-back."""
        return any(s.verification is Verification.PENDING for s in self.steps)


class ActionRequest(Frozen):
    """A responder's request to run one action against one case's identity."""

    id: str
    case_id: str
    action: ResponseAction
    requester: Actor
    reason: str = ""
    # The providers whose accounts the request acts on (empty: every account of the person),
    # and what a Keep contained request adds (revoke sessions, force password change).
    providers: tuple[Provider, ...] = ()
    extras: tuple[ResponseAction, ...] = ()
    state: RequestState = RequestState.PENDING
    created_at: datetime
    expires_at: datetime
    approvals: tuple[Actor, ...] = ()
    required_approvals: int = 1
    privileged_reason: str = ""
    idempotency_key: str
    decided_by: Actor | None = None
    decision_note: str = ""
    reminded_at: datetime | None = None
    attempt: int = 1
    reported_attempt: int = 0  # the last attempt whose result the thread was told
    # How many times the current attempt's report was begun; above 1 a reply may already be in
    # the thread (its sender died before recording it), so the next one says it is a re-send.
    report_claims: int = 0
    # The current attempt's Graph calls may have been sent: set (compare-and-swap) by the one
    # worker that sends them, just before; a worker taking the attempt over reads back instead.
    dispatched: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: ActionResult | None = None
    # Steps done in earlier attempts (by idempotency key): a retry carries them over unsent.
    done_steps: tuple[StepOutcome, ...] = ()
    version: int = 0

    @property
    def step_key_base(self) -> str:
        """The part of every step's idempotency key that names this request, the same in every
        attempt (the attempt's own key changes with each retry)."""
        return f"{self.case_id}:{self.action.value}:{self.id}"


Case.model_rebuild()
