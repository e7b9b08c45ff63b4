"""A stand-in for the Bot Framework's token signing keys, served on loopback.

botbuilder fetches the OpenID metadata and the signing keys with blocking ``requests`` calls
inside the event loop, so this server runs in its own thread.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://api.botframework.com"


def new_key() -> rsa.RSAPrivateKey:
    """A fresh RSA signing key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class ChannelKeys:
    """Serves ``/.well-known/openidconfiguration`` and ``/keys``; signs channel tokens."""

    def __init__(self, kid: str = "k1") -> None:
        self.kid = kid
        self.key = new_key()
        self._jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        self._jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
        # The channels the Bot Framework endorses the key for (a test may change it before the
        # first token is checked: both SDKs keep the key set they read).
        self.endorsements = ["msteams"]
        self._server: ThreadingHTTPServer | None = None

    @property
    def _jwks(self) -> dict[str, Any]:
        return {"keys": [{**self._jwk, "endorsements": self.endorsements}]}

    def start(self) -> None:
        """Serve in a daemon thread on a free port."""
        keys = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith("/keys"):
                    payload: Any = keys._jwks
                else:
                    payload = {"issuer": ISSUER, "jwks_uri": f"{keys.url}/keys"}
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Polls for shutdown every 50 ms (the default 0.5 s is what stopping it would cost a test).
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        """Base URL of this server."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def metadata_url(self) -> str:
        """The OpenID metadata URL to point botbuilder's channel validation at."""
        return f"{self.url}/.well-known/openidconfiguration"

    def token(
        self,
        *,
        audience: str,
        service_url: str,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        expires_in: int = 3600,
        issuer: str = ISSUER,
    ) -> str:
        """A channel token as the Bot Connector signs it (no ``ver`` claim: see teams.md)."""
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": audience,
            "serviceurl": service_url,
            "nbf": now - 10,
            "iat": now - 10,
            "exp": now + expires_in,
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})
