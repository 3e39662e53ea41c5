"""Private stores with TLS for the tests: a certificate authority, a MariaDB server in a
temporary data directory and a redis-server listening on a TLS port only.

Everything lives under the test's temporary directories and on 127.0.0.1 ports drawn with
`devstack.config.free_port`; nothing touches the machine's MariaDB (3306) or Redis (6379).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devstack.config import free_port

SERVER_NAME = "localhost"
"""The one name in the servers' certificate (no IP address): connecting to 127.0.0.1 fails
the host name check, connecting to `localhost` passes it."""


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    """The CA that signed the servers' and the client's certificates."""
    other_ca: Path
    """A CA that signed nothing here."""
    server: Issued
    client: Issued


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca(directory: Path, name: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def _issue(
    directory: Path,
    stem: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(directory / f"{stem}.pem", directory / f"{stem}.key")
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    issued.key.write_bytes(_key_pem(key))
    issued.key.chmod(0o600)
    return issued


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_cert, ca_key = _ca(directory, "store-ca")
    other, _, _ = _ca(directory, "other-ca")
    return Pki(
        ca=ca,
        other_ca=other,
        server=_issue(directory, "server", ca_cert, ca_key, server=True),
        client=_issue(directory, "client", ca_cert, ca_key, server=False),
    )


# ---- Redis


@contextlib.contextmanager
def tls_redis(directory: Path, pki: Pki) -> Iterator[int]:
    """A redis-server on 127.0.0.1 speaking TLS only (`--port 0`), no client certificates
    asked, nothing kept on disk; yields its TLS port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / "redis.log"
    argv = [
        binary,
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        str(pki.server.cert),
        "--tls-key-file",
        str(pki.server.key),
        "--tls-ca-cert-file",
        str(pki.ca),
        "--tls-auth-clients",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--logfile",
        str(log),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: "Ready to accept connections" in _read(log), process, log, 10.0)
        yield port
    finally:
        _stop(process)


# ---- MariaDB


@dataclass(frozen=True)
class PrivateMariaDB:
    port: int
    socket: Path

    def root(self) -> pymysql.connections.Connection:
        """The administrator over the server's Unix socket (no TLS needed there)."""
        return pymysql.connect(
            unix_socket=str(self.socket), user="root", password="", autocommit=True
        )

    def url(self, user: str, password: str, database: str, host: str = SERVER_NAME) -> str:
        return f"mysql+pymysql://{user}:{password}@{host}:{self.port}/{database}?charset=utf8mb4"


@contextlib.contextmanager
def tls_mariadb(directory: Path, pki: Pki) -> Iterator[PrivateMariaDB]:
    """A MariaDB server of its own: a fresh data directory, 127.0.0.1 only, TLS with the
    server certificate of `pki` (clients' certificates verified against its CA when they
    present one). Runs as root, as the tests do here (`--user=root`)."""
    install = shutil.which("mariadb-install-db")
    server = shutil.which("mariadbd") or shutil.which("mysqld", path="/usr/sbin:/usr/bin")
    if install is None or server is None:
        raise RuntimeError(
            "mariadb-install-db / mariadbd not found (apt-get install mariadb-server)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    datadir = directory / "data"
    # The socket's path must stay short (108 bytes); pytest's temporary paths can be long.
    run_dir = Path(tempfile.mkdtemp(prefix="aws-mdb-"))
    socket = run_dir / "mysqld.sock"
    log = directory / "mariadb.err"
    small = [
        "--innodb-buffer-pool-size=32M",
        "--innodb-log-file-size=8M",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_general_ci",
    ]
    subprocess.run(
        [
            install,
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
            *small,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    argv = [
        server,
        "--no-defaults",
        f"--datadir={datadir}",
        f"--port={port}",
        f"--socket={socket}",
        "--bind-address=127.0.0.1",
        "--user=root",
        "--skip-name-resolve",
        f"--pid-file={run_dir / 'mysqld.pid'}",
        f"--log-error={log}",
        f"--ssl-ca={pki.ca}",
        f"--ssl-cert={pki.server.cert}",
        f"--ssl-key={pki.server.key}",
        *small,
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    db = PrivateMariaDB(port, socket)
    try:
        _wait_for(lambda: _answers(db), process, log, 60.0)
        yield db
    finally:
        _stop(process)
        shutil.rmtree(run_dir, ignore_errors=True)


def _answers(db: PrivateMariaDB) -> bool:
    try:
        db.root().close()
    except pymysql.MySQLError:
        return False
    return True


# ---- processes


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _wait_for(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited {process.returncode}:\n{_read(log)}")
        if time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"{process.args[0]} not ready in {timeout} s:\n{_read(log)}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
