"""Certificates for the sandbox: a throwaway CA, the server certificate, client certificates."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

CA_FILE_NAME = "sandbox-ca.pem"


@dataclass(frozen=True)
class ServerTLS:
    """The server's TLS context and the CA file clients must trust."""

    ca: trustme.CA
    ssl_context: ssl.SSLContext
    ca_pem_path: Path


def make_server_tls(directory: Path) -> ServerTLS:
    """A fresh CA and a certificate for 127.0.0.1, ::1 and localhost; the CA PEM is written
    to ``directory``."""
    ca = trustme.CA(organization_name="remediation-bot sandbox tenant")
    leaf = ca.issue_cert("127.0.0.1", "::1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    ca_pem_path = directory / CA_FILE_NAME
    ca.cert_pem.write_to_path(str(ca_pem_path))
    return ServerTLS(ca=ca, ssl_context=context, ca_pem_path=ca_pem_path)


@dataclass(frozen=True)
class IssuedClientCertificate:
    """An app credential: the private key file msal reads and the certificate's thumbprints."""

    private_key_path: Path
    certificate_path: Path
    thumbprint: str
    sha256_thumbprint: str
    certificate_pem: bytes


def issue_client_certificate(ca: trustme.CA, directory: Path, name: str) -> IssuedClientCertificate:
    """An RSA certificate (msal signs assertions with RS256/PS256) written as PEM files."""
    leaf = ca.issue_cert(f"{name}.sandbox.invalid", key_type=trustme.KeyType.RSA)
    certificate_pem = leaf.cert_chain_pems[0].bytes()
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    key_path = directory / f"{name}-key.pem"
    cert_path = directory / f"{name}-cert.pem"
    leaf.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(certificate_pem)
    return IssuedClientCertificate(
        private_key_path=key_path,
        certificate_path=cert_path,
        # Entra ID shows the SHA-1 thumbprint in upper-case hex; msal accepts it as given.
        thumbprint=certificate.fingerprint(hashes.SHA1()).hex().upper(),
        sha256_thumbprint=certificate.fingerprint(hashes.SHA256()).hex().upper(),
        certificate_pem=certificate_pem,
    )
