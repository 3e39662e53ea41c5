"""Service identity without a mesh: a local certificate authority, a certificate per service
naming it, and gRPC credentials with client certificates (mutual TLS).

`make up` and the harness stacks issue the certificates under `<var>/tls/` (`issue_local_pki`:
`ca.pem`, and `<identity>.pem` / `<identity>.key` per identity, each a P-256 key signed by the
CA with the identity as its subject common name and `DNS:<identity>`, `DNS:localhost`,
`IP:127.0.0.1` as subject alternative names). Each service reads its files from
`<PREFIX>_TLS_CA`, `<PREFIX>_TLS_CERT` and `<PREFIX>_TLS_KEY` (`TlsFiles.from_env`): all three
set turns TLS on, none leaves it off (the Kubernetes overlays, where Istio's mTLS carries the
identity), some but not all is a settings error.

The signer is the one internal gRPC server with callers: it requires a client certificate from
its CA and answers each method only to the identities its settings allow (`peer_identity`:
the verified certificate's common name).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from withdrawal_shared.settings import SettingsError, env_str

CA_NAME = "asset-withdrawal local CA"
VALID_DAYS = 825


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA that signs the peers, and this party's certificate and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_env(cls, prefix: str) -> TlsFiles | None:
        """`<prefix>_TLS_CA`, `_CERT`, `_KEY`: all set (TLS on), or none (off)."""
        names = (f"{prefix}_TLS_CA", f"{prefix}_TLS_CERT", f"{prefix}_TLS_KEY")
        values = [
            env_str(f"{prefix}_TLS_CA", "").strip(),
            env_str(f"{prefix}_TLS_CERT", "").strip(),
            env_str(f"{prefix}_TLS_KEY", "").strip(),
        ]
        if not any(values):
            return None
        missing = [name for name, value in zip(names, values, strict=True) if not value]
        if missing:
            raise SettingsError(
                f"{', '.join(missing)} unset while {prefix}_TLS_* is partly set: set all three "
                "(CA, certificate, key) for TLS, or none"
            )
        files = cls(*(Path(value) for value in values))
        for name, path in zip(names, (files.ca, files.cert, files.key), strict=True):
            if not path.is_file():
                raise SettingsError(f"{name}={path}: no such file")
        return files

    def server_credentials(self) -> grpc.ServerCredentials:
        """Mutual TLS: the client must present a certificate signed by the CA."""
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The server must prove itself with a certificate of the CA; we present ours."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )

    def env(self, prefix: str) -> dict[str, str]:
        """The variables `from_env(prefix)` reads, naming these files."""
        return {
            f"{prefix}_TLS_CA": str(self.ca),
            f"{prefix}_TLS_CERT": str(self.cert),
            f"{prefix}_TLS_KEY": str(self.key),
        }


def secure_or_insecure_channel(target: str, files: TlsFiles | None) -> grpc.Channel:
    """A channel to `target`: mutual TLS with `files`, plaintext without."""
    if files is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, files.channel_credentials())


def peer_identity(context: Any) -> str | None:
    """The common name of the verified client certificate of a gRPC call (None without TLS)."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else None


def issue_local_pki(directory: Path, identities: Sequence[str]) -> dict[str, TlsFiles]:
    """The CA (created once) and a certificate per identity (created when missing), under
    `directory` (keys mode 0600). Idempotent: existing files are kept."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, ca_key_pem = directory / "ca.pem", directory / "ca.key"
    if not (ca_pem.exists() and ca_key_pem.exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        _write_private(ca_key_pem, _key_pem(key))
        ca_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_pem.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    issued: dict[str, TlsFiles] = {}
    for identity in identities:
        files = TlsFiles(ca_pem, directory / f"{identity}.pem", directory / f"{identity}.key")
        if not (files.cert.exists() and files.key.exists()):
            _issue(files, identity, ca_cert, ca_key)
        issued[identity] = files
    return issued


def _issue(
    files: TlsFiles, identity: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(identity),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
