"""Reading an untrusted JSON body without letting it hurt the process.

Both inbound endpoints (``/api/messages`` and ``/api/alerts``) read bodies written by someone we
have not authenticated yet. :func:`load_json` refuses, with a sentence naming what is wrong:

- bytes that are not UTF-8 (RFC 8259 asks for UTF-8, and Python's JSON reader would otherwise
  guess UTF-16 or UTF-32);
- nesting deeper than :data:`MAX_DEPTH` -- checked on the raw bytes *before* parsing, because the
  parser recurses and a few kilobytes of ``[`` exhaust the interpreter's stack;
- ``NaN``, ``Infinity`` and numbers too large for a float or an integer;
- strings holding a lone UTF-16 surrogate (``"\\ud800"``: no UTF-8 encoding exists, so every
  store would fail to write it) or a NUL character (PostgreSQL text refuses it).

Nothing here does I/O; the checks cost one pass over the bytes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterable
from typing import Any

MAX_DEPTH = 32
"""The deepest nesting of arrays and objects accepted (Teams activities and Graph alerts use < 10)."""

# A JSON string literal (RFC 8259): quote, unescaped runs and escape pairs, quote. An unclosed
# one runs to the end (the body is invalid anyway): so a match never fails once it starts at a
# quote, and with possessive quantifiers the scan is linear even on ``"\"\"\"...``.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")
_OPENERS = frozenset(b"[{")
# A lone surrogate or a NUL can only come from a \u escape: the raw text is valid UTF-8.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
_BAD_CHARACTER = re.compile("[\ud800-\udfff\x00]")


class UnsafeJson(ValueError):
    """The body cannot be read safely; ``message`` says why, in one sentence for the sender."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def read_at_most(chunks: AsyncIterable[bytes], limit: int) -> bytes | None:
    """The whole body from ``chunks``, or ``None`` as soon as it grows past ``limit`` bytes.

    (aiohttp's ``content.read(n)`` returns only what has arrived so far, which for a body sent
    in several packets is a part of it.)
    """
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``raw`` nests arrays/objects deeper than ``limit`` (without parsing it).

    Brackets inside string literals are ignored. For malformed input the count may come out
    too high, never too low for the part a parser would accept, so it is safe to refuse on.
    """
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    depth = 0
    for byte in brackets:
        if byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def load_json(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` or raise :class:`UnsafeJson` saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeJson(f"The body is not UTF-8 (byte {exc.start} is invalid).") from None
    if too_deep(raw, max_depth):
        raise UnsafeJson(f"The body nests arrays and objects deeper than {max_depth} levels.")
    try:
        data = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise UnsafeJson(f"The body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        # Integers over 4300 digits, NaN/Infinity, 1e999: refused by the hooks above or by int().
        raise UnsafeJson(f"The body is not valid JSON: {str(exc)[:120]}") from None
    if _SUSPECT_ESCAPE.search(raw):
        where = _find_bad_string(data)
        if where is not None:
            raise UnsafeJson(
                f"{where} holds a lone UTF-16 surrogate or a NUL character (a \\u escape such as "
                "\\ud800 or \\u0000), which is not valid text."
            )
    return data


def _find_bad_string(data: Any) -> str | None:
    """The path of the first string (or key) holding a lone surrogate or a NUL, if any."""
    stack: list[tuple[str, Any]] = [("$", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _BAD_CHARACTER.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if _BAD_CHARACTER.search(key):
                    return f"A key in {path}"
                stack.append((f"{path}.{key[:40]}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return None
