"""Check that what the bot renders carries no markup it did not write itself.

Markdown is read the way the Microsoft 365 Agents Playground (and Microsoft's own Teams samples)
read it: markdown-it in CommonMark mode with HTML and linkify on. Plain text (``TextRun``s, alert
comments) is searched with linkify-it, the autolinker Teams-like clients use.

- :func:`card_problems`: every ``Action.OpenUrl`` (button or ``selectAction``) is https on an
  allowed host; no mention entity; every ``TextBlock`` and fact is one paragraph of plain text
  (no link, HTML, heading, list, code or emphasis); no ``TextRun`` holds a web address a client
  could link; no invisible or direction-changing character anywhere.
- :func:`message_problems`: every link of a markdown message goes to an allowed https host (or is
  a ``mailto:`` made of a mail address in the text); no HTML; no invisible characters; and, given
  the same message rendered from neutral values, the markdown structure is the same: untrusted
  text added no block, list item, emphasis, code span or link.
- :func:`plain_problems`: no web address a client could link, no invisible characters.

Mail addresses are the one allowed autolink: a client may make ``mailto:`` links of UPNs
(see ``cards/text.py``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from linkify_it import LinkifyIt
from markdown_it import MarkdownIt
from markdown_it.token import Token

from cards.links import MICROSOFT_PORTAL_HOSTS

ALLOWED_HOSTS = MICROSOFT_PORTAL_HOSTS | {"teams.microsoft.com"}
_MARKDOWN = MarkdownIt("commonmark", {"html": True, "linkify": True}).enable("linkify")
_LINKIFY = LinkifyIt()
_PLAIN_TOKENS = {"paragraph_open", "paragraph_close", "inline", "text", "softbreak"}


def invisible(text: str) -> list[str]:
    """Format and control characters (bidi overrides, zero-width, ...) other than line breaks."""
    return [
        f"U+{ord(c):04X}"
        for c in text
        if unicodedata.category(c) in ("Cf", "Cs") or (unicodedata.category(c) == "Cc" and c != "\n")
    ]


def url_problem(url: str, hosts: frozenset[str] = ALLOWED_HOSTS) -> str | None:
    """Why ``url`` is not a link the bot may make, or None."""
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.netloc not in hosts:
        return f"link to {url[:120]!r} is not https on an allowed host"
    if any(c in url for c in " ()<>\"'[]`\\"):
        return f"link {url[:120]!r} holds a character that could end a markdown link"
    return None


def _walk(node: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


_SHOWN = frozenset({"text", "title", "value", "fallbackText", "label", "placeholder", "errorMessage"})


def _shown(node: Any) -> Iterator[str]:
    """Every string of a card that a person reads (not ids in data or refresh lists)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _SHOWN and isinstance(value, str):
                yield value
            else:
                yield from _shown(value)
    elif isinstance(node, list):
        for value in node:
            yield from _shown(value)


def _flat(tokens: list[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        if token.children:
            yield from _flat(token.children)


def _mailto(token: Token, text: str) -> bool:
    # An autolinked mail address (the text it came from may be punycoded in the href).
    href = str(token.attrs.get("href", ""))
    return href[:7].lower() == "mailto:" and "@" in text


def markdown_problems(text: str, where: str) -> list[str]:
    """Problems of ``text`` that must read as plain text in a markdown context."""
    problems = [f"{where}: invisible character {c}" for c in invisible(text)]
    decoded = "".join(t.content for t in _flat(_MARKDOWN.parse(text)) if t.type == "text")
    for token in _flat(_MARKDOWN.parse(text)):
        if token.type in ("link_open", "link_close"):
            if token.type == "link_open" and not _mailto(token, decoded):
                problems.append(f"{where}: a link to {token.attrs.get('href')!r} in {text[:120]!r}")
        elif token.type not in _PLAIN_TOKENS:
            problems.append(f"{where}: markdown {token.type} in {text[:120]!r}")
    return problems


def plain_problems(text: str, where: str) -> list[str]:
    """Problems of ``text`` shown where no markdown is read."""
    problems = [f"{where}: invisible character {c}" for c in invisible(text)]
    for match in _LINKIFY.match(text) or []:
        if match.url[:7].lower() != "mailto:":
            problems.append(f"{where}: a client would link {match.raw!r} in {text[:120]!r}")
    return problems


def card_problems(card: dict[str, Any], hosts: frozenset[str] = ALLOWED_HOSTS) -> list[str]:
    """Markup in ``card`` that the bot did not write (see the module docstring)."""
    problems: list[str] = []
    for text in _shown(card):
        problems += [f"$: invisible character {c} in {text[:80]!r}" for c in invisible(text)]
    msteams = card.get("msteams")
    if isinstance(msteams, dict) and msteams.get("entities"):
        problems.append("$.msteams.entities: the card mentions someone")
    for path, node in _walk(card):
        kind = node.get("type")
        if kind == "Action.OpenUrl":
            problem = url_problem(str(node.get("url")), hosts)
            if problem:
                problems.append(f"{path}: {problem}")
        elif kind == "TextBlock":
            problems += markdown_problems(str(node.get("text", "")), path)
        elif kind == "TextRun":
            problems += plain_problems(str(node.get("text", "")), path)
        elif kind == "FactSet":
            for index, fact in enumerate(node.get("facts") or []):
                problems += markdown_problems(str(fact.get("title", "")), f"{path}.facts[{index}].title")
                problems += markdown_problems(str(fact.get("value", "")), f"{path}.facts[{index}].value")
        elif kind == "mention":
            problems.append(f"{path}: a mention")
    return problems


def structure(text: str) -> list[str]:
    """The markdown structure of ``text``: token types, text runs merged, ``mailto:`` links as text."""
    tokens = list(_flat(_MARKDOWN.parse(text)))
    decoded = "".join(t.content for t in tokens if t.type == "text")
    shape: list[str] = []
    inside_mailto = False
    for token in tokens:
        kind = token.type
        if kind == "link_open" and _mailto(token, decoded):
            inside_mailto = True
            kind = "text"
        elif kind == "link_close" and inside_mailto:
            inside_mailto = False
            kind = "text"
        elif inside_mailto:
            kind = "text"
        if kind == "text" and shape and shape[-1] == "text":
            continue
        shape.append(kind)
    return shape


def message_problems(
    text: str, neutral: str | None = None, hosts: frozenset[str] = ALLOWED_HOSTS
) -> list[str]:
    """Markup in a markdown message the bot did not write; ``neutral`` is the same message rendered
    from harmless values (its structure is what the bot wrote)."""
    problems = [f"message: invisible character {c}" for c in invisible(text)]
    tokens = list(_flat(_MARKDOWN.parse(text)))
    decoded = "".join(t.content for t in tokens if t.type == "text")
    for token in tokens:
        if token.type in ("html_inline", "html_block"):
            problems.append(f"message: HTML {token.content[:80]!r}")
        elif token.type == "link_open" and not _mailto(token, decoded):
            problem = url_problem(str(token.attrs.get("href")), hosts)
            if problem:
                problems.append(f"message: {problem}")
    if neutral is not None:
        got, wanted = structure(text), structure(neutral)
        if got != wanted:
            problems.append(f"message: its markdown structure changed: {got} instead of {wanted}\n{text}")
    return problems
