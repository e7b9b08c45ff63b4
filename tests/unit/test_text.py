"""cards/text.py: how untrusted text is made inert, case by case and as properties."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cards.text import ELLIPSIS, LEVELS, Limits, cut, fit, inert, joined, json_size, plain
from tests.support.inertcheck import markdown_problems, plain_problems


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Adele Vance", "Adele Vance"),
        ("adele.vance@contoso.com", "adele.vance@contoso.com"),
        ("Patrick O'Brien", "Patrick O'Brien"),
        ("Suspected identity theft (pass-the-ticket)", "Suspected identity theft (pass-the-ticket)"),
        ("needs User.RevokeSessions.All", "needs User.RevokeSessions.All"),
        ("T1550.003 from 10.0.0.7", "T1550.003 from 10.0.0.7"),
        ("e.g. Dr. Smith", "e.g. Dr. Smith"),
        # web addresses are defanged
        ("https://evil.io/reset", "https[://]evil[.]io/reset"),
        ("see www.evil.com now", "see www[.]evil[.]com now"),
        ("security.microsoft.com.evil.io", "security[.]microsoft[.]com[.]evil[.]io"),
        ("https://security.microsoft.com@evil.io/", "https[://]security[.]microsoft[.]com@evil.io/"),
        ("//evil.io/x", "[//]evil[.]io/x"),
        ("evil\u3002io and evil\uff0ezip", "evil[.]io and evil[.]zip"),
        ("EVIL.IO", "EVIL[.]IO"),
        ("www.intranet-host and www.evil.com_0", "www[.]intranet-host and www[.]evil[.]com_0"),
        ("my_file.zip", "my_file[.]zip"),
        ("<https://evil.io>", "<https[://]evil[.]io>"),
        ("evil.io+x evil.io😀 visit evil.io.", "evil[.]io+x evil[.]io😀 visit evil[.]io."),
        ("¢.lee.gu@contoso.com", "¢[.]lee[.]gu@contoso.com"),
        ("a@evil.io|www.evil.com", "a@evil.io|www[.]evil[.]com"),
        # a mail address standing on its own stays readable; glued to other text it does not
        ("Lee Gu (lee.gu@contoso.com)", "Lee Gu (lee.gu@contoso.com)"),
        ("mail lee.gu@contoso.com.", "mail lee.gu@contoso.com."),
        ("x]lee.gu@contoso.com", "x]lee[.]gu@contoso.com"),
        ("¹lee.gu@contoso.com", "¹lee[.]gu@contoso.com"),
        ("lee.gu@contoso.zip", "lee[.]gu@contoso.zip"),
        ("lee.gu@contoso.com\U00018cd6", "lee[.]gu@contoso.com\U00018cd6"),
        ("lee.gu@contoso.com+x", "lee[.]gu@contoso.com+x"),
        ("lee.gu@contoso.com_", "lee[.]gu@contoso.com_"),
        ("lee.gu@contoso.com:443", "lee[.]gu@contoso.com:443"),
        ("lee.gu@contoso.com: hi", "lee.gu@contoso.com: hi"),
        ("evil.рф", "evil[.]рф"),
        # invisible and direction-changing characters go; whitespace becomes one space
        ("abc\u202egnp.exe", "abcgnp.exe"),
        ("a\u2066b\u2069c\u200ed\u200ff\u061cg", "abcdfg"),
        ("zero\u200bwidth\u200djoin\u2060er\ufeff\u00ad", "zerowidthjoiner"),
        ("tag\U000e0041\U000e007f", "tag"),
        ("\u3164\u115fname", "name"),
        ("line one\nline two\r\n\tthree\u2028four", "line one line two three four"),
        ("bell\x07 esc\x1b[31m", "bell esc[31m"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("a\u0301\u0301\u0301\u0301\u0301\u0301", "a\u0301\u0301\u0301"),
    ],
)
def test_plain_shows_untrusted_text_as_data(raw: str, shown: str) -> None:
    assert plain(raw, 200) == shown


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("[click](https://evil.io)", "&#91;click&#93;(https&#91;://&#93;evil&#91;.&#93;io)"),
        ("<at>Megan</at>", "&lt;at&gt;Megan&lt;/at&gt;"),
        (
            "**bold** _it_ ~~x~~ `code` a|b \\",
            "&#42;&#42;bold&#42;&#42; &#95;it&#95; &#126;&#126;x&#126;&#126; &#96;code&#96; a&#124;b &#92;",
        ),
        ("# heading", "&#35; heading"),
        ("- item", "&#45; item"),
        ("+ item", "&#43; item"),
        ("=== setext", "&#61;== setext"),
        ("1. ordered", "1&#46; ordered"),
        ("12) ordered", "12&#41; ordered"),
        ("> quote", "&gt; quote"),
        ("&lt;at&gt;", "&amp;lt;at&amp;gt;"),
        ("a - b + c", "a - b + c"),
    ],
)
def test_inert_writes_markup_as_character_references(raw: str, escaped: str) -> None:
    assert inert(raw, 200) == escaped
    assert markdown_problems(escaped, "value") == []


def test_a_mail_address_right_after_an_opening_quote_is_defanged() -> None:
    assert plain("lee.gu@contoso.com", 50) == "lee.gu@contoso.com"
    assert plain("lee.gu@contoso.com", 50, quoted=True) == "lee[.]gu@contoso.com"
    assert inert("see lee.gu@contoso.com", 50, quoted=True) == "see lee.gu@contoso.com"


def test_a_mail_address_cut_short_is_judged_as_shown() -> None:
    # Cut inside its domain, "evil.io@x.co" is no longer an address an autolinker would see.
    assert plain("Name (evil.io@x.co)", 16) == "Name (evil[.]io@x…"
    assert plain("Name (lee.gu@contoso.com)", 40) == "Name (lee.gu@contoso.com)"
    assert joined(["a (evil.io@x.co)", "b"], 12) == "a (evil[.]i…"


def test_long_values_are_cut_with_an_ellipsis() -> None:
    assert plain("a" * 100_000, 10) == "a" * 9 + ELLIPSIS
    assert cut("short", 10) == "short"
    assert len(plain("x " * 100_000, 500)) == 500
    assert joined(["Alex Wilber", "Megan Bowen", "Rita " * 50], 40).endswith(ELLIPSIS)
    assert len(joined(["n"] * 10_000, 40)) <= 40


def test_fit_renders_with_tighter_limits_until_it_fits() -> None:
    seen: list[Limits] = []

    def render(limits: Limits) -> str:
        seen.append(limits)
        return "x" * (limits.long * 100)

    assert json_size(fit(render, budget=30_000)) <= 30_000
    assert seen == list(LEVELS[:2])
    seen.clear()
    assert json_size(fit(render, budget=10)) > 10, "past the last level, the last rendering is kept"
    assert seen == list(LEVELS)


untrusted = st.text(max_size=300) | st.from_regex(r"[\[\]()<>!#*_~`|\\/:.@&;\-+= \na-z0-9]{0,60}")


@given(untrusted, st.integers(min_value=1, max_value=300))
def test_plain_is_one_visible_line_within_the_limit(raw: str, limit: int) -> None:
    shown = plain(raw, limit)
    undefanged = shown.replace("[.]", ".").replace("[://]", "://").replace("[//]", "//")
    assert len(undefanged) <= limit, "cut to the limit before defanging"
    assert "\n" not in shown and shown == shown.strip()
    assert not [c for c in shown if unicodedata.category(c) in ("Cf", "Cc", "Cs")]
    assert plain(shown, len(shown)) == shown, "plain is idempotent"
    assert plain_problems(shown, "value") == []


@given(untrusted)
def test_inert_text_is_plain_text_to_a_markdown_reader(raw: str) -> None:
    assert markdown_problems(inert(raw, 300), "value") == []


def test_a_value_of_invisible_characters_only_shows_as_nothing() -> None:
    assert plain("\u200b\u202e\u2066 \t\n\ufeff", 50) == ""
    assert inert("\u3164", 50) == ""
