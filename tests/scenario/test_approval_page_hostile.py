"""Hostile requests against the approval page, through the real app and the sandbox's sign-in:
forged sign-in answers, replayed codes, forged ID tokens, odd methods and paths, malformed forms
and a double submit. Each gets a precise 4xx (or a redirect to sign in) and writes nothing."""

from __future__ import annotations

import asyncio
import html as htmllib
import re
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.config.settings import Settings
from bot.graph.signin import EntraSignIn, SignInError
from devtools.sandbox import SandboxTenant
from devtools.sandbox.signin import DEMO_MFA_CODE, DEMO_PASSWORD
from tests.conftest import RESPONDER, Clock
from tests.scenario.test_approval_page import ADELE, MEGAN_UPN, SESSION, make_page  # noqa: F401 (make_page is a fixture pytest finds by this import)
from tests.support.pagebrowser import PageBrowser, form_fields

FLOW = "__Host-rb-signin"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MEGAN_OID = "7e1f6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a52"


async def _to_callback(browser: PageBrowser, path: str, login: str) -> tuple[str, dict[str, str]]:
    """Sign in on the sandbox up to Entra ID's form_post page: the callback URL and its fields."""
    page = await browser.open(path)
    sandbox = "{0.scheme}://{0.netloc}".format(urlsplit(str(page.url)))
    tenant = browser.tenant.tenant_id
    flow = re.search(r'name="flow" value="([^"]+)"', page.text)
    assert flow, page.text
    second = await browser.request(
        "POST",
        f"{sandbox}/{tenant}/login",
        data={"flow": flow.group(1), "login": login, "passwd": DEMO_PASSWORD},
    )
    flow = re.search(r'name="flow" value="([^"]+)"', second.text)
    assert flow, second.text
    posted = await browser.follow(
        "POST",
        f"{sandbox}/{tenant}/login/mfa",
        data={"flow": flow.group(1), "otc": DEMO_MFA_CODE, "verify": "1"},
    )
    action = re.search(r'action="([^"]+)"', posted.text)
    assert action, posted.text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', posted.text))
    return htmllib.unescape(action.group(1)), {k: htmllib.unescape(v) for k, v in fields.items()}


async def _pending(make_page: Callable[..., Any]) -> Any:  # noqa: F811 (pytest passes the fixture imported above)
    page = await make_page(approvals={"disableAccount": 2})
    await page.channel.click("Adele Vance", RESPONDER, "disableAccount", reason="Ticket reuse")
    return page


@pytest.mark.asyncio
async def test_a_sign_in_answer_is_believed_only_with_its_own_state_and_never_repeats_free_text(
    make_page: Callable[..., Any],  # noqa: F811 (pytest passes the fixture imported above)
) -> None:
    page = await _pending(make_page)
    path = await page.path_of(ADELE)
    victim = page.browser()
    started = await victim.request("GET", f"{page.bot.url}/approve/signin?case={path.rsplit('/', 1)[1]}")
    state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    before = len(await page.audit())
    lure = "Call the helpdesk on +1 555 0100 now"

    # Another site posts to the callback in the victim's browser (the flow cookie comes along).
    no_state = await victim.post_form(
        "/approve/callback", {"error": "access_denied", "error_description": lure}
    )
    wrong_state = await victim.post_form(
        "/approve/callback", {"error": "access_denied", "error_description": lure, "state": "x" + state}
    )
    code_wrong_state = await victim.post_form("/approve/callback", {"code": "abc", "state": state[:-1]})
    flow_kept = FLOW in victim.cookies
    # Entra ID's own error (with the state) is shown by its codes only.
    real_error = await victim.post_form(
        "/approve/callback",
        {"error": "access_denied", "error_description": f"AADSTS50105: {lure}", "state": state},
    )

    for answer in (no_state, wrong_state, code_wrong_state):
        assert answer.status_code == 400, answer.text
        assert "does not belong to your sign-in" in answer.text
        assert "helpdesk" not in answer.text
    assert flow_kept  # a forged answer does not end the sign-in in flight
    assert real_error.status_code == 400
    assert "access_denied, AADSTS50105" in real_error.text
    assert "helpdesk" not in real_error.text
    assert SESSION not in victim.cookies
    assert len(await page.audit()) == before


@pytest.mark.asyncio
async def test_a_redeemed_code_replayed_with_its_flow_cookie_gets_no_session(
    make_page: Callable[..., Any],  # noqa: F811 (pytest passes the fixture imported above)
) -> None:
    page = await _pending(make_page)
    path = await page.path_of(ADELE)
    megan = page.browser()
    action, fields = await _to_callback(megan, path, MEGAN_UPN)
    flow_cookie = megan.cookies[FLOW]
    first = await megan.request("POST", action, data=fields)
    assert first.status_code == 200 and SESSION in megan.cookies
    before = len(await page.audit())

    thief = page.browser()
    thief.cookies[FLOW] = flow_cookie
    replayed = await thief.request("POST", action, data=fields)
    no_cookie = await page.browser().request("POST", action, data=fields)

    assert replayed.status_code == 400 and SESSION not in thief.cookies
    assert no_cookie.status_code == 400
    assert len(await page.audit()) == before


@pytest.mark.asyncio
async def test_other_methods_odd_paths_and_malformed_forms_get_a_precise_4xx_and_write_nothing(
    make_page: Callable[..., Any],  # noqa: F811 (pytest passes the fixture imported above)
) -> None:
    page = await _pending(make_page)
    path = await page.path_of(ADELE)
    url = f"{page.bot.url}{path}"
    megan = page.browser()
    shown = await megan.sign_in(path, MEGAN_UPN)
    good = form_fields(shown.text, "approve")
    before = len(await page.audit())

    for method in ("OPTIONS", "PUT", "DELETE", "PATCH", "TRACE"):
        answer = await megan.request(method, url)
        assert answer.status_code == 405, method
        assert set(answer.headers["Allow"].split(",")) >= {"GET", "POST"}, method
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    head = await megan.request("HEAD", url)
    assert head.status_code == 200 and head.content == b""
    for odd in (
        "/approve/..%2F..%2Fetc%2Fpasswd",
        "/approve/%2e%2e",
        "/approve/%00",
        "/approve/%ff%fe",
        "/approve/a%0d%0aSet-Cookie:%20x=1",
        "/approve/" + "a" * 4000,
        "/approve//evil.example",
        "/approve/",
    ):
        answer = await megan.request("GET", f"{page.bot.url}{odd}")
        assert answer.status_code == 404, odd
        assert "Location" not in answer.headers and "x=1" not in answer.headers.get("set-cookie", "")
    for bad_case in ("%00", "a" * 65, "..%2Fx", "%3Cb%3E", f"{path.rsplit('/', 1)[1]}%0A"):
        answer = await megan.request("GET", f"{page.bot.url}/approve/signin?case={bad_case}")
        assert answer.status_code == 400, bad_case
    shown_done = await megan.request("GET", f"{url}?done=%3Cscript%3Ealert(1)%3C/script%3E")
    assert shown_done.status_code == 200 and "<script" not in shown_done.text

    async def chunks() -> AsyncIterator[bytes]:
        yield b"reason=" + b"a" * 5000
        yield b"b" * 5000

    fields = f"csrf={good['csrf']}&request={good['request']}&version={good['version']}"
    bodies = {
        "a repeated verb": (f"{fields}&verb=approve&verb=reject".encode(), 400),
        "a bad escape": (f"{fields}&verb=approve&reason=%zz".encode(), 400),
        "a cut escape": (f"{fields}&verb=approve&reason=%4".encode(), 400),
        "bad UTF-8 escaped": (f"{fields}&verb=approve&reason=%c3%28".encode(), 400),
        "a NUL in a name": (f"{fields}&verb%00=approve".encode(), 400),
        "raw non-ASCII": (f"{fields}&verb=approve&reason=".encode() + "é".encode(), 400),
        "a field without =": (f"{fields}&verb=approve&reason".encode(), 400),
        "eleven fields": (f"{fields}&verb=approve" + "&reason=x" * 7, 400),
    }
    for what, (body, status) in bodies.items():
        raw = body if isinstance(body, bytes) else body.encode()
        answer = await megan.request("POST", url, content=raw, headers=FORM)
        assert answer.status_code == status, what
    chunked = await megan.request("POST", url, content=chunks(), headers=FORM)
    multipart = await megan.request(
        "POST", url, files={"csrf": (None, good["csrf"])}, data={"verb": "approve"}
    )
    plain_text = await megan.request(
        "POST", url, content=b"verb=approve", headers={"Content-Type": "text/plain"}
    )
    null_origin = await megan.post_form(path, good, Origin="null")

    assert chunked.status_code == 413
    assert multipart.status_code == 415 and plain_text.status_code == 415
    assert null_origin.status_code == 403
    assert len(await page.audit()) == before
    assert page.tenant.user(ADELE)["accountEnabled"] is True


@pytest.mark.asyncio
async def test_the_same_approval_posted_twice_at_once_acts_once(
    make_page: Callable[..., Any],  # noqa: F811 (pytest passes the fixture imported above)
) -> None:
    page = await _pending(make_page)
    path = await page.path_of(ADELE)
    megan = page.browser()
    good = form_fields((await megan.sign_in(path, MEGAN_UPN)).text, "approve")

    first, second = await asyncio.gather(megan.post_form(path, good), megan.post_form(path, good))
    await page.bot.service.drain()

    assert sorted([first.status_code, second.status_code])[0] == 200
    assert 400 <= max(first.status_code, second.status_code) < 500
    assert len([e for e in await page.audit() if e.kind == "request.approved"]) == 1
    assert page.tenant.user(ADELE)["accountEnabled"] is False


# -- ID tokens the token endpoint could send back ------------------------------------------------


@pytest.fixture
async def sign_in(
    tenant: SandboxTenant, make_settings: Callable[..., Settings], clock: Clock
) -> AsyncIterator[EntraSignIn]:
    settings = make_settings()
    context = ssl.create_default_context(cafile=str(tenant.ca_pem_path))
    client = EntraSignIn(
        tenant_id=settings.graph_tenant_id,
        client_id=settings.graph_client_id,
        redirect_uri="http://127.0.0.1/approve/callback",
        http=httpx.AsyncClient(verify=context, trust_env=False),
        clock=clock,
        client_secret=settings.graph_client_secret.get_secret_value(),
        authority_host=settings.graph_authority_host,
        ca_bundle=str(tenant.ca_pem_path),
    )
    yield client
    await client.aclose()


def _claims(tenant: SandboxTenant, client_id: str, now: datetime, **changes: Any) -> dict[str, Any]:
    at = int(now.timestamp())
    claims: dict[str, Any] = {
        "aud": client_id,
        "iss": f"{tenant.authority_host}/{tenant.tenant_id}/v2.0",
        "iat": at,
        "nbf": at,
        "exp": at + 3600,
        "oid": MEGAN_OID,
        "tid": tenant.tenant_id,
        "nonce": "n",
        "name": "Megan",
        "preferred_username": MEGAN_UPN,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.asyncio
async def test_id_tokens_that_do_not_prove_who_signed_in_are_refused(
    sign_in: EntraSignIn, tenant: SandboxTenant, make_settings: Callable[..., Settings], clock: Clock
) -> None:
    client_id = make_settings().graph_client_id
    now = clock()
    key = tenant.id_token_signing_key()
    context = ssl.create_default_context(cafile=str(tenant.ca_pem_path))
    async with httpx.AsyncClient(verify=context, trust_env=False) as http:
        config = (
            await http.get(
                f"{tenant.authority_host}/{tenant.tenant_id}/v2.0/.well-known/openid-configuration"
            )
        ).json()
        jwks = (await http.get(config["jwks_uri"])).json()
    kid = jwks["keys"][0]["kid"]

    def signed(claims: dict[str, Any], *, with_key: Any = key, headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(
            claims, with_key, algorithm="RS256", headers={"kid": kid} if headers is None else headers
        )

    good = signed(_claims(tenant, client_id, now))
    assert (await sign_in.validate(good, nonce="n")).object_id == MEGAN_OID  # the baseline passes
    body = jwt.api_jws.base64url_encode(b'{"alg":"none","kid":"' + kid.encode() + b'"}').decode()
    payload = good.split(".")[1]
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = {
        "alg none": f"{body}.{payload}.",
        "HS256 keyed with the public key": jwt.encode(
            _claims(tenant, client_id, now), "s" * 64, algorithm="HS256", headers={"kid": kid}
        ),
        "another key, the same kid": signed(_claims(tenant, client_id, now), with_key=other_key),
        "an unknown kid": signed(_claims(tenant, client_id, now), headers={"kid": "not-published"}),
        "no kid": signed(_claims(tenant, client_id, now), headers={"typ": "JWT"}),
        "a tampered payload": good.rsplit(".", 1)[0][:-4] + "AAAA." + good.rsplit(".", 1)[1],
        "another tenant's issuer": signed(
            _claims(
                tenant,
                client_id,
                now,
                iss=f"{tenant.authority_host}/00000000-0000-0000-0000-000000000001/v2.0",
            )
        ),
        "another tenant's tid": signed(
            _claims(tenant, client_id, now, tid="00000000-0000-0000-0000-000000000001")
        ),
        "another audience": signed(
            _claims(tenant, client_id, now, aud="00000000-0000-0000-0000-000000000002")
        ),
        "several audiences": signed(
            _claims(tenant, client_id, now, aud=[client_id, "00000000-0000-0000-0000-000000000002"])
        ),
        "no audience": signed(_claims(tenant, client_id, now, aud=None)),
        "expired": signed(_claims(tenant, client_id, now, exp=int((now - timedelta(minutes=3)).timestamp()))),
        "not yet valid": signed(
            _claims(tenant, client_id, now, nbf=int((now + timedelta(minutes=5)).timestamp()))
        ),
        "no expiry": signed(_claims(tenant, client_id, now, exp=None)),
        "another nonce": signed(_claims(tenant, client_id, now, nonce="m")),
        "no nonce": signed(_claims(tenant, client_id, now, nonce=None)),
        "no object id": signed(_claims(tenant, client_id, now, oid=None)),
        "an object id that is not a GUID": signed(_claims(tenant, client_id, now, oid="../admin")),
        "not a JWT": "not.a.jwt",
    }
    for what, token in forged.items():
        try:
            await sign_in.validate(token, nonce="n")
        except SignInError as refused:
            assert refused.status in (400, 403), what
        else:
            pytest.fail(f"{what} was accepted")


@pytest.mark.asyncio
async def test_expired_cookies_and_another_sessions_csrf_token_act_on_nothing(
    make_page: Callable[..., Any],  # noqa: F811 (pytest passes the fixture imported above)
    clock: Clock,
) -> None:
    page = await _pending(make_page)
    path = await page.path_of(ADELE)
    megan = page.browser()
    good = form_fields((await megan.sign_in(path, MEGAN_UPN)).text, "approve")
    again = page.browser()
    other_session = form_fields((await again.sign_in(path, MEGAN_UPN)).text, "approve")
    late = page.browser()
    started = await late.request("GET", f"{page.bot.url}/approve/signin?case={path.rsplit('/', 1)[1]}")
    state = parse_qs(urlsplit(started.headers["Location"]).query)["state"][0]
    before = len(await page.audit())

    # The same person's token from another session is not this session's.
    crossed = await megan.post_form(path, {**good, "csrf": other_session["csrf"]})
    clock.now += timedelta(minutes=16)
    expired_post = await megan.post_form(path, good)
    expired_view = await megan.request("GET", f"{page.bot.url}{path}")
    expired_flow = await late.post_form("/approve/callback", {"code": "abc", "state": state})

    assert other_session["csrf"] != good["csrf"]
    assert crossed.status_code == 403
    assert expired_post.status_code == 401
    assert expired_view.status_code == 302
    assert expired_view.headers["Location"].startswith("/approve/signin?case=")
    assert expired_flow.status_code == 400 and "too old" in expired_flow.text
    assert len(await page.audit()) == before
    assert page.tenant.user(ADELE)["accountEnabled"] is True


@pytest.mark.asyncio
async def test_a_session_cookie_kept_after_signing_out_is_worth_nothing(
    make_page: Callable[..., Any],  # noqa: F811 (pytest passes the fixture imported above)
) -> None:
    page = await _pending(make_page)
    path = await page.path_of(ADELE)
    megan = page.browser()
    good = form_fields((await megan.sign_in(path, MEGAN_UPN)).text, "approve")
    kept = megan.cookies[SESSION]
    signed_out = await megan.post_form("/approve/signout", {"csrf": good["csrf"]})
    assert signed_out.status_code == 200 and SESSION not in megan.cookies
    before = len(await page.audit())

    thief = page.browser()
    thief.cookies[SESSION] = kept
    view = await thief.request("GET", f"{page.bot.url}{path}")
    thief.cookies[SESSION] = kept
    post = await thief.post_form(path, good)
    thief.cookies[SESSION] = kept
    out_again = await thief.post_form("/approve/signout", {"csrf": good["csrf"]})

    assert view.status_code == 302 and view.headers["Location"].startswith("/approve/signin?case=")
    assert post.status_code == 401 and "Adele" not in post.text
    assert out_again.status_code == 401
    assert len(await page.audit()) == before
    assert page.tenant.user(ADELE)["accountEnabled"] is True
