"""A small browser for the approval page: follows redirects, keeps cookies, fills sign-in forms.

It talks to the real bot over HTTP and to the sandbox tenant's sign-in pages over HTTPS, the
way a phone's browser does, and keeps the bot's cookies by hand: they are ``Secure``, which HTTP
client libraries do not send to ``http://127.0.0.1`` (browsers treat loopback as secure).
"""

from __future__ import annotations

import html as htmllib
import re
import ssl
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from devtools.sandbox import SandboxTenant
from devtools.sandbox.signin import DEMO_MFA_CODE, DEMO_PASSWORD


@dataclass
class SetCookie:
    """One ``Set-Cookie`` as the bot sent it."""

    name: str
    value: str
    attributes: dict[str, str]
    flags: set[str]


def parse_set_cookie(header: str) -> SetCookie:
    """``Set-Cookie`` parsed with its attributes (lower-case) and flags."""
    parts = [p.strip() for p in header.split(";")]
    name, _, value = parts[0].partition("=")
    attributes: dict[str, str] = {}
    flags: set[str] = set()
    for part in parts[1:]:
        key, sep, val = part.partition("=")
        if sep:
            attributes[key.lower()] = val
        else:
            flags.add(key.lower())
    return SetCookie(name=name, value=value.strip('"'), attributes=attributes, flags=flags)


@dataclass
class PageBrowser:
    """One person's browser."""

    bot_url: str
    tenant: SandboxTenant
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookies: list[SetCookie] = field(default_factory=list)
    last: httpx.Response | None = None

    def __post_init__(self) -> None:
        context = ssl.create_default_context(cafile=str(self.tenant.ca_pem_path))
        self._http = httpx.AsyncClient(verify=context, trust_env=False, follow_redirects=False, timeout=20)

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; cookies for the bot are sent and remembered by hand."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if url.startswith(self.bot_url) and self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        answer = await self._http.request(method, url, headers=headers, **kwargs)
        if url.startswith(self.bot_url):
            for header in answer.headers.get_list("set-cookie"):
                cookie = parse_set_cookie(header)
                self.set_cookies.append(cookie)
                parsed = SimpleCookie()
                parsed.load(header)
                if cookie.attributes.get("max-age") == "0" or "expires=thu, 01 jan 1970" in header.lower():
                    self.cookies.pop(cookie.name, None)
                else:
                    self.cookies[cookie.name] = cookie.value
        self.last = answer
        return answer

    async def follow(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request and every redirect after it (GET), like a browser."""
        answer = await self.request(method, url, **kwargs)
        hops = 0
        while answer.status_code in (301, 302, 303, 307) and hops < 10:
            url = urljoin(url, answer.headers["Location"])
            answer = await self.request("GET", url)
            hops += 1
        return answer

    async def open(self, path: str) -> httpx.Response:
        """GET a page of the bot, following redirects (possibly to the sign-in pages)."""
        return await self.follow("GET", f"{self.bot_url}{path}")

    async def sign_in(self, path: str, login: str, *, mfa: bool = True) -> httpx.Response:
        """Open ``path``, sign in on the sandbox's pages as ``login``, come back; the final page."""
        page = await self.open(path)
        assert "Sign in" in page.text, page.text
        sandbox = f"{urlsplit(str(page.url)).scheme}://{urlsplit(str(page.url)).netloc}"
        tenant = self.tenant.tenant_id
        second = await self.request(
            "POST",
            f"{sandbox}/{tenant}/login",
            data={"flow": _flow(page.text), "login": login, "passwd": DEMO_PASSWORD},
        )
        assert "authenticator" in second.text, second.text
        step = {"otc": DEMO_MFA_CODE, "verify": "1"} if mfa else {"skip": "1"}
        posted = await self.follow(
            "POST", f"{sandbox}/{tenant}/login/mfa", data={"flow": _flow(second.text), **step}
        )
        if posted.status_code != 200 or 'name="hiddenform"' not in posted.text:
            return posted
        # Entra ID's form_post page: its script posts the answer to the app.
        action = re.search(r'action="([^"]+)"', posted.text)
        assert action, posted.text
        answer = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', posted.text))
        back = await self.follow(
            "POST",
            htmllib.unescape(action.group(1)),
            data={k: htmllib.unescape(v) for k, v in answer.items()},
        )
        if back.status_code != 200 or 'http-equiv="refresh"' not in back.text:
            return back
        target = re.search(r'href="(/approve/[^"]+)"', back.text)
        assert target, back.text
        return await self.open(target.group(1))

    async def post_form(self, path: str, fields: dict[str, str], **headers: str) -> httpx.Response:
        """POST a form to the bot as the page's own form would, following its redirect."""
        return await self.follow("POST", f"{self.bot_url}{path}", data=fields, headers=headers)


def _flow(html: str) -> str:
    found = re.search(r'name="flow" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def form_fields(html: str, verb: str) -> dict[str, str]:
    """The hidden fields of the form on the page that has a button for ``verb``."""
    for form in re.findall(r"<form .*?</form>", html, flags=re.S):
        if f'name="verb" value="{verb}"' in form:
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form))
            fields["verb"] = verb
            return fields
    raise AssertionError(f"no form with {verb} on the page")
