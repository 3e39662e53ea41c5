"""TLS to real stores: a private redis-server on a TLS port and a private MariaDB server with
TLS, both with certificates of a CA made here naming `localhost` only. The shared factories
(`redis_client`, `make_engine` with DATABASE_TLS_*) connect verified and encrypted, and are
refused by a server they cannot verify; the migrations and the grants tool run over TLS and
the services' users are created `REQUIRE SSL`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.store_tls.support import (
    SERVER_NAME,
    Pki,
    PrivateMariaDB,
    make_pki,
    tls_mariadb,
    tls_redis,
)
from withdrawal_shared.db import grants
from withdrawal_shared.db.engine import make_engine
from withdrawal_shared.settings import StoreSettings
from withdrawal_shared.store_tls import DatabaseTls, redis_client

REPO = Path(__file__).resolve().parents[2]
DATABASE = "withdrawals"
ADMIN, ADMIN_PASSWORD = "aws_admin", "admin-pw"
X509_USER, X509_PASSWORD = "aws_x509", "x509-pw"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ---- Redis


@pytest.fixture(scope="module")
def redis_port(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with tls_redis(tmp_path_factory.mktemp("redis"), pki) as port:
        yield port


async def _round_trip(url: str, tls_ca: str) -> bytes | None:
    client = redis_client(url, tls_ca=tls_ca, socket_connect_timeout=5.0, socket_timeout=5.0)
    try:
        await client.set("aws:store-tls", b"over tls")
        value: bytes | None = await client.get("aws:store-tls")
        return value
    finally:
        await client.aclose()


def test_redis_client_verifies_the_server_against_the_ca(
    pki: Pki, redis_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", f"rediss://{SERVER_NAME}:{redis_port}/0")
    monkeypatch.setenv("REDIS_TLS_CA", str(pki.ca))
    settings = StoreSettings(**StoreSettings.store_env())
    assert asyncio.run(_round_trip(settings.redis_url, settings.redis_tls_ca)) == b"over tls"


@pytest.mark.parametrize(
    ("host", "ca", "reason"),
    [
        (SERVER_NAME, "", "certificate verify failed"),
        (SERVER_NAME, "other", "certificate verify failed"),
        ("127.0.0.1", "ca", "IP address mismatch"),
    ],
    ids=["without the CA", "another CA", "a name the certificate lacks"],
)
def test_redis_client_refuses_a_server_it_cannot_verify(
    pki: Pki, redis_port: int, host: str, ca: str, reason: str
) -> None:
    tls_ca = {"": "", "other": str(pki.other_ca), "ca": str(pki.ca)}[ca]
    with pytest.raises(redis.ConnectionError, match=reason):
        asyncio.run(_round_trip(f"rediss://{host}:{redis_port}/0", tls_ca))


# ---- MariaDB


@dataclass(frozen=True)
class Database:
    server: PrivateMariaDB
    admin_url: str
    accounts: dict[str, grants.ServiceAccount]
    migrate: subprocess.CompletedProcess[str]


def _migrate(url: str, ca: Path) -> subprocess.CompletedProcess[str]:
    """`python -m withdrawal_shared.db.migrate` as the Job runs it: settings from the
    environment."""
    env = {**os.environ, "DATABASE_URL": url, "DATABASE_TLS_CA": str(ca)}
    return subprocess.run(
        [sys.executable, "-m", "withdrawal_shared.db.migrate"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def database(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """The server, an administrator that may only connect over TLS, the schema migrated
    over TLS by the migration command, and the services' users made by the grants tool
    (`REQUIRE SSL`), plus a user that must present a client certificate."""
    with tls_mariadb(tmp_path_factory.mktemp("mariadb"), pki) as server:
        with server.root() as root, root.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            for user, password, require in (
                (ADMIN, ADMIN_PASSWORD, "SSL"),
                (X509_USER, X509_PASSWORD, "X509"),
            ):
                cur.execute(
                    f"CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s REQUIRE {require}",
                    (user, password),
                )
            cur.execute(f"GRANT ALL ON *.* TO {ADMIN}@'127.0.0.1' WITH GRANT OPTION")
            cur.execute(f"GRANT SELECT ON {DATABASE}.* TO {X509_USER}@'127.0.0.1'")
        admin_url = server.url(ADMIN, ADMIN_PASSWORD, DATABASE)
        migrated = _migrate(admin_url, pki.ca)
        assert migrated.returncode == 0, migrated.stderr
        accounts = grants.provision(
            admin_url, host="127.0.0.1", tls=DatabaseTls(pki.ca), require_tls=True
        )
        yield Database(server, admin_url, accounts, migrated)


def _session_facts(url: str, tls: DatabaseTls | None) -> dict[str, str]:
    engine = make_engine(url, pool_size=1, tls=tls)
    try:
        with engine.connect() as conn:
            user = conn.execute(text("SELECT CURRENT_USER()")).scalar_one()
            rows = conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_%'")).all()
            status = {str(name): value for name, value in rows}
            count = conn.execute(text("SELECT COUNT(*) FROM withdrawals")).scalar_one()
    finally:
        engine.dispose()
    return {
        "user": str(user),
        "cipher": str(status.get("Ssl_cipher", "")),
        "version": str(status.get("Ssl_version", "")),
        "withdrawals": str(count),
    }


def test_migrations_and_grants_run_over_tls(database: Database, pki: Pki) -> None:
    assert "database is at the newest migration" in database.migrate.stdout
    with database.server.root() as root, root.cursor() as cur:
        cur.execute("SELECT User, ssl_type FROM mysql.user WHERE User LIKE %s", (f"{DATABASE}_%",))
        users = dict(cur.fetchall())
    assert users == {a.user: "ANY" for a in database.accounts.values()}, "REQUIRE SSL"
    # The command applies DATABASE_TLS_CA: with a CA that did not sign the server it fails.
    refused = _migrate(database.admin_url, pki.other_ca)
    assert refused.returncode != 0
    assert "certificate verify failed" in refused.stderr


def test_a_service_user_connects_verified_and_encrypted(
    database: Database, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = database.accounts["gateway"]
    monkeypatch.setenv("DATABASE_URL", gateway.database_url)
    monkeypatch.setenv("DATABASE_TLS_CA", str(pki.ca))
    settings = StoreSettings(**StoreSettings.store_env())
    facts = _session_facts(settings.database_url, settings.database_tls)
    assert facts["user"] == f"{gateway.user}@127.0.0.1"
    assert facts["cipher"] != ""
    assert facts["version"] in ("TLSv1.2", "TLSv1.3")
    assert facts["withdrawals"] == "0"


def test_a_user_requiring_tls_is_refused_in_plaintext(database: Database) -> None:
    gateway = database.accounts["gateway"]
    with pytest.raises(pymysql.err.OperationalError) as refused:
        pymysql.connect(
            host="127.0.0.1",
            port=database.server.port,
            user=gateway.user,
            password=gateway.password,
            ssl_disabled=True,
        )
    assert refused.value.args[0] == 1045  # access denied: the account requires SSL


@pytest.mark.parametrize(
    ("host", "ca", "reason"),
    [
        (SERVER_NAME, "other", "certificate verify failed"),
        ("127.0.0.1", "ca", "IP address mismatch"),
    ],
    ids=["another CA", "a name the certificate lacks"],
)
def test_the_engine_refuses_a_server_it_cannot_verify(
    database: Database, pki: Pki, host: str, ca: str, reason: str
) -> None:
    gateway = database.accounts["gateway"]
    url = database.server.url(gateway.user, gateway.password, DATABASE, host=host)
    tls = DatabaseTls(pki.other_ca if ca == "other" else pki.ca)
    with pytest.raises(OperationalError, match=reason):
        _session_facts(url, tls)


def test_without_the_setting_pymysql_encrypts_but_verifies_nothing(
    database: Database,
) -> None:
    """What DATABASE_TLS_CA adds: PyMySQL alone takes TLS when offered, and accepts a
    certificate for another name (here: connecting to 127.0.0.1)."""
    gateway = database.accounts["gateway"]
    url = database.server.url(gateway.user, gateway.password, DATABASE, host="127.0.0.1")
    assert _session_facts(url, None)["cipher"] != ""


def test_a_client_certificate_from_the_settings(
    database: Database, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = database.server.url(X509_USER, X509_PASSWORD, DATABASE)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DATABASE_TLS_CA", str(pki.ca))
    monkeypatch.setenv("DATABASE_TLS_CERT", str(pki.client.cert))
    monkeypatch.setenv("DATABASE_TLS_KEY", str(pki.client.key))
    settings = StoreSettings(**StoreSettings.store_env())
    facts = _session_facts(settings.database_url, settings.database_tls)
    assert facts["user"] == f"{X509_USER}@127.0.0.1"
    with pytest.raises(OperationalError, match="1045"):
        _session_facts(url, DatabaseTls(pki.ca))  # no certificate presented
