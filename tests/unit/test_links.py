"""cards/links.py: an alert's URL is linked only when https on a Microsoft portal host."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cards.links import MICROSOFT_PORTAL_HOSTS, PortalLinks, allowed_url
from tests.support.inertcheck import url_problem

DEFENDER_ALERT = "https://security.microsoft.com/alerts/da123?tid=8f3a1c2e"


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (DEFENDER_ALERT, DEFENDER_ALERT),
        (
            "https://entra.microsoft.com/#view/Microsoft_AAD_IAM/RiskyUsers",
            "https://entra.microsoft.com/#view/Microsoft_AAD_IAM/RiskyUsers",
        ),
        ("HTTPS://SECURITY.MICROSOFT.COM/alerts/x", "https://security.microsoft.com/alerts/x"),
        ("https://security.microsoft.com:443/alerts/x", "https://security.microsoft.com/alerts/x"),
        (
            "https://portal.azure.com/#blade/Microsoft_AAD_IAM/RiskyUsersBlade/userId/6b1d",
            "https://portal.azure.com/#blade/Microsoft_AAD_IAM/RiskyUsersBlade/userId/6b1d",
        ),
        ("https://portal.azure.com/#blade/X/(x)", None),
        ("https://security.microsoft.com/alerts/x)](https://evil.io", None),
        ("https://security.microsoft.com/a'b", None),
        ('https://security.microsoft.com/a"onclick="x', None),
        ("https://security.microsoft.com/<script>", None),
        ("http://security.microsoft.com/alerts/x", None),
        ("javascript:alert(1)", None),
        ("JaVaScRiPt:alert(document.domain)//https://security.microsoft.com", None),
        ("data:text/html,<script>x</script>", None),
        ("https://security.microsoft.com.evil.io/alerts", None),
        ("https://evil.io/security.microsoft.com", None),
        ("https://security.microsoft.com@evil.io/", None),
        ("https://user:pw@security.microsoft.com/", None),
        ("https://security.microsoft.com:8443/", None),
        ("https://security.microsoft.com\\@evil.io/", None),
        ("https://evil.io#@security.microsoft.com", None),
        ("https://xn--scurity-dya.microsoft.com/", None),
        ("https://sécurity.microsoft.com/", None),
        ("https://security.microsoft.com./alerts", None),
        ("//security.microsoft.com/alerts", None),
        ("https://security.microsoft.com/\nalerts", None),
        ("https://security.microsoft.com/" + "a" * 2000, None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_only_https_urls_on_portal_hosts_are_kept(url: object, kept: str | None) -> None:
    assert allowed_url(url) == kept


def test_the_configured_portals_join_the_allow_list() -> None:
    links = PortalLinks(defender="https://security.microsoft.us", entra="https://entra.microsoft.us")
    assert links.hosts == MICROSOFT_PORTAL_HOSTS | {"security.microsoft.us", "entra.microsoft.us"}
    assert (
        links.alert("a1", "https://security.microsoft.us/alerts/a1")
        == "https://security.microsoft.us/alerts/a1"
    )
    assert allowed_url("https://security.microsoft.us/alerts/a1") is None


def test_a_dropped_url_links_the_alert_by_its_id() -> None:
    links = PortalLinks()
    assert links.alert("da1", "https://evil.io/x") == "https://security.microsoft.com/alerts/da1"
    assert links.alert("a/../b?c", None) == "https://security.microsoft.com/alerts/a%2F..%2Fb%3Fc"
    assert links.alert("x" * 5000, None) == "https://security.microsoft.com/alerts"
    assert links.user("id with (parens)", None).endswith("/userId/id%20with%20%28parens%29")
    assert "AllUsers" in links.user("x" * 5000, None)


@given(st.text(max_size=200), st.text(max_size=60))
def test_every_link_the_bot_makes_is_https_on_a_portal_host(url: str, alert_id: str) -> None:
    links = PortalLinks()
    for link in (
        links.alert(alert_id, url),
        links.alert(alert_id, f"https://security.microsoft.com/{url}"),
        links.user(alert_id, None),
    ):
        assert url_problem(link) is None
