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
3. **Long values are cut** to the caller's limit, ending with ``…``.
4. **Web addresses are defanged** the way security teams write indicators, so no client turns
   them into links: every ``://`` becomes ``[://]``, any other ``//`` becomes ``[//]``, and each dot
   of a host name becomes ``[.]``: ``https://evil.io/x`` reads ``https[://]evil[.]io/x``. A host
   name is what an autolinker (such as linkify-it, the Playground's) could read as one: a run of
   anything but spaces, punctuation and controls, with dots (ideographic and full-width ones
   too), whose first label is ``www`` or whose last label is a top-level domain
   (:mod:`cards.tlds`, or any two-letter, punycode or non-ASCII label); so ``User.Read.All``,
   ``case.opened`` and ``T1550.003`` stay as written. Mail addresses stay readable: the domain
   right after ``@`` (autolinkers never start a web link there), and the name before the ``@``
   when the address is ASCII, stands on its own (after a space or ``(``; before the end, a space
   or punctuation, as UPNs do) and ends in a top-level domain every autolinker knows (``.com``,
   ``.org``, any two letters, ...): the most a client makes of ``lee.gu@contoso.com`` is a
   ``mailto:`` link, which opens a mail draft and cannot lead to a web page. Otherwise the name
   before the ``@`` is defanged too: ``https://security.microsoft.com@evil.io`` reads
   ``https[://]security[.]microsoft[.]com@evil.io``.

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

_DOT_CHARS = ".\u3002\uff0e\uff61"
_DOT = "[.\u3002\uff0e\uff61]"
_DOTS = re.compile(_DOT)
_SLASHES = re.compile(r"(?<![\[:])(?::)?//(?!\])")
_MAILBOX_BEFORE = frozenset(' ("')
# Symbols an autolinker ends a host at, or starts a new link after (linkify-it's list).
_SEPARATORS = frozenset("$+<=>^`|\uff5c")
_WORD = re.compile(r"[^\W_](?:[^\W_]|-)*")
_MAILBOX = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
# A mail domain: ASCII labels, ending where every autolinker agrees a host ends: at the end, a
# space, ASCII punctuation (not a symbol such as + or =; a colon not before a port; a full stop
# only before the end or a space).
_DOMAIN = re.compile(
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+([A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
    r"(?=$|\s|[!\"#%&'()*,/;?@\[\\\]{}<>]|:(?!\d)|\.(?:$|\s))"
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
    card; ``alert_ids``: bytes of JSON the alert ids a case card names may take (all of a
    case's, as a rule: about 180 ids of Defender's 40 characters); ``items``: other lists
    (sign-in risks, steps, lines of a chat answer); ``links``: whether alert titles link to the
    portal; ``refresh``: whether a card carries the user ids of its per-person views.
    """

    name: int = 120
    short: int = 200
    long: int = 500
    alerts: int = 5
    alert_ids: int = 8000
    items: int = 30
    links: bool = True
    refresh: bool = True


# Tried in order by :func:`fit`. The last one fits any input by construction: even with every
# value at its limit in characters that cost 12 bytes of JSON each, a card stays under 10 KB.
LEVELS = (
    Limits(),
    Limits(name=64, short=100, long=250, alerts=3, alert_ids=3000, items=10),
    Limits(name=32, short=48, long=100, alerts=1, alert_ids=600, items=3, links=False),
    Limits(name=16, short=24, long=40, alerts=1, alert_ids=100, items=1, links=False, refresh=False),
)
DEFAULT = LEVELS[0]


def plain(value: object, limit: int, *, quoted: bool = False) -> str:
    """``value`` as one line of inert plain text: at most ``limit`` characters, then defanged
    (which writes ``[.]`` for a dot of a host name, so the result can be longer).

    ``quoted``: the value is shown right after an opening quote (“), which autolinkers do not
    take as the start of a mail address, so a mail address at its very start is defanged too.
    """
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    # Cut early (generously) so a 100,000-character value costs nothing below.
    text = text[: limit * 8 + 1024]
    text = " ".join(_visible(text).split())
    # Cut before defanging: a mail address is judged as it is shown, not as it was before a cut.
    return _defang(cut(text, limit), quoted=quoted)


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
    """Values joined into one plain line of at most ``limit`` characters (before defanging)."""
    parts: list[str] = []
    size = 0
    for value in values:
        part = plain(value, limit)
        size += len(part) + len(separator)
        parts.append(part)
        if size > limit:
            break
    return plain(cut(separator.join(parts), limit), limit)


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
    out: list[str] = []
    start = 0
    while start < len(text):
        if not _in_host(text[start]):
            out.append(text[start])
            start += 1
            continue
        end = start
        while end < len(text) and _in_host(text[end]):
            end += 1
        out.append(_defang_run(text, start, end, quoted=quoted))
        start = end
    return "".join(out)


def _in_host(char: str) -> bool:
    """Whether an autolinker may read ``char`` as part of a host name: like linkify-it, anything
    but spaces, punctuation and controls (so letters, digits, symbols, marks), plus ``-`` and dots."""
    if char == "-" or char in _DOT_CHARS:
        return True
    if char in _SEPARATORS:
        return False
    category = unicodedata.category(char)
    return category[0] not in "ZP" and category != "Cc"


def _defang_run(text: str, start: int, end: int, *, quoted: bool) -> str:
    """One run of host characters, defanged when it reads as a web host."""
    run = text[start:end]
    if start > 0 and text[start - 1] == "@":
        return run  # a mail domain: autolinkers never start a web link right after "@"
    core = run.strip(_DOT_CHARS + "-")
    labels = [label for label in _DOTS.split(core) if label]
    if len(labels) < 2:
        return run
    # "www." makes a link in some autolinkers whatever the top-level domain; others end a host
    # at the first symbol, so the last label counts up to there too ("io" of "io+x").
    last = labels[-1].strip("-")
    word = _WORD.match(last)
    web = (
        labels[0].lower() == "www"
        or _is_top_level(last)
        or (word is not None and _is_top_level(word.group(0).strip("-")))
    )
    if not web or _mailbox(text, start, end, quoted=quoted):
        return run
    at = run.index(core)
    return run[:at] + _DOTS.sub("[.]", core) + run[at + len(core) :]


def _mailbox(text: str, start: int, end: int, *, quoted: bool) -> bool:
    """Whether ``text[start:end]`` is the name before the ``@`` of a mail address that every
    autolinker reads as one address: ASCII, standing on its own (after a space or ``(``), with a
    domain under a top-level domain they all know (``lee.gu@contoso.com``)."""
    if not ((start == 0 and not quoted) or (start > 0 and text[start - 1] in _MAILBOX_BEFORE)):
        return False
    if not _MAILBOX.fullmatch(text, start, end):
        return False
    domain = _DOMAIN.match(text, end)
    return domain is not None and _is_common_top_level(domain.group(1))


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
