"""The sandbox's $filter parser: the forms the bot sends, and loud refusals for the rest."""

from __future__ import annotations

import re
from typing import Any

import pytest

from devtools.sandbox.odata_filter import Field, FilterError, parse_filter

FIELDS = {
    "serviceSource": Field(
        "string", frozenset({"microsoftDefenderForIdentity", "azureAdIdentityProtection"})
    ),
    "status": Field("string", frozenset({"new", "inProgress", "resolved"})),
    "userPrincipalName": Field("string"),
    "lastUpdateDateTime": Field("datetime"),
    "createdDateTime": Field("datetime"),
    "isDeleted": Field("boolean"),
}

MDI = {
    "serviceSource": "microsoftDefenderForIdentity",
    "status": "new",
    "userPrincipalName": "patrick.o'brien@contoso.com",
    "lastUpdateDateTime": "2026-11-24T09:00:00.5000000Z",
    "createdDateTime": "2026-11-24T08:00:00Z",
    "isDeleted": False,
}
IDP = {**MDI, "serviceSource": "azureAdIdentityProtection", "status": "resolved"}


def _matches(text: str, *items: dict[str, Any]) -> list[bool]:
    predicate = parse_filter(text, FIELDS)
    return [predicate(item) for item in items]


def test_the_clients_alert_filter() -> None:
    text = (
        "(serviceSource eq 'microsoftDefenderForIdentity' or serviceSource eq "
        "'azureAdIdentityProtection') and lastUpdateDateTime gt 2026-11-24T09:00:00Z"
    )
    assert _matches(text, MDI, IDP) == [True, True]
    assert _matches(text.replace("09:00:00Z", "09:00:00.6Z"), MDI) == [False]


def test_and_binds_tighter_than_or() -> None:
    text = (
        "serviceSource eq 'azureAdIdentityProtection' or "
        "serviceSource eq 'microsoftDefenderForIdentity' and status eq 'resolved'"
    )
    assert _matches(text, MDI, IDP) == [False, True]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("createdDateTime ge 2026-11-24T08:00:00Z", [True, True]),
        ("createdDateTime lt 2026-11-24T08:00:00+00:00", [False, False]),
        ("status eq 'new'", [True, False]),
        ("status ne 'new'", [False, True]),
        ("userPrincipalName eq 'patrick.o''brien@contoso.com'", [True, True]),
        ("isDeleted eq false", [True, True]),
    ],
)
def test_supported_comparisons(text: str, expected: list[bool]) -> None:
    assert _matches(text, MDI, IDP) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("contains(title, 'x')", "cannot read <, 'x')> at 14"),
        ("title eq 'x'", "property 'title' is not filterable"),
        ("status gt 'new'", "operator 'gt' is not supported"),
        ("lastUpdateDateTime gt '2026-11-24T09:00:00Z'", "date-times are not quoted"),
        ("serviceSource eq 'microsoftDefenderForIdentities'", "not a valid enumeration value"),
        ("(status eq 'new'", "expected ')', found the end"),
        ("status eq 'new' status eq 'new'", "unexpected 'status'"),
        ("status eq", "expected a value"),
        ("status eq 'new' && status eq 'new'", "cannot read <&& status eq 'new'> at 15"),
        ("", "empty"),
    ],
)
def test_anything_else_is_refused(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=re.escape(message)):
        parse_filter(text, FIELDS)


def test_datetime_literals_keep_their_fractions() -> None:
    assert _matches("lastUpdateDateTime ge 2026-11-24T09:00:00.5Z", MDI) == [True]
    assert _matches("lastUpdateDateTime gt 2026-11-24T09:00:00.5Z", MDI) == [False]
