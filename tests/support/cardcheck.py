"""Check an Adaptive Card the way Teams will take it: the official 1.5 schema plus Teams' own rules.

``check_card(card)`` returns a list of problems, each ``"<JSON path>: <what is wrong>"``; an empty
list means the card is valid. The schema is the official Adaptive Cards 1.5 JSON schema, vendored
byte-identical in ``tests/contract/adaptive-card-1.5.schema.json`` (see ADAPTIVE-CARD-SCHEMA.md
beside it for where it came from). It is JSON Schema draft-06, so it is checked with the
validator its ``$schema`` names.

On top of the schema, the rules of this bot and of Teams that the schema cannot express:

- the top level is ``"type": "AdaptiveCard"`` with a ``version`` of 1.5 or lower (Teams renders
  up to 1.5; the schema only says ``version`` is a string);
- no ``Action.Submit`` anywhere: the bot uses Universal Actions (``Action.Execute``) only;
- every ``Action.Execute`` has a non-empty ``verb``;
- no ``Media`` element anywhere (Teams does not play it in bot cards);
- an image whose size is given in pixels is at most 1024x1024;
- ``refresh.userIds`` has at most 60 entries (Teams ignores automatic refresh beyond that);
- the card's JSON is at most 28 KB (Teams' limit for a whole message).

The top-level ``msteams`` property is Teams' extension of the card (``{"width": "Full"}``): the
official schema forbids unknown top-level properties, so it is checked here and left out of the
schema validation.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "contract" / "adaptive-card-1.5.schema.json"

MAX_VERSION = (1, 5)
MAX_CARD_BYTES = 28 * 1024
MAX_IMAGE_PIXELS = 1024
MAX_REFRESH_USER_IDS = 60
MSTEAMS_WIDTHS = ("Full",)
MSTEAMS_KEYS = frozenset({"width", "entities"})

_PIXELS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*px\s*$", re.IGNORECASE)
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


@cache
def schema_validator() -> Validator:
    """The validator of the vendored schema, for the JSON Schema draft the schema declares."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def check_card(card: dict[str, Any]) -> list[str]:
    """Every problem that would make Teams reject or mis-render ``card``; ``[]`` when there is none."""
    if not isinstance(card, dict):
        return [f"$: a card is a JSON object, not {type(card).__name__}"]
    problems = _check_msteams(card)
    problems += _check_schema({k: v for k, v in card.items() if k != "msteams"})
    problems += _check_top_level(card)
    problems += _check_elements(card)
    problems += _check_size(card)
    return problems


# -- the official schema ------------------------------------------------------------------------


def _check_schema(card: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    errors = sorted(schema_validator().iter_errors(card), key=lambda e: list(e.absolute_path))
    for error in errors:
        for leaf in _explain(error):
            problems.append(f"{leaf.json_path}: {leaf.message}")
    return problems


def _explain(error: ValidationError) -> list[ValidationError]:
    """The errors that say what is wrong, instead of "is not valid under any of the given schemas".

    The schema picks an element's definition with ``anyOf`` over every element type. When one
    branch accepts the instance's ``type``, its errors are the ones to show; when none does, the
    type is unknown and the message lists the known ones.
    """
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return [error]
    branches: dict[Any, list[ValidationError]] = defaultdict(list)
    for sub in error.context:
        branches[sub.relative_schema_path[0]].append(sub)
    type_rejected = {key for key, subs in branches.items() if any(_rejects_type(sub) for sub in subs)}
    matching = [subs for key, subs in branches.items() if key not in type_rejected]
    if len(matching) == 1:  # the only branch, or the only one for the instance's type
        return [leaf for sub in matching[0] for leaf in _explain(sub)]
    if type_rejected and not matching and isinstance(error.instance, dict):
        known = sorted(_branch_types(error.validator_value))
        given = error.instance.get("type")
        message = (
            f"unknown type {given!r} (known here: {', '.join(known)})"
            if given is not None
            else f"'type' is missing (one of: {', '.join(known)})"
        )
        return [ValidationError(message, path=error.absolute_path, instance=error.instance)]
    return [error]


def _rejects_type(error: ValidationError) -> bool:
    """Whether ``error`` says the instance's ``type`` property is not this branch's type."""
    if list(error.relative_path) == ["type"] and error.validator == "enum":
        return True
    # "required": ["type"] failing: the branch needs a type the instance does not have.
    return error.validator == "required" and "'type'" in error.message and not error.relative_path


def _branch_types(branches: Any) -> Iterator[str]:
    """The element types an ``anyOf`` offers: its branches are ``{"allOf": [{"$ref": ".../X"}]}``."""
    for branch in branches if isinstance(branches, list) else ():
        for part in branch.get("allOf", ()) if isinstance(branch, dict) else ():
            ref = part.get("$ref") if isinstance(part, dict) else None
            if isinstance(ref, str):
                yield ref.rsplit("/", 1)[-1]


# -- Teams rules --------------------------------------------------------------------------------


def _check_msteams(card: dict[str, Any]) -> list[str]:
    if "msteams" not in card:
        return []
    msteams = card["msteams"]
    if not isinstance(msteams, dict):
        return ["$.msteams: must be an object"]
    problems = [f"$.msteams: unknown property {key!r}" for key in sorted(set(msteams) - MSTEAMS_KEYS)]
    if "width" in msteams and msteams["width"] not in MSTEAMS_WIDTHS:
        problems.append(f"$.msteams.width: {msteams['width']!r} is not one of {list(MSTEAMS_WIDTHS)}")
    if "entities" in msteams and not isinstance(msteams["entities"], list):
        problems.append("$.msteams.entities: must be an array")
    return problems


def _check_top_level(card: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if card.get("type") != "AdaptiveCard":
        problems.append(f"$.type: must be 'AdaptiveCard', not {card.get('type')!r}")
    version = card.get("version")
    if version is None:
        problems.append("$.version: missing (Teams needs it on the top-level card)")
    else:
        match = _VERSION.match(str(version))
        if match is None:
            problems.append(f"$.version: {version!r} is not a version like '1.5'")
        elif (int(match[1]), int(match[2])) > MAX_VERSION:
            problems.append(f"$.version: {version!r} is newer than 1.5, the highest Teams renders")
    refresh = card.get("refresh")
    if isinstance(refresh, dict):
        user_ids = refresh.get("userIds")
        if isinstance(user_ids, list) and len(user_ids) > MAX_REFRESH_USER_IDS:
            problems.append(
                f"$.refresh.userIds: {len(user_ids)} entries; Teams refreshes automatically "
                f"for at most {MAX_REFRESH_USER_IDS}"
            )
    return problems


def _walk(node: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON object in ``node`` with its JSON path, parents before children."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if re.fullmatch(r"\w+", key) else f"{path}[{key!r}]")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def _check_elements(card: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for path, node in _walk(card):
        kind = node.get("type")
        if kind == "Action.Submit":
            problems.append(f"{path}: Action.Submit is not allowed; use Action.Execute (Universal Actions)")
        elif kind == "Action.Execute":
            verb = node.get("verb")
            if not isinstance(verb, str) or not verb.strip():
                problems.append(f"{path}: Action.Execute needs a verb")
        elif kind == "Media":
            problems.append(f"{path}: Media elements are not allowed in Teams bot cards")
        elif kind == "Image":
            problems += _check_image(path, node)
        elif kind == "ImageSet":
            for index, image in enumerate(node.get("images") or ()):
                # An ImageSet's images may omit "type"; those with it are checked by the walk.
                if isinstance(image, dict) and "type" not in image:
                    problems += _check_image(f"{path}.images[{index}]", image)
    return problems


def _check_image(path: str, image: dict[str, Any]) -> list[str]:
    problems = []
    for dimension in ("width", "height"):
        value = image.get(dimension)
        match = _PIXELS.match(value) if isinstance(value, str) else None
        if match and float(match[1]) > MAX_IMAGE_PIXELS:
            problems.append(
                f"{path}.{dimension}: {value!r} is larger than Teams' {MAX_IMAGE_PIXELS}px image limit"
            )
    return problems


def _check_size(card: dict[str, Any]) -> list[str]:
    # Measured as Python's HTTP clients send it (json.dumps defaults: ASCII escapes, ", " and ": "),
    # which is never smaller than the compact form.
    size = len(json.dumps(card).encode("utf-8"))
    if size > MAX_CARD_BYTES:
        return [f"$: the card is {size} bytes of JSON; Teams takes at most {MAX_CARD_BYTES} (28 KB)"]
    return []
