"""The shape of an inbound activity, checked before botbuilder or the bot reads any of it.

Bot Framework's models (``msrest``) coerce or crash on a field of the wrong type, and the handler
reads nested ``channelData`` and ``value`` objects that have no model at all. :func:`activity_problem`
checks every field of the Bot Framework schema against its declared type (derived from the
models' own attribute maps, so nothing is listed twice), then the objects the bot reads itself:
the tenant and channel in ``channelData`` and a card action's ``value``. The answer is one
sentence naming the first field at fault, for a 400.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import botbuilder.schema as schema
from botbuilder.schema import Activity

CARD_ACTION_INVOKE = "adaptiveCard/action"

# Fields of a card action's ``data`` the bot reads, with the JSON type each must have.
_CARD_DATA_TYPES: dict[str, tuple[type, ...]] = {
    "caseId": (str,),
    "requestId": (str,),
    "cardVersion": (int,),
    "reason": (str,),
    # The case card's account picker and Keep contained's additions (cards.case input ids).
    "accounts": (str,),
    "addRevokeSessions": (str,),
    "addPasswordChange": (str,),
}


def activity_problem(body: dict[str, Any]) -> str | None:
    """``None`` when ``body`` is a well-typed activity the bot can read, else what is wrong."""
    problem = _model(Activity, body, "activity")
    if problem:
        return problem
    if not isinstance(body.get("type"), str) or not body["type"]:
        return "The activity has no type."
    service_url = body.get("serviceUrl")
    if not isinstance(service_url, str) or not _is_http_url(service_url):
        return "activity.serviceUrl must be an http(s) URL."
    conversation = body.get("conversation")
    if not isinstance(conversation, dict) or not conversation.get("id"):
        return "activity.conversation.id is required."
    # Teams spells it tenantId; botbuilder's model only knows tenantID (checked above).
    tenant = conversation.get("tenantId")
    if tenant is not None and not isinstance(tenant, str):
        return f"activity.conversation.tenantId must be a string, not {_kind(tenant)}."
    problem = _channel_data(body.get("channelData"))
    if problem:
        return problem
    if body.get("type") == "invoke" and body.get("name") == CARD_ACTION_INVOKE:
        return _card_action(body.get("value"))
    return None


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _model(model: Any, value: Any, path: str) -> str | None:
    """Check ``value`` against an msrest model class's attribute map."""
    if not isinstance(value, dict):
        return f"{path} must be an object, not {_kind(value)}."
    for spec in model._attribute_map.values():
        key = spec["key"]
        if key in value and value[key] is not None:
            problem = _typed(spec["type"], value[key], f"{path}.{key}")
            if problem:
                return problem
    return None


def _typed(declared: str, value: Any, path: str) -> str | None:
    """Check one value against an msrest type name (``str``, ``[Entity]``, ``ChannelAccount``...)."""
    if declared.startswith("[") and declared.endswith("]"):
        if not isinstance(value, list):
            return f"{path} must be an array, not {_kind(value)}."
        for index, item in enumerate(value):
            if item is None:
                return f"{path}[{index}] must not be null."
            problem = _typed(declared[1:-1], item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if declared.startswith("{") and declared.endswith("}"):
        if not isinstance(value, dict):
            return f"{path} must be an object, not {_kind(value)}."
        for key, item in value.items():
            problem = None if item is None else _typed(declared[1:-1], item, f"{path}.{key[:40]}")
            if problem:
                return problem
        return None
    if declared in ("str", "iso-8601", "duration"):
        return None if isinstance(value, str) else f"{path} must be a string, not {_kind(value)}."
    if declared == "bool":
        return None if isinstance(value, bool) else f"{path} must be true or false, not {_kind(value)}."
    if declared in ("int", "long"):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{path} must be an integer, not {_kind(value)}."
    if declared == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{path} must be a number, not {_kind(value)}."
    if declared == "object":
        return None
    model = getattr(schema, declared, None)
    if model is None or not hasattr(model, "_attribute_map"):
        return f"{path} has a type the bot does not know ({declared})."
    return _model(model, value, path)


def _channel_data(channel_data: Any) -> str | None:
    """``channelData``: the tenant, team and channel objects the bot reads, with string fields."""
    if channel_data is None:
        return None
    if not isinstance(channel_data, dict):
        return f"activity.channelData must be an object, not {_kind(channel_data)}."
    for name in ("tenant", "team", "channel"):
        part = channel_data.get(name)
        if part is None:
            continue
        if not isinstance(part, dict):
            return f"activity.channelData.{name} must be an object, not {_kind(part)}."
        for field in ("id", "name"):
            if part.get(field) is not None and not isinstance(part[field], str):
                return f"activity.channelData.{name}.{field} must be a string, not {_kind(part[field])}."
    event_type = channel_data.get("eventType")
    if event_type is not None and not isinstance(event_type, str):
        return f"activity.channelData.eventType must be a string, not {_kind(event_type)}."
    return None


def _card_action(value: Any) -> str | None:
    """An ``adaptiveCard/action`` invoke's ``value``: ``{"action": {"type", "verb", "data"}}``."""
    if not isinstance(value, dict):
        return f"activity.value must be an object, not {_kind(value)}."
    action = value.get("action")
    if not isinstance(action, dict):
        return f"activity.value.action must be an object, not {_kind(action)}."
    for name in ("type", "verb"):
        if action.get(name) is not None and not isinstance(action[name], str):
            return f"activity.value.action.{name} must be a string, not {_kind(action[name])}."
    data = action.get("data")
    if data is None:
        return None
    if not isinstance(data, dict):
        return f"activity.value.action.data must be an object, not {_kind(data)}."
    for name, types in _CARD_DATA_TYPES.items():
        item = data.get(name)
        if item is None:
            continue
        if not isinstance(item, types) or isinstance(item, bool):
            wanted = "an integer" if types == (int,) else "a string"
            return f"activity.value.action.data.{name} must be {wanted}, not {_kind(item)}."
    return None
