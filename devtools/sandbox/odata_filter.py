"""A small OData ``$filter`` parser for the forms the sandbox supports.

Grammar: ``expr := term ('or' term)*``, ``term := factor ('and' factor)*``,
``factor := '(' expr ')' | field op literal``. Literals: ``'string'`` (a quote doubled inside),
unquoted ISO date-times, ``true``/``false``, ``null``. Anything else, an unknown field, or an
operator the field does not support raises :class:`FilterError`: the sandbox answers 400 rather
than silently ignoring a filter it does not understand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from devtools.sandbox.wire import parse_iso

Predicate = Callable[[Mapping[str, Any]], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<string>'(?:[^']|'')*') |
        (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2})) |
        (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)

_EQUALITY = frozenset({"eq", "ne"})
_ORDERING = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})


class FilterError(ValueError):
    """The filter is not one the sandbox understands; the message says where."""


@dataclass(frozen=True)
class Field:
    """A filterable property: ``kind`` is string, datetime or boolean; enums list their members."""

    kind: str
    members: frozenset[str] | None = None


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    position: int


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            snippet = text[position:].strip()[:20]
            raise FilterError(f"Invalid filter clause: cannot read <{snippet}> at {position}")
        tokens.append(_Token(match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, fields: Mapping[str, Field]) -> None:
        self._tokens = _tokens(text)
        self._index = 0
        self._fields = fields

    def parse(self) -> Predicate:
        """The predicate for the whole text; trailing tokens are an error."""
        if not self._tokens:
            raise FilterError("Invalid filter clause: the filter is empty")
        predicate = self._expr()
        if self._index != len(self._tokens):
            extra = self._tokens[self._index]
            raise FilterError(f"Invalid filter clause: unexpected {extra.text!r} at {extra.position}")
        return predicate

    def _peek_word(self, word: str) -> bool:
        if self._index >= len(self._tokens):
            return False
        token = self._tokens[self._index]
        return token.kind == "word" and token.text == word

    def _next(self, expected: str) -> _Token:
        if self._index >= len(self._tokens):
            raise FilterError(f"Invalid filter clause: expected {expected}, found the end")
        token = self._tokens[self._index]
        self._index += 1
        return token

    def _expr(self) -> Predicate:
        terms = [self._term()]
        while self._peek_word("or"):
            self._index += 1
            terms.append(self._term())
        if len(terms) == 1:
            return terms[0]
        return lambda item: any(term(item) for term in terms)

    def _term(self) -> Predicate:
        factors = [self._factor()]
        while self._peek_word("and"):
            self._index += 1
            factors.append(self._factor())
        if len(factors) == 1:
            return factors[0]
        return lambda item: all(factor(item) for factor in factors)

    def _factor(self) -> Predicate:
        token = self._next("a comparison or '('")
        if token.kind == "lparen":
            inner = self._expr()
            if self._next("')'").kind != "rparen":
                raise FilterError(f"Invalid filter clause: ')' missing for '(' at {token.position}")
            return inner
        if token.kind != "word" or token.text in {"and", "or", "not"}:
            raise FilterError(f"Invalid filter clause: unexpected {token.text!r} at {token.position}")
        field = self._fields.get(token.text)
        if field is None:
            raise FilterError(
                f"Invalid filter clause: property '{token.text}' is not filterable here "
                f"(sandbox supports {', '.join(sorted(self._fields))})"
            )
        operator = self._next("an operator")
        allowed = _ORDERING if field.kind == "datetime" else _EQUALITY
        if operator.kind != "word" or operator.text not in allowed:
            raise FilterError(
                f"Invalid filter clause: operator {operator.text!r} is not supported for "
                f"'{token.text}' (use {', '.join(sorted(allowed))})"
            )
        literal = self._literal(self._next("a value"), token.text, field)
        return _compare(token.text, operator.text, literal, field.kind)

    def _literal(self, token: _Token, name: str, field: Field) -> Any:
        if token.kind == "word" and token.text == "null":
            return None
        if field.kind == "string" and token.kind == "string":
            value = token.text[1:-1].replace("''", "'")
            if field.members is not None and value not in field.members:
                raise FilterError(f"The string '{value}' is not a valid enumeration value for '{name}'")
            return value
        if field.kind == "datetime" and token.kind == "datetime":
            return parse_iso(token.text)
        if field.kind == "boolean" and token.kind == "word" and token.text in {"true", "false"}:
            return token.text == "true"
        raise FilterError(
            f"Invalid filter clause: {token.text!r} is not a {field.kind} literal for '{name}'"
            + (" (date-times are not quoted in OData)" if field.kind == "datetime" else "")
        )


def _compare(name: str, operator: str, literal: Any, kind: str) -> Predicate:
    def predicate(item: Mapping[str, Any]) -> bool:
        raw = item.get(name)
        if literal is None or raw is None:
            same = raw is None and literal is None
            return same if operator == "eq" else (not same if operator == "ne" else False)
        value: Any = parse_iso(raw) if kind == "datetime" else raw
        return bool(_OPERATORS[operator](value, literal))

    return predicate


_OPERATORS: Mapping[str, Callable[[Any, Any], bool]] = MappingProxyType(
    {
        "eq": lambda a, b: a == b,
        "ne": lambda a, b: a != b,
        "gt": lambda a, b: a > b,
        "ge": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "le": lambda a, b: a <= b,
    }
)


def parse_filter(text: str, fields: Mapping[str, Field]) -> Predicate:
    """Compile ``text`` into a predicate over Graph objects, or raise :class:`FilterError`."""
    return _Parser(text, fields).parse()
