"""Checking the JWT client assertion msal sends for a certificate credential."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Entra ID tolerates some clock skew on nbf/exp.
_SKEW_SECONDS = 300


class AssertionRejected(Exception):
    """The assertion is not acceptable; ``code`` is the AADSTS number Entra ID would use."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def thumbprint_header(fingerprint: bytes) -> str:
    """How a certificate fingerprint appears in ``x5t``/``x5t#S256``: base64url, unpadded."""
    return base64.urlsafe_b64encode(fingerprint).decode("ascii").rstrip("=")


def verify_client_assertion(
    assertion: str,
    *,
    client_id: str,
    audience: str,
    certificates: Mapping[str, bytes],
    now: datetime,
) -> None:
    """Raise :class:`AssertionRejected` unless ``assertion`` is a valid, signed, current JWT.

    ``certificates`` maps ``x5t``/``x5t#S256`` header values to registered PEM certificates.
    """
    try:
        header_b64, payload_b64, signature_b64 = assertion.split(".")
        header: dict[str, Any] = json.loads(_b64url(header_b64))
        claims: dict[str, Any] = json.loads(_b64url(payload_b64))
        signature = _b64url(signature_b64)
    except ValueError as exc:
        raise AssertionRejected(50027, f"Invalid JWT token. The token is malformed: {exc}") from exc
    key_id = str(header.get("x5t#S256") or header.get("x5t") or "")
    # msal pads its base64url thumbprint; RFC 7515 does not. Accept both (and plain base64).
    pem = certificates.get(key_id.rstrip("=").replace("+", "-").replace("/", "_"))
    if pem is None:
        raise AssertionRejected(
            700027,
            "Client assertion failed signature validation. The certificate used to sign the "
            f"assertion (thumbprint {key_id}) is not registered on application '{client_id}'.",
        )
    public_key = x509.load_pem_x509_certificate(pem).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise AssertionRejected(700027, "Client assertion certificate must be an RSA key.")
    algorithm = header.get("alg")
    if algorithm == "RS256":
        chosen: padding.AsymmetricPadding = padding.PKCS1v15()
    elif algorithm == "PS256":
        chosen = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
    else:
        raise AssertionRejected(5002738, f"Invalid JWT token. Unsupported algorithm '{algorithm}'.")
    try:
        public_key.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii"), chosen, hashes.SHA256())
    except InvalidSignature as exc:
        raise AssertionRejected(700027, "Client assertion failed signature validation.") from exc
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise AssertionRejected(
            700021, f"Client assertion application identifier doesn't match '{client_id}'."
        )
    if claims.get("aud") != audience:
        raise AssertionRejected(
            700027, f"Client assertion contains an invalid audience; expected {audience}."
        )
    timestamp = now.timestamp()
    if (
        float(claims.get("exp", 0)) < timestamp - _SKEW_SECONDS
        or float(claims.get("nbf", 0)) > timestamp + _SKEW_SECONDS
    ):
        raise AssertionRejected(700024, "Client assertion is not within its valid time range.")
