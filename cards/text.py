"""Text from outside, shown as data: the one place that decides how untrusted text is rendered.

Everything the bot shows that it did not write itself is untrusted: display names and UPNs,
alert titles, techniques and detection sources, reasons and notes typed on a card, the names
Teams sends with a click, chat arguments, messages and ids Graph returns, every pushed field.
Such text never becomes markup. Every renderer (the case card, thread replies, alert comments,
chat answers, mention names) goes through the two functions here:

- :func:`plain` for places no markdown reads (``TextRun`` in a ``RichTextBlock``, the plain-text
  comment on a Defender alert, the message of an invoke error);
- :func:`inert` for markdown places (``TextBlock`` text, ``Fact`` values, message text in a
  thread or chat): :func:`plain`, then every character markdown or HTML could read as structure
  written as a character reference.

What :func:`plain` does, in order:

1. **Invisible and direction-changing characters are removed**: every Unicode format character
   (category Cf: the bidirectional embeddings, overrides and isolates U+202A–U+202E and
   U+2066–U+2069, the marks U+200E/U+200F/U+061C, zero-width spaces and joiners, the word
   joiner, the byte order mark, soft hyphens, tag characters), the Hangul fillers and the
   combining grapheme joiner that display as nothing, and control characters. Lone surrogates
   become U+FFFD. More than three combining marks on one character are dropped.
2. **All whitespace becomes one space** (line breaks too), so a value is one line and cannot
   start a heading, a list, a quote or a table row of its own.
3. **Web addresses are defanged** the way security teams write indicators, so no client turns
   them into links: every ``://`` becomes ``[://]``, any other ``//`` becomes ``[//]``, and each dot
   of a host name becomes ``[.]``: ``https://evil.io/x`` reads ``https[://]evil[.]io/x``. A host
   name is a run of dotted labels (ideographic and full-width dots too) whose last label is a
   top-level domain (:mod:`cards.tlds`, or any two-letter, punycode or non-ASCII label), so
   ``User.Read.All``, ``case.opened`` and ``T1550.003`` stay as written. The domain of a mail
   address stays readable — the host right after ``@``, and the name before it when the address
   is ASCII, stands on its own (after a space or ``(``, as UPNs do) and ends in a top-level
   domain every autolinker knows (``.com``, ``.org``, ``.net``, any two letters, ...):
   autolinkers never start a web link at an ``@``, and the most a client makes of
   ``lee.gu@contoso.com`` is a ``mailto:`` link, which opens a mail draft and cannot lead to a
   web page. Otherwise the name before the ``@`` is defanged too:
   ``https://security.microsoft.com@evil.io`` reads
   ``https[://]security[.]microsoft[.]com@evil.io``.
4. **Long values are cut** to the caller's limit, ending with ``…``.

What :func:`inert` adds for markdown: ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;`` and
``&gt;`` (so no HTML tag, ``<at>`` mention or ``<https://…>`` autolink can form), and
``\\ ` * _ ~ [ ] # |`` become numeric character references, as do ``-``, ``+`` and ``=`` and a
number's ``.`` or ``)`` at the start of the value. CommonMark never reads a character reference
as structure, so the text shows as typed and forms no emphasis, code, link, image, heading,
list or table; hosts that render HTML decode the references the same way.

Sizes: every renderer passes a :class:`Limits` and cuts each value to it; :func:`fit` renders
again with tighter limits until the whole message fits :data:`MESSAGE_BUDGET`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from cards.tlds import TOP_LEVEL_DOMAINS

ELLIPSIS = "…"

# Teams refuses a message (card or text) above 28 KB; newer documents count 40 KB in UTF-16.
# Rendered messages are kept to 20 KB of JSON as the bot sends it (non-ASCII escaped, so never
# less than the UTF-8 size): that leaves room for the activity's envelope under 28 KB, and 20 KB
# of ASCII is 40 KB in UTF-16.
MAX_MESSAGE_BYTES = 28 * 1024
MESSAGE_BUDGET = 20 * 1024

# Characters that display as nothing but are not format characters.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0\u2800")
_MAX_MARKS = 3

_DOT = "[.\u3002\uff0e\uff61]"
_LABEL = r"[^\W_][\w-]*"
_HOST = re.compile(rf"(?<![\w.@-])(?:{_LABEL}{_DOT})+[^\W\d_][\w-]*[^\W_]")
_SLASHES = re.compile(r"(?<![\[:])(?::)?//(?!\])")
_DOTS = re.compile(_DOT)
_MAILBOX_BEFORE = frozenset(' ("')
# A mail domain must end where every Unicode version agrees a host ends: at the end, a space or
# ASCII punctuation (a full stop only before the end or a space).
_DOMAIN = re.compile(
    rf"@(?:{_LABEL}{_DOT})+([^\W\d_][\w-]*[^\W_])(?=$|\s|[!\"#$%&'()*+,/:;<=>?@\[\\\]^`{{|}}~]|\.(?:$|\s))"
)
# Top-level domains every autolinker knows (linkify-it's defaults, besides any two letters).
_COMMON_NAMES = "biz com edu gov net org pro web xxx aero asia coop info museum name shop"
_COMMON_TOP_LEVEL = frozenset(_COMMON_NAMES.split())

_MARKDOWN = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "\\": "&#92;",
    "`": "&#96;",
    "*": "&#42;",
    "_": "&#95;",
    "~": "&#126;",
    "[": "&#91;",
    "]": "&#93;",
    "#": "&#35;",
    "|": "&#124;",
}
_MARKDOWN_TABLE = str.maketrans(_MARKDOWN)
_LEADING = {"-": "&#45;", "+": "&#43;", "=": "&#61;"}
_ORDERED = re.compile(r"^(\d{1,9})([.)])")


@dataclass(frozen=True)
class Limits:
    """How many characters of each kind of untrusted value a message shows, and how many items.

    ``name``: a person's name, a UPN or an id; ``short``: a title, a technique list, a fact;
    ``long``: a reason, a note, a result or an error message; ``alerts``: alerts listed on a
    card; ``items``: other lists (sign-in risks, steps, lines of a chat answer); ``links``:
    whether alert titles link to the portal; ``refresh``: whether a card carries the user ids
    of its per-person views.
    """

    name: int = 120
    short: int = 200
    long: int = 500
    alerts: int = 5
    items: int = 30
    links: bool = True
    refresh: bool = True


# Tried in order by :func:`fit`. The last one fits any input by construction: even with every
# value at its limit in characters that cost 12 bytes of JSON each, a card stays under 10 KB.
LEVELS = (
    Limits(),
    Limits(name=64, short=100, long=250, alerts=3, items=10),
    Limits(name=32, short=48, long=100, alerts=1, items=3, links=False),
    Limits(name=16, short=24, long=40, alerts=1, items=1, links=False, refresh=False),
)
DEFAULT = LEVELS[0]


def plain(value: object, limit: int, *, quoted: bool = False) -> str:
    """``value`` as one line of inert plain text of at most ``limit`` characters.

    ``quoted``: the value is shown right after an opening quote (“), which autolinkers do not
    take as the start of a mail address, so a mail address at its very start is defanged too.
    """
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    # Cut early (generously) so a 100,000-character value costs nothing below.
    text = text[: limit * 8 + 1024]
    text = " ".join(_visible(text).split())
    text = _defang(text, quoted=quoted)
    return cut(text, limit)


def inert(value: object, limit: int, *, quoted: bool = False) -> str:
    """``value`` for a markdown context: :func:`plain`, then markup written as references."""
    return escape_markdown(plain(value, limit, quoted=quoted))


def escape_markdown(text: str) -> str:
    """``text`` (already :func:`plain`) with every markdown and HTML structure character escaped."""
    escaped = text.translate(_MARKDOWN_TABLE)
    if escaped[:1] in _LEADING:
        escaped = _LEADING[escaped[0]] + escaped[1:]
    ordered = _ORDERED.match(escaped)
    if ordered:
        escaped = f"{ordered[1]}&#{ord(ordered[2])};{escaped[ordered.end() :]}"
    return escaped


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last being ``…`` when anything was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def joined(values: Iterable[object], limit: int, *, separator: str = ", ") -> str:
    """Values joined into one plain line of at most ``limit`` characters."""
    parts: list[str] = []
    size = 0
    for value in values:
        part = plain(value, limit)
        size += len(part) + len(separator)
        parts.append(part)
        if size > limit:
            break
    return cut(separator.join(parts), limit)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON the way the bot's HTTP client sends it (non-ASCII escaped)."""
    return len(json.dumps(value).encode("utf-8"))


T = TypeVar("T")


def fit(render: Callable[[Limits], T], *, budget: int = MESSAGE_BUDGET) -> T:
    """The first rendering, from the most generous :data:`LEVELS` down, that fits ``budget``."""
    rendered = render(LEVELS[0])
    for limits in LEVELS[1:]:
        if json_size(rendered) <= budget:
            break
        rendered = render(limits)
    return rendered


def _visible(text: str) -> str:
    if text.isascii() and text.isprintable():
        return text
    out: list[str] = []
    marks = 0
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            out.append("\ufffd")
            marks = 0
        elif category in ("Cf", "Cc") or char in _INVISIBLE:
            if char.isspace():
                out.append(" ")
        elif category in ("Mn", "Me"):
            marks += 1
            if marks <= _MAX_MARKS:
                out.append(char)
        else:
            marks = 0
            out.append(char)
    return "".join(out)


def _defang(text: str, *, quoted: bool) -> str:
    """Web addresses written so no client links them; mail addresses left as they are."""
    text = _SLASHES.sub(lambda m: f"[{m.group(0)}]", text)
    return _HOST.sub(lambda match: _defang_host(match, quoted=quoted), text)


def _defang_host(match: re.Match[str], *, quoted: bool) -> str:
    name = match.group(0)
    if not _is_top_level(_DOTS.split(name)[-1]) or _mailbox(match, quoted=quoted):
        return name
    return _DOTS.sub("[.]", name)


def _mailbox(match: re.Match[str], *, quoted: bool) -> bool:
    """Whether the host-like name is the part before the ``@`` of a mail address that every
    autolinker reads as one address: ASCII, standing on its own (after a space or ``(``), with a
    domain under a top-level domain they all know (``lee.gu@contoso.com``)."""
    text, start, end = match.string, match.start(), match.end()
    if not ((start == 0 and not quoted) or (start > 0 and text[start - 1] in _MAILBOX_BEFORE)):
        return False
    domain = _DOMAIN.match(text, end)
    return (
        domain is not None
        and (match.group(0) + domain.group(0)).isascii()
        and _is_common_top_level(domain.group(1))
    )


def _is_common_top_level(label: str) -> bool:
    label = label.lower()
    return label in _COMMON_TOP_LEVEL or (len(label) == 2 and label.isascii() and label.isalpha())


def _is_top_level(label: str) -> bool:
    label = label.lower()
    return (
        label in TOP_LEVEL_DOMAINS
        or (len(label) == 2 and label.isalpha())
        or label.startswith("xn--")
        or not label.isascii()
    )
