"""Which URLs the bot links to: its own portal links, and alert URLs only on Microsoft portals.

An alert's ``alertWebUrl`` (or a pushed ``url``) is untrusted. :func:`allowed_url` is the one
function that decides whether it may become a link, a button or a ``selectAction``: only
``https`` on a host of the allow-list (the Defender, Entra and Azure portals, plus the hosts of
``DEFENDER_PORTAL_URL`` and ``ENTRA_PORTAL_URL`` for sovereign clouds), with no user name or
password, no port but 443, ASCII only, no character that could end a markdown link or an HTML
attribute (``( ) [ ] < > " ' ` { } | ^``, a backslash, spaces, controls), at most :data:`MAX_URL_CHARS`
long. Everything else — ``javascript:``, ``http:``, look-alike hosts such as
``security.microsoft.com.evil.io``, ``https://security.microsoft.com@evil.io``, a URL that tries
to close a markdown link with ``)`` — is dropped, and the card links to the alert in the Defender
portal by its id instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

# The Microsoft portals an alert may link to (Defender XDR, Entra admin center, Azure portal).
MICROSOFT_PORTAL_HOSTS = frozenset({"security.microsoft.com", "entra.microsoft.com", "portal.azure.com"})
MAX_URL_CHARS = 1024
MAX_ID_IN_URL = 128

# A URL holding one of these is dropped: each could end a markdown link or an HTML attribute.
_MARKUP = frozenset("()[]<>\"'`\\{}|^")
# Characters kept as they are when a kept URL is written back (anything else percent-encoded).
_SAFE = "/:@!$&*+,;=-._~%?"


def allowed_url(url: object, hosts: frozenset[str] = MICROSOFT_PORTAL_HOSTS) -> str | None:
    """``url`` as a link the bot may show, or None when it is not an https URL on ``hosts``."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        return None
    if not url.isascii() or any(c <= " " or c == "\x7f" or c in _MARKUP for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    netloc = parts.netloc.lower()
    if parts.scheme.lower() != "https" or "@" in netloc:
        return None
    host = netloc.removesuffix(":443")
    if host not in hosts:
        return None
    link = f"https://{host}{quote(parts.path, safe=_SAFE)}"
    if parts.query:
        link += f"?{quote(parts.query, safe=_SAFE)}"
    if parts.fragment:
        link += f"#{quote(parts.fragment, safe=_SAFE)}"
    return link


def _host_of(url: str) -> str | None:
    try:
        netloc = urlsplit(url).netloc.lower()
    except ValueError:
        return None
    return netloc.removesuffix(":443") or None


@dataclass(frozen=True)
class PortalLinks:
    """Base URLs of the portals the card links to (overridable for sovereign clouds)."""

    defender: str = "https://security.microsoft.com"
    entra: str = "https://entra.microsoft.com"
    hosts: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        configured = {h for h in (_host_of(self.defender), _host_of(self.entra)) if h}
        object.__setattr__(self, "hosts", MICROSOFT_PORTAL_HOSTS | configured)

    def allowed(self, url: object) -> str | None:
        """``url`` if it may be linked (see :func:`allowed_url`), else None."""
        return allowed_url(url, self.hosts)

    def alert(self, alert_id: str, web_url: str | None) -> str:
        """The alert in the Defender portal: Graph's ``alertWebUrl`` when it is allowed, else by id."""
        kept = self.allowed(web_url)
        if kept is not None:
            return kept
        if not alert_id or len(alert_id) > MAX_ID_IN_URL:
            return f"{self.defender}/alerts"
        return f"{self.defender}/alerts/{quote(alert_id, safe='')}"

    def user(self, object_id: str | None, upn: str | None) -> str:
        """The user's page in the Entra admin center (the user list when the id is unusable)."""
        if object_id and len(object_id) <= MAX_ID_IN_URL:
            return (
                f"{self.entra}/#view/Microsoft_AAD_UsersAndTenants/UserProfileMenuBlade"
                f"/~/overview/userId/{quote(object_id, safe='')}"
            )
        return f"{self.entra}/#view/Microsoft_AAD_UsersAndTenants/UserManagementMenuBlade/~/AllUsers"


DEFAULT_LINKS = PortalLinks()
