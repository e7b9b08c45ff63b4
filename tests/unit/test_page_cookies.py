"""The approval page's sealed cookies and strict form reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.web.approval_page import CookieSealer, FormProblem, _Expired, _Forged, read_form

NOW = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
KEY = "a test key of at least thirty-two characters"


def test_a_sealed_cookie_opens_for_its_purpose_within_its_age() -> None:
    sealer = CookieSealer(KEY)
    token = sealer.seal("session", {"oid": "x"}, NOW)

    assert sealer.open("session", token, NOW + timedelta(minutes=14), 900)["oid"] == "x"
    with pytest.raises(_Expired):
        sealer.open("session", token, NOW + timedelta(minutes=16), 900)
    with pytest.raises(_Forged):
        sealer.open("flow", token, NOW, 900)  # a sign-in cookie is no session
    with pytest.raises(_Forged):
        CookieSealer("another key of at least thirty-two characters").open("session", token, NOW, 900)
    with pytest.raises(_Forged):
        sealer.open("session", token[:-4] + "AAAA", NOW, 900)
    with pytest.raises(_Forged):
        sealer.open("session", "é" + token, NOW, 900)


def test_csrf_tokens_are_bound_to_the_session() -> None:
    sealer = CookieSealer(KEY)

    assert sealer.csrf("s1") == sealer.csrf("s1") != sealer.csrf("s2")
    assert CookieSealer("another key of at least thirty-two characters").csrf("s1") != sealer.csrf("s1")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"verb=approve&verb=reject", 400),
        (b"verb=approve&extra=1", 400),
        (b"reason=%ff", 400),
        (b"reason=\xff", 400),
        (b"reason=a%00b", 400),
        (b"reason=%ed%a0%80", 400),  # a lone surrogate, encoded
        (b"&&&=", 400),
    ],
)
def test_a_hostile_form_is_refused(body: bytes, status: int) -> None:
    with pytest.raises(FormProblem) as caught:
        read_form(body)
    assert caught.value.status == status


def test_a_form_reads_its_fields() -> None:
    assert read_form(b"csrf=abc&verb=approve&reason=caf%C3%A9+ok") == {
        "csrf": "abc",
        "verb": "approve",
        "reason": "café ok",
    }
