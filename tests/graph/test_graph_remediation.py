"""The remediation operations of GraphClient against the sandbox, over HTTPS with msal and httpx.

Defender for Identity actions, session revocation, Identity Protection (paced), alert triage,
and the exactly-once rule for non-idempotent POSTs.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bot.errors import GraphBadRequest, GraphNotFound, GraphOutcomeUnknown, GraphUnavailable
from bot.graph import (
    GraphClient,
    TokenProvider,
    build_http_client,
    find_account,
    invoke_action_correlation_id,
)
from devtools.sandbox import SandboxTenant
from tests.support.timing import until

from .helpers import RecordingSleep, graph_calls

ADELE = "adele.vance@contoso.com"
ADELE_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a01"
ADELE_SID = "S-1-5-21-2718434511-2385740213-3112547860-1104"
MEGAN_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a02"
LEE_ID = "6b1d2f3a-8c4e-4d7f-9a1b-2c3d4e5f6a03"
PATRICK = "patrick.o'brien@contoso.com"
INVOKE = r"/identityAccounts/[^/]+/invokeAction$"


class FakeTime:
    """A monotonic clock that moves only when the client sleeps; remembers each wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let a concurrent caller run, as a real sleep would


class LosesTheAnswer(httpx.AsyncBaseTransport):
    """The real transport, failing once in a chosen way: before sending, or after (answer lost)."""

    def __init__(self, ca_pem: str, *, fail_with: type[httpx.TransportError], after_sending: bool) -> None:
        self._inner = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=ca_pem))
        self._fail_with = fail_with
        self._after_sending = after_sending
        self.failures = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures == 0:
            self.failures += 1
            if self._after_sending:
                response = await self._inner.handle_async_request(request)
                await response.aread()
                await response.aclose()
            raise self._fail_with("injected transport failure", request=request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _posts(tenant: SandboxTenant, suffix: str) -> list[str]:
    return [call for call in graph_calls(tenant) if call.startswith("POST ") and suffix in call]


async def _adele_identity(graph: GraphClient) -> dict[str, object]:
    [identity] = await graph.list_identity_accounts(sid=ADELE_SID)
    return identity


# -- Defender for Identity -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_identity_accounts_by_sid_by_upn_and_by_id(tenant: SandboxTenant, graph: GraphClient) -> None:
    by_sid = await graph.list_identity_accounts(sid=ADELE_SID)
    by_upn = await graph.list_identity_accounts(upn=PATRICK)
    both = await graph.list_identity_accounts(sid=ADELE_SID, upn=PATRICK)
    everyone = await graph.list_identity_accounts()

    assert [i["userPrincipalName"] for i in by_sid] == [ADELE]
    assert [i["userPrincipalName"] for i in by_upn] == [PATRICK]
    assert both == []
    assert len(everyone) == 12
    identity = await graph.get_identity_account(str(by_sid[0]["id"]))
    assert identity["onPremisesSecurityIdentifier"] == ADELE_SID
    assert {a["identityProvider"] for a in identity["accounts"]} == {"activeDirectory", "entraID"}
    entra = find_account(identity, "entraID")
    assert entra is not None and entra["identifier"] == ADELE_ID
    queries = [r.query.get("$filter") for r in tenant.requests if r.path.endswith("/identityAccounts")]
    assert queries[:3] == [
        f"onPremisesSecurityIdentifier eq '{ADELE_SID}'",
        "userPrincipalName eq 'patrick.o''brien@contoso.com'",
        f"onPremisesSecurityIdentifier eq '{ADELE_SID}' and "
        "userPrincipalName eq 'patrick.o''brien@contoso.com'",
    ]


@pytest.mark.asyncio
async def test_unknown_identity_is_not_found(graph: GraphClient) -> None:
    with pytest.raises(GraphNotFound):
        await graph.get_identity_account(str(uuid.uuid4()))


@pytest.mark.asyncio
async def test_invoke_action_returns_the_correlation_id_of_the_action(
    tenant: SandboxTenant, graph: GraphClient
) -> None:
    identity = await _adele_identity(graph)
    ad = find_account(identity, "activeDirectory")
    assert ad is not None

    result = await graph.invoke_identity_action(
        str(identity["id"]),
        account_id=ad["identifier"],
        action="disable",
        identity_provider="activeDirectory",
    )

    [done] = tenant.identity_actions()
    assert result.correlation_id == done["correlationId"]
    assert uuid.UUID(result.correlation_id)
    assert result.request_id == tenant.requests[-1].request_id
    assert result.raw["identityProvider"] == "activeDirectory"
    assert (await graph.get_identity_account(str(identity["id"])))["isEnabled"] is False


@pytest.mark.asyncio
async def test_invoke_action_answer_wrapped_in_value_with_provider_is_read(
    tenant: SandboxTenant, graph: GraphClient
) -> None:
    # The docs' example shape; it satisfies the contract (nothing in invokeActionResult is required).
    identity = await _adele_identity(graph)
    correlation_id = "ed2f052b-2a01-4cd9-acb3-f6145f83e1a5"
    tenant.inject_fault(
        "POST",
        INVOKE,
        status=200,
        body={
            "value": {
                "accountId": "x",
                "action": "disable",
                "provider": "ActiveDirectory",
                "correlationId": correlation_id,
            }
        },
    )

    result = await graph.invoke_identity_action(
        str(identity["id"]), account_id="x", action="disable", identity_provider="activeDirectory"
    )

    assert result.correlation_id == correlation_id
    assert result.raw["value"]["provider"] == "ActiveDirectory"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [
        {"accountId": "x", "action": "disable", "identityProvider": "activeDirectory", "correlationId": None},
        {"value": {"accountId": "x", "action": "disable"}},
    ],
)
async def test_invoke_action_without_correlation_id_is_never_success(
    tenant: SandboxTenant, graph: GraphClient, body: dict[str, object]
) -> None:
    identity = await _adele_identity(graph)
    tenant.inject_fault("POST", INVOKE, status=200, body=body)

    with pytest.raises(GraphOutcomeUnknown, match="no correlationId") as caught:
        await graph.invoke_identity_action(
            str(identity["id"]), account_id="x", action="disable", identity_provider="activeDirectory"
        )

    assert "read the account state back" in caught.value.message
    assert caught.value.request_id == tenant.requests[-1].request_id


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"correlationId": "c1"}, "c1"),
        ({"value": {"correlationId": " c2 "}}, "c2"),
        ({"value": [{"correlationId": "c3", "provider": "Okta"}]}, "c3"),
        ({"correlationId": ""}, None),
        ({"correlationId": 7}, None),
        ({"value": [{"correlationId": "a"}, {"correlationId": "b"}]}, None),
        (None, None),
        ("ok", None),
    ],
)
def test_correlation_id_parser(body: object, expected: str | None) -> None:
    assert invoke_action_correlation_id(body) == expected


def test_find_account_reads_the_docs_spelling_too() -> None:
    identity = {
        "accounts": [
            {"provider": "ActiveDirectory", "identifier": "a"},
            {"identityProvider": "entraID", "identifier": "e"},
            "junk",
        ]
    }
    assert find_account(identity, "activeDirectory") == {"provider": "ActiveDirectory", "identifier": "a"}
    assert find_account(identity, "EntraID") == {"identityProvider": "entraID", "identifier": "e"}
    assert find_account(identity, "okta") is None
    assert find_account({}, "okta") is None


@pytest.mark.asyncio
async def test_an_unsupported_action_is_a_bad_request(tenant: SandboxTenant, graph: GraphClient) -> None:
    identity = await _adele_identity(graph)

    with pytest.raises(GraphBadRequest, match="not supported for identity provider 'entraID'"):
        await graph.invoke_identity_action(
            str(identity["id"]), account_id=ADELE_ID, action="forcePasswordReset", identity_provider="entraID"
        )

    assert tenant.identity_actions() == []


@pytest.mark.asyncio
async def test_synced_user_flips_back_unless_disabled_on_premises(
    tenant: SandboxTenant, graph: GraphClient
) -> None:
    # A cloud-side disable of a synced user lasts until the next directory sync...
    await graph.update_user(ADELE, {"accountEnabled": False})
    tenant.run_directory_sync()
    assert (await graph.get_user(ADELE, ["accountEnabled"]))["accountEnabled"] is True

    # ...while a disable of the AD account through Defender for Identity reaches Entra ID there.
    identity = await _adele_identity(graph)
    ad = find_account(identity, "activeDirectory")
    assert ad is not None
    await graph.invoke_identity_action(
        str(identity["id"]),
        account_id=ad["identifier"],
        action="disable",
        identity_provider="activeDirectory",
    )
    assert (await graph.get_user(ADELE, ["accountEnabled"]))["accountEnabled"] is True
    tenant.run_directory_sync()
    assert (await graph.get_user(ADELE, ["accountEnabled"]))["accountEnabled"] is False
    tenant.run_directory_sync()
    assert (await graph.get_user(ADELE, ["accountEnabled"]))["accountEnabled"] is False


# -- sessions, passwords -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_revoke_sign_in_sessions_documented_200_and_known_204(
    tenant: SandboxTenant, graph: GraphClient
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)

    documented = await graph.revoke_sign_in_sessions(ADELE)
    tenant.inject_fault("POST", r"/revokeSignInSessions$", status=204)
    known_issue = await graph.revoke_sign_in_sessions(ADELE)

    assert (documented.status, documented.body["value"]) == (200, True)
    assert (known_issue.status, known_issue.body) == (204, None)
    valid_from = datetime.fromisoformat(tenant.user(ADELE)["signInSessionsValidFromDateTime"])
    assert valid_from >= before


@pytest.mark.asyncio
async def test_the_password_never_reaches_the_records(tenant: SandboxTenant, graph: GraphClient) -> None:
    password = "Tr0ub4dor&3-correct-horse"

    await graph.update_user(
        "lee.gu@contoso.com",
        {"passwordProfile": {"password": password, "forceChangePasswordNextSignIn": True}},
    )

    [patch] = [r for r in tenant.requests if r.method == "PATCH"]
    assert patch.json == {"passwordProfile": {"password": "***", "forceChangePasswordNextSignIn": True}}
    assert password not in repr(tenant.requests)
    assert password not in repr(tenant.user("lee.gu@contoso.com"))
    assert (
        tenant.user("lee.gu@contoso.com")["lastPasswordChangeDateTime"]
        > tenant.user(ADELE)["lastPasswordChangeDateTime"]
    )


# -- exactly once on the wire --------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_post_that_timed_out_is_not_sent_again(
    tenant: SandboxTenant, http: httpx.AsyncClient, tokens: TokenProvider, sleeps: RecordingSleep
) -> None:
    # Looked up with the usual timeout: only the action itself runs against the short one.
    identity = await _adele_identity(GraphClient(http, tokens, tenant.graph_base_url))
    # The sandbox carries the action out but answers too late for the client.
    async with build_http_client(ca_bundle=str(tenant.ca_pem_path), timeout=0.3) as short:
        graph = GraphClient(short, tokens, tenant.graph_base_url, sleep=sleeps)
        ad = find_account(identity, "activeDirectory")
        assert ad is not None
        tenant.inject_fault("POST", INVOKE, status=None, delay=0.8)

        with pytest.raises(GraphOutcomeUnknown) as caught:
            await graph.invoke_identity_action(
                str(identity["id"]),
                account_id=ad["identifier"],
                action="disable",
                identity_provider="activeDirectory",
            )

        # The sandbox records the request once it has answered it.
        await until(lambda: _posts(tenant, "/invokeAction"), "the late answer")

    assert len(_posts(tenant, "/invokeAction")) == 1
    assert sleeps.calls == []
    message = caught.value.message
    assert message.startswith(
        f"Graph did not answer POST /security/identities/identityAccounts/{identity['id']}"
    )
    assert "ReadTimeout" in message and "outcome is unknown" in message and "read the state back" in message
    # Reading the state back tells what happened: the action ran.
    assert [a["action"] for a in tenant.identity_actions()] == ["disable"]


@pytest.mark.asyncio
async def test_a_connection_dropped_after_sending_is_outcome_unknown(
    tenant: SandboxTenant, tokens: TokenProvider, sleeps: RecordingSleep
) -> None:
    transport = LosesTheAnswer(
        str(tenant.ca_pem_path), fail_with=httpx.RemoteProtocolError, after_sending=True
    )
    async with httpx.AsyncClient(transport=transport) as http:
        graph = GraphClient(http, tokens, tenant.graph_base_url, sleep=sleeps)
        with pytest.raises(GraphOutcomeUnknown, match="RemoteProtocolError"):
            await graph.revoke_sign_in_sessions(ADELE)

    assert [c.split()[-1] for c in _posts(tenant, "/revokeSignInSessions")] == ["200"]
    assert sleeps.calls == []


@pytest.mark.asyncio
async def test_a_connect_error_is_retried_even_for_a_post(
    tenant: SandboxTenant, tokens: TokenProvider, sleeps: RecordingSleep
) -> None:
    # Nothing left the client, so nothing can have happened: sending is safe.
    transport = LosesTheAnswer(str(tenant.ca_pem_path), fail_with=httpx.ConnectError, after_sending=False)
    async with httpx.AsyncClient(transport=transport) as http:
        graph = GraphClient(http, tokens, tenant.graph_base_url, sleep=sleeps, rng=random.Random(2))
        written = await graph.revoke_sign_in_sessions(ADELE)

    assert written.status == 200
    assert len(sleeps.calls) == 1
    assert len(_posts(tenant, "/revokeSignInSessions")) == 1


@pytest.mark.asyncio
async def test_a_get_that_lost_its_answer_is_still_retried(
    tenant: SandboxTenant, tokens: TokenProvider, sleeps: RecordingSleep
) -> None:
    transport = LosesTheAnswer(str(tenant.ca_pem_path), fail_with=httpx.ReadError, after_sending=True)
    async with httpx.AsyncClient(transport=transport) as http:
        graph = GraphClient(http, tokens, tenant.graph_base_url, sleep=sleeps)
        user = await graph.get_user(ADELE, ["id"])

    assert user["id"] == ADELE_ID
    assert len(sleeps.calls) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [500, 502, 504])
async def test_a_post_answered_by_a_failing_gateway_is_outcome_unknown(
    tenant: SandboxTenant, graph: GraphClient, sleeps: RecordingSleep, status: int
) -> None:
    tenant.inject_fault("POST", r"/confirmCompromised$", status=status)

    with pytest.raises(
        GraphOutcomeUnknown, match=rf"\({status} \w+: .*\); it may have been carried out"
    ) as caught:
        await graph.confirm_compromised([LEE_ID])

    assert caught.value.status == status
    assert len(_posts(tenant, "/confirmCompromised")) == 1
    assert sleeps.calls == []


@pytest.mark.asyncio
async def test_a_post_refused_with_429_or_503_is_retried(
    tenant: SandboxTenant, graph: GraphClient, sleeps: RecordingSleep
) -> None:
    # Graph said it did not process these: sending again cannot do the work twice.
    tenant.inject_fault("POST", r"/comments$", status=429, headers={"Retry-After": "0.25"})
    tenant.inject_fault("POST", r"/comments$", status=503)
    alert = tenant.alerts()[0]

    answer = await graph.add_alert_comment(alert["id"], "Contained through remediation-bot.")

    assert [c.split()[-1] for c in _posts(tenant, "/comments")] == ["429", "503", "200"]
    assert sleeps.calls[0] == 0.25 and len(sleeps.calls) == 2
    assert [c["comment"] for c in answer.body["value"]] == ["Contained through remediation-bot."]


@pytest.mark.asyncio
async def test_a_patch_that_timed_out_keeps_being_retried(
    tenant: SandboxTenant, tokens: TokenProvider, sleeps: RecordingSleep
) -> None:
    # PATCH sets absolute values: sending it twice ends in the same state.
    tenant.inject_fault("PATCH", r"/alerts_v2/", status=200, delay=1.0)
    async with build_http_client(ca_bundle=str(tenant.ca_pem_path), timeout=0.2) as short:
        graph = GraphClient(short, tokens, tenant.graph_base_url, sleep=sleeps)
        updated = await graph.update_alert(tenant.alerts()[0]["id"], status="inProgress")

    assert updated.body["status"] == "inProgress"
    assert len(sleeps.calls) == 1


@pytest.mark.asyncio
async def test_posts_that_never_connect_end_unavailable(
    tenant: SandboxTenant, tokens: TokenProvider, sleeps: RecordingSleep
) -> None:
    async with build_http_client(ca_bundle=str(tenant.ca_pem_path)) as http:
        graph = GraphClient(http, tokens, "https://127.0.0.1:9/v1.0", sleep=sleeps, max_attempts=2)
        with pytest.raises(GraphUnavailable, match="after 2 attempts"):
            await graph.dismiss_risky_users([LEE_ID])


# -- Identity Protection -------------------------------------------------------------------


def _paced_client(
    tenant: SandboxTenant, http: httpx.AsyncClient, tokens: TokenProvider
) -> tuple[GraphClient, FakeTime]:
    """The client with the default pacing, on a clock that moves only when it sleeps."""
    time = FakeTime()
    graph = GraphClient(
        http, tokens, tenant.graph_base_url, sleep=time.sleep, monotonic=time.monotonic, rng=random.Random(5)
    )
    return graph, time


@pytest.mark.asyncio
async def test_identity_protection_requests_are_paced_one_per_second(
    tenant: SandboxTenant, http: httpx.AsyncClient, tokens: TokenProvider
) -> None:
    graph, time = _paced_client(tenant, http, tokens)

    await graph.get_risky_user(LEE_ID)
    await graph.get_user(ADELE, ["id"])  # not Identity Protection: not paced
    await graph.list_risk_detections(LEE_ID)
    time.now += 0.25  # the caller spent a quarter second in between
    await graph.confirm_compromised([LEE_ID])
    await asyncio.gather(graph.get_risky_user(LEE_ID), graph.get_risky_user(MEGAN_ID))

    assert time.sleeps == [1.0, 0.75, 1.0, 1.0]


@pytest.mark.asyncio
async def test_confirm_safe_is_paced_with_identity_protection_and_nothing_else_is(
    tenant: SandboxTenant, http: httpx.AsyncClient, tokens: TokenProvider
) -> None:
    graph, time = _paced_client(tenant, http, tokens)
    identity = (await graph.list_identity_accounts(upn="lee.gu@contoso.com"))[0]

    await graph.get_risky_user(LEE_ID)
    await graph.confirm_safe([LEE_ID])
    await graph.invoke_identity_action(
        str(identity["id"]), account_id=LEE_ID, action="requireUserToSignInAgain", identity_provider="entraID"
    )
    await graph.get_user(LEE_ID, ["id"])

    assert time.sleeps == [1.0], "only the second Identity Protection call waited"
    assert tenant.risky_user(LEE_ID)["riskState"] == "confirmedSafe"


@pytest.mark.asyncio
async def test_identity_protection_429_without_retry_after_is_paced_and_backed_off(
    tenant: SandboxTenant, http: httpx.AsyncClient, tokens: TokenProvider
) -> None:
    tenant.inject_fault("GET", r"/identityProtection/riskyUsers/", status=429, times=2)

    graph, time = _paced_client(tenant, http, tokens)

    risky = await graph.get_risky_user(LEE_ID)

    assert risky["riskLevel"] == "high"
    assert [c.split()[-1] for c in graph_calls(tenant)] == ["429", "429", "200"]
    # Each retry waits its jittered backoff (ceilings 0.5 s, 1 s), then the rest of its 1 s slot.
    first_backoff, first_rest, second_backoff, second_rest = time.sleeps
    assert 0 < first_backoff <= 0.5 and 0 < second_backoff <= 1.0
    assert first_backoff + first_rest == pytest.approx(1.0)
    assert second_backoff + second_rest == pytest.approx(1.0)


@pytest.mark.asyncio
async def test_risky_user_confirm_and_dismiss(tenant: SandboxTenant, graph: GraphClient) -> None:
    confirmed = await graph.confirm_compromised([MEGAN_ID, MEGAN_ID])
    megan = await graph.get_risky_user(MEGAN_ID)
    dismissed = await graph.dismiss_risky_users([LEE_ID])
    lee = await graph.get_risky_user(LEE_ID)

    assert confirmed.status == dismissed.status == 204
    assert (megan["riskState"], megan["riskLevel"], megan["riskDetail"]) == (
        "confirmedCompromised",
        "high",
        "adminConfirmedUserCompromised",
    )
    assert (lee["riskState"], lee["riskLevel"], lee["riskDetail"]) == (
        "dismissed",
        "none",
        "adminDismissedAllRiskForUser",
    )
    posted = [r.json for r in tenant.requests if r.method == "POST" and r.path.startswith("/v1.0/")]
    assert posted == [{"userIds": [MEGAN_ID]}, {"userIds": [LEE_ID]}]


@pytest.mark.asyncio
async def test_risky_user_batches_are_checked_before_sending(
    tenant: SandboxTenant, graph: GraphClient
) -> None:
    with pytest.raises(ValueError, match="at most 60"):
        await graph.confirm_compromised([str(uuid.uuid4()) for _ in range(61)])
    with pytest.raises(ValueError, match="at least one"):
        await graph.dismiss_risky_users([])

    assert graph_calls(tenant) == []


@pytest.mark.asyncio
async def test_a_user_never_at_risk_is_not_found(graph: GraphClient) -> None:
    with pytest.raises(GraphNotFound):
        await graph.get_risky_user("7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a51")


@pytest.mark.asyncio
async def test_risk_detections_newest_first(tenant: SandboxTenant, graph: GraphClient) -> None:
    detections = await graph.list_risk_detections(MEGAN_ID)
    newest = await graph.list_risk_detections(MEGAN_ID, top=1)

    assert [d["riskEventType"] for d in detections] == ["unfamiliarFeatures", "anonymizedIPAddress"]
    assert detections[0]["ipAddress"] == "185.220.101.42"
    assert detections[0]["location"]["countryOrRegion"] == "NL"
    assert {d["userId"] for d in detections} == {MEGAN_ID}
    assert newest == detections[:1]
    [first, _] = [r.query for r in tenant.requests if r.path.endswith("/riskDetections")]
    assert first == {"$filter": f"userId eq '{MEGAN_ID}'", "$orderby": "detectedDateTime desc", "$top": "20"}


# -- alert triage --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_alert_comment_and_status(tenant: SandboxTenant, graph: GraphClient) -> None:
    alert = tenant.alerts()[0]

    commented = await graph.add_alert_comment(alert["id"], "Adele's AD account disabled (case 42).")
    updated = await graph.update_alert(alert["id"], status="resolved")

    [comment] = commented.body["value"]
    assert comment["comment"] == "Adele's AD account disabled (case 42)."
    assert comment["createdByDisplayName"] == "remediation-bot"
    assert updated.status == 200
    assert updated.body["status"] == "resolved" and updated.body["resolvedDateTime"]
    assert updated.body["comments"] == [comment]
    [posted] = [r.json for r in tenant.requests if r.method == "POST" and r.path.startswith("/v1.0/")]
    assert posted == {
        "@odata.type": "microsoft.graph.security.alertComment",
        "comment": "Adele's AD account disabled (case 42).",
    }
