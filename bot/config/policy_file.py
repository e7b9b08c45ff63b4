"""The policy file (``POLICY_FILE``): who may act and approve, how many sign-offs, what is untouchable.

The format, every key optional (``policy.example.yaml`` explains each one)::

    responders: {users: [<object id>, ...], groups: [<group object id>, ...]}
    approvers:  {users: [...], groups: [...]}
    approvals:  {disableAccount: 2}            # distinct sign-offs per action: 1 or 2
    privileged_targets: {roles: [<role template id>, ...], groups: [<group object id>, ...]}
    protected_accounts: [breakglass@contoso.com, <object id>]
    expiry_minutes: 30
    reminder_minutes: 10                       # null: no reminder
    blast_radius_per_hour: 20
    step_up:                                   # a fresh MFA sign-in on the approval page
      context: c1                              # Conditional Access authentication context id
      max_age_minutes: 10                      # how old that sign-in may be
      when: {privileged_targets: true, actions: [disableAccount]}

Reading is strict: an unknown or repeated key, a wrong type, an approval count other than 1 or 2,
an unknown action, an object id that is not a GUID or a non-positive duration stops the bot with a
:class:`~bot.errors.ConfigError` naming ``POLICY_FILE``, the file and the dotted key at fault. A
typo in a security policy must not quietly widen who can disable accounts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NoReturn

import yaml

from bot.domain.models import ResponseAction
from bot.domain.policy import Policy, Principals, StepUp, StormRule
from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.config.settings import Settings

log = logging.getLogger(__name__)

VARIABLE = "POLICY_FILE"

# Built-in Entra role templates (ids are the same in every tenant) whose holders can take over
# other identities or the tenant: a target holding one needs two sign-offs by default.
DEFAULT_PRIVILEGED_ROLE_TEMPLATES: Mapping[str, str] = MappingProxyType(
    {
        "62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
        "e8611ab8-c189-46e8-94e1-60213ab1f814": "Privileged Role Administrator",
        "194ae4cb-b126-40b2-bd5b-6091b380977d": "Security Administrator",
        "fe930be7-5e62-47db-91af-98c3a49a38b1": "User Administrator",
        "7be44c8a-adaf-4e2a-84d6-ab2649e08a13": "Privileged Authentication Administrator",
        "729827e3-9c14-49f7-bb1b-9608f156bbb8": "Helpdesk Administrator",
        "29232cdf-9323-42fd-ade2-1d097af3e4de": "Exchange Administrator",
        "f28a1f50-f6c7-4571-818b-6a12f2af6b6c": "SharePoint Administrator",
    }
)

_TOP_KEYS = (
    "responders",
    "approvers",
    "approvals",
    "privileged_targets",
    "protected_accounts",
    "expiry_minutes",
    "reminder_minutes",
    "blast_radius_per_hour",
    "step_up",
    "storm",
)
_STEP_UP_KEYS = ("context", "max_age_minutes", "when")
_STEP_UP_WHEN_KEYS = ("privileged_targets", "actions")
_CONTEXT = re.compile(r"^c([1-9]|[1-9][0-9])\Z")
_PRINCIPAL_KEYS = ("users", "groups")
_PRIVILEGED_KEYS = ("roles", "groups")
_STORM_KEYS = ("threshold", "window_minutes", "approvals", "max_bulk")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_UPN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+\Z")


def load_policy(path: Path) -> Policy:
    """Read and check the policy file at ``path``; raise :class:`ConfigError` naming the bad key."""
    return _Reader(path).policy()


def policy_from_settings(settings: Settings) -> Policy:
    """The policy in ``POLICY_FILE`` when set; otherwise ``RESPONDERS`` both request and approve."""
    if settings.policy_file:
        return load_policy(Path(settings.policy_file))
    # Privileged targets still need two people without a policy file: failing safe beats a
    # single click disabling a Global Administrator.
    people = frozenset(settings.responders)
    return Policy(
        responders=Principals(users=people),
        approvers=Principals(users=people),
        privileged_role_templates=frozenset(DEFAULT_PRIVILEGED_ROLE_TEMPLATES),
    )


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a repeated key is an error instead of last-one-wins."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            repeated = key in seen
        except TypeError:  # an unhashable key; construct_mapping reports it properly
            break
        if repeated:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found the key {key!r} twice",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


class _Reader:
    """Turns one policy file into a :class:`Policy`, or a :class:`ConfigError` at the first fault."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def policy(self) -> Policy:
        document = self._document()
        responders = self._principals(document.get("responders"), "responders")
        approvers = self._principals(document.get("approvers"), "approvers")
        privileged = self._mapping(document.get("privileged_targets"), "privileged_targets", _PRIVILEGED_KEYS)
        expiry = self._minutes(document.get("expiry_minutes", 30), "expiry_minutes")
        reminder_raw = document.get("reminder_minutes", 10)
        reminder = None if reminder_raw is None else self._minutes(reminder_raw, "reminder_minutes")
        if reminder is not None and reminder >= expiry:
            self._fail("reminder_minutes", "must be shorter than expiry_minutes (or null for no reminder)")
        policy = Policy(
            responders=responders,
            approvers=approvers,
            approvals=self._approvals(document.get("approvals")),
            privileged_role_templates=(
                self._guids(privileged["roles"], "privileged_targets.roles")
                if "roles" in privileged
                else frozenset(DEFAULT_PRIVILEGED_ROLE_TEMPLATES)
            ),
            privileged_groups=self._guids(privileged.get("groups"), "privileged_targets.groups"),
            protected_users=self._accounts(document.get("protected_accounts"), "protected_accounts"),
            expiry=expiry,
            reminder_after=reminder,
            blast_radius_per_hour=self._count(
                document.get("blast_radius_per_hour", 20), "blast_radius_per_hour"
            ),
            step_up=self._step_up(document.get("step_up")),
            storm=self._storm(document.get("storm")),
        )
        if responders.empty:
            log.warning("%s: %s names no responders: nobody can act on a case.", VARIABLE, self._path)
        return policy

    # -- the file ------------------------------------------------------------------------------

    def _document(self) -> dict[str, Any]:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(VARIABLE, f"{self._path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(VARIABLE, f"{self._path}: cannot be read: {exc}") from None
        try:
            loaded = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
        except yaml.YAMLError as exc:
            raise ConfigError(VARIABLE, f"{self._path}: not valid YAML: {_yaml_problem(exc)}") from None
        if loaded is None:
            raise ConfigError(VARIABLE, f"{self._path}: the file is empty (see policy.example.yaml)")
        return self._mapping(loaded, "", _TOP_KEYS)

    # -- value checks --------------------------------------------------------------------------

    def _mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self._fail(key, f"must be a mapping with the keys {', '.join(allowed)}, got {_kind(value)}")
        for name in value:
            if name not in allowed:
                self._fail(_join(key, str(name)), f"unknown key (expected one of: {', '.join(allowed)})")
        return value

    def _principals(self, value: Any, key: str) -> Principals:
        entries = self._mapping(value, key, _PRINCIPAL_KEYS)
        return Principals(
            users=self._guids(entries.get("users"), f"{key}.users"),
            groups=self._guids(entries.get("groups"), f"{key}.groups"),
        )

    def _list(self, value: Any, key: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self._fail(key, f"must be a list, got {_kind(value)}")
        return value

    def _guids(self, value: Any, key: str) -> frozenset[str]:
        ids = []
        for index, item in enumerate(self._list(value, key)):
            if not isinstance(item, str) or not _GUID.match(item):
                self._fail(f"{key}[{index}]", f"must be an Entra object id (a GUID), got {item!r}")
            ids.append(item.lower())
        return frozenset(ids)

    def _accounts(self, value: Any, key: str) -> frozenset[str]:
        accounts = []
        for index, item in enumerate(self._list(value, key)):
            if not isinstance(item, str) or not (_GUID.match(item) or _UPN.match(item)):
                self._fail(
                    f"{key}[{index}]",
                    f"must be a user principal name (name@domain) or an object id (a GUID), got {item!r}",
                )
            accounts.append(item.lower())
        return frozenset(accounts)

    def _approvals(self, value: Any) -> dict[ResponseAction, int]:
        actions = tuple(a.value for a in ResponseAction)
        known = ", ".join(actions)
        if value is not None and not isinstance(value, dict):
            self._fail("approvals", f"must be a mapping of action to 1 or 2 ({known}), got {_kind(value)}")
        approvals: dict[ResponseAction, int] = {}
        for name, count in (value or {}).items():
            key = f"approvals.{name}"
            if name not in actions:
                self._fail(key, f"unknown action (actions: {known})")
            # bool is an int in Python; YAML's `true` is not a number of approvers.
            if isinstance(count, bool) or not isinstance(count, int) or count not in (1, 2):
                self._fail(key, f"must be 1 or 2 distinct approvers, got {count!r} (actions: {known})")
            approvals[ResponseAction(name)] = count
        return approvals

    def _step_up(self, value: Any) -> StepUp | None:
        if value is None:
            return None
        entries = self._mapping(value, "step_up", _STEP_UP_KEYS)
        context = entries.get("context")
        if not isinstance(context, str) or not _CONTEXT.match(context):
            self._fail(
                "step_up.context",
                f"must be a Conditional Access authentication context id, c1 to c99, got {context!r}",
            )
        when = self._mapping(entries.get("when"), "step_up.when", _STEP_UP_WHEN_KEYS)
        privileged = when.get("privileged_targets", False)
        if not isinstance(privileged, bool):
            self._fail("step_up.when.privileged_targets", f"must be true or false, got {privileged!r}")
        known = tuple(a.value for a in ResponseAction)
        actions = set()
        for index, name in enumerate(self._list(when.get("actions"), "step_up.when.actions")):
            if name not in known:
                self._fail(
                    f"step_up.when.actions[{index}]", f"unknown action {name!r} (actions: {', '.join(known)})"
                )
            actions.add(ResponseAction(name))
        if not privileged and not actions:
            self._fail(
                "step_up.when",
                "must name privileged_targets: true and/or actions, or step_up applies to nothing",
            )
        return StepUp(
            context=context,
            max_age=self._minutes(entries.get("max_age_minutes", 10), "step_up.max_age_minutes"),
            privileged_targets=privileged,
            actions=frozenset(actions),
        )

    def _storm(self, value: Any) -> StormRule:
        entries = self._mapping(value, "storm", _STORM_KEYS)
        approvals = entries.get("approvals", 2)
        if isinstance(approvals, bool) or not isinstance(approvals, int) or approvals < 2:
            self._fail(
                "storm.approvals",
                f"must be a whole number of at least 2 (a bulk request always needs two), got {approvals!r}",
            )
        max_bulk = entries.get("max_bulk")
        return StormRule(
            threshold=self._count(entries.get("threshold", 20), "storm.threshold"),
            window=self._minutes(entries.get("window_minutes", 10), "storm.window_minutes"),
            approvals=approvals,
            max_bulk=None if max_bulk is None else self._count(max_bulk, "storm.max_bulk"),
        )

    def _minutes(self, value: Any, key: str) -> timedelta:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._fail(key, f"must be a number of minutes, got {value!r}")
        if not value > 0:
            self._fail(key, f"must be greater than 0, got {value!r}")
        return timedelta(minutes=value)

    def _count(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self._fail(key, f"must be a whole number of at least 1, got {value!r}")
        return value

    def _fail(self, key: str, problem: str) -> NoReturn:
        where = f"{key}: " if key else ""
        raise ConfigError(VARIABLE, f"{self._path}: {where}{problem}")


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", bool: "true/false", type(None): "nothing"}
    return names.get(type(value), f"the {type(value).__name__} {value!r}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # PyYAML's own text spans several lines with a context excerpt; one line is enough here.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"line {mark.line + 1}: {problem}" if mark is not None else str(problem)
