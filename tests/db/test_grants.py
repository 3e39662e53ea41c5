"""Each service's own database user (`withdrawal_shared.db.grants`).

The unit tests hold the grant table to the models (a new table fails until every service has
a decision for it) and to the rules nobody may break (the signer writes only its ledger, the
processor never decides approvals nor writes the ledger). The MariaDB tests provision the
users of a fresh migrated database and check that the server itself refuses what a service
must not do (error 1142) and allows what it must; the users carry the test database's unique
name and are dropped afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from tests.support.databases import mariadb_database
from withdrawal_shared.db import grants
from withdrawal_shared.db.models import (
    AdminChange,
    ApprovalDecision,
    Base,
    HotWallet,
    SafeOwnerSignature,
    SignerLedger,
    SignerLedgerItem,
    Withdrawal,
)

ACCESS_DENIED = 1142  # ER_TABLEACCESS_DENIED_ERROR
LEDGER = {"signer_ledger", "signer_ledger_items", "safe_owner_signatures"}


# -- the table itself ------------------------------------------------------------------------


def test_every_table_has_a_decision_for_every_service() -> None:
    tables = set(Base.metadata.tables)
    assert set(grants.GRANTS) == set(grants.SERVICES)
    for service, decided in grants.GRANTS.items():
        missing, unknown = tables - set(decided), set(decided) - tables
        assert not missing, (
            f"{service} has no grant decision for {sorted(missing)}: add a row to "
            "_TABLE in withdrawal_shared/db/grants.py ('' for no access)"
        )
        assert not unknown, f"{service} has grants on tables the models lack: {sorted(unknown)}"
        for table, privileges in decided.items():
            assert privileges <= set(grants.PRIVILEGES), (service, table, privileges)
            if privileges & {"UPDATE", "DELETE"}:
                assert "SELECT" in privileges, f"{service} {table}: its WHERE clauses read"


def test_the_signer_writes_only_its_ledger_and_reads_what_its_policy_checks() -> None:
    signer = grants.GRANTS["signer"]
    writes = {t for t, p in signer.items() if p & grants.WRITES}
    assert writes == LEDGER | {"signer_keys"}
    # Its keys' states (rotation): ACTIVE rows inserted, updated once to RETIRED; only it.
    assert signer["signer_keys"] == {"SELECT", "INSERT", "UPDATE"}
    for service, decided in grants.GRANTS.items():
        assert service == "signer" or not decided["signer_keys"], service
    for table in LEDGER:
        assert signer[table] == {"SELECT", "INSERT"}, "the ledger is append-only"
    for table in ("withdrawals", "approval_requests", "approval_decisions", "blocked_addresses"):
        assert signer[table] == {"SELECT"}, table
    for table in ("payout_pauses", "tokens", "chains", "payout_vaults", "payout_transactions"):
        assert signer[table] == {"SELECT"}, table
    # The treasury Safe's policy: its row and owners, the hot wallets, the four-eyes changes.
    for table in ("safe_treasuries", "safe_owners", "hot_wallets", "admin_changes"):
        assert signer[table] == {"SELECT"}, table
    for table in ("api_keys", "operator_credentials", "operators"):
        assert not signer[table], f"the signer has no business reading {table}"


def test_only_the_signer_writes_its_ledger_and_only_the_gateway_decides_approvals() -> None:
    for service, decided in grants.GRANTS.items():
        if service != "signer":
            for table in LEDGER:
                assert not decided[table] & grants.WRITES, (service, table)
        if service != "gateway":
            assert not decided["approval_decisions"] & grants.WRITES, service
    assert grants.GRANTS["processor"]["approval_requests"] >= {"INSERT"}  # at validation


def test_operations_guide_shows_the_grant_table(repo_root: Path) -> None:
    document = (repo_root / "docs" / "operations.md").read_text(encoding="utf-8")
    assert grants.markdown_table() in document, (
        "docs/operations.md must hold the output of "
        "`.venv/bin/python -m withdrawal_shared.db.grants --show` under 'Database users'"
    )


def test_sqlite_has_no_users(tmp_path: Path) -> None:
    with pytest.raises(grants.GrantsError, match="no users"):
        grants.provision(f"sqlite:///{tmp_path / 'x.sqlite3'}")


def test_the_credentials_file_is_private_and_keeps_passwords(tmp_path: Path) -> None:
    url = "mysql+pymysql://root:@127.0.0.1:3306/some_db?charset=utf8mb4"
    accounts = {
        service: grants.ServiceAccount(
            service,
            f"some_db_{service}",
            "127.0.0.1",
            f"pw-{service}",
            grants.service_url(url, f"some_db_{service}", f"pw-{service}"),
        )
        for service in grants.SERVICES
    }
    path = tmp_path / "var" / "db-users.json"
    grants.write_credentials(path, accounts)
    assert path.stat().st_mode & 0o777 == 0o600
    assert grants.read_passwords(path, url) == {s: f"pw-{s}" for s in grants.SERVICES}
    assert grants.read_passwords(path, url.replace("some_db", "other_db")) == {}
    signer = make_url(accounts["signer"].database_url)
    assert (signer.username, signer.password, signer.database) == (
        "some_db_signer",
        "pw-signer",
        "some_db",
    )
    assert signer.query == {"charset": "utf8mb4"}
    assert "pw-signer" not in repr(accounts["signer"])


# -- on MariaDB --------------------------------------------------------------------------------


@contextlib.contextmanager
def _provisioned(admin_url: str) -> Iterator[dict[str, grants.ServiceAccount]]:
    database = make_url(admin_url).database
    host = grants.account_host(admin_url)
    names = grants.user_names(f"{database}_")
    try:
        yield grants.provision(admin_url)
    finally:
        grants.drop_users(admin_url, names.values(), host)


@pytest.fixture
def accounts() -> Iterator[tuple[str, dict[str, grants.ServiceAccount]]]:
    with mariadb_database() as admin_url, _provisioned(admin_url) as provisioned:
        yield admin_url, provisioned


def _refused(engine_url: str, statement: object) -> None:
    engine = create_engine(engine_url)
    try:
        with pytest.raises(OperationalError) as caught, engine.begin() as conn:
            conn.execute(statement)  # type: ignore[call-overload]
        assert caught.value.orig.args[0] == ACCESS_DENIED, caught.value.orig
    finally:
        engine.dispose()


def _decision() -> object:
    return insert(ApprovalDecision).values(
        withdrawal_id="0" * 26,
        operator_id="mallory",
        decision="APPROVE",
        reason="",
        create_time=dt.datetime(2025, 1, 1),
    )


def _ledger(tx_hash: str) -> object:
    return insert(SignerLedger).values(
        tx_hash=tx_hash,
        wallet="0x" + "1" * 40,
        chain_id=137,
        nonce=7,
        purpose="payout",
        raw_tx=b"\x02",
        create_time=dt.datetime(2025, 1, 1),
    )


def test_mariadb_refuses_the_signer_anything_but_its_ledger(
    accounts: tuple[str, dict[str, grants.ServiceAccount]],
) -> None:
    _admin, provisioned = accounts
    url = provisioned["signer"].database_url
    _refused(url, update(Withdrawal).values(state="COMPLETED"))
    _refused(url, _decision())
    _refused(url, text("DELETE FROM signer_ledger"))  # append-only, even for the signer
    _refused(url, text("SELECT * FROM api_keys"))
    _refused(url, text("DELETE FROM safe_owner_signatures"))  # an owner's record: append-only
    _refused(url, text("UPDATE safe_owner_signatures SET safe_nonce = 0"))
    _refused(url, text("UPDATE admin_changes SET state = 'APPLIED'"))  # it only reads changes
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(select(Withdrawal.id).limit(1)).all() == []
            conn.execute(select(Withdrawal.id).with_for_update()).all()  # its row locks
            conn.execute(text("SELECT scope FROM payout_pauses LOCK IN SHARE MODE")).all()
            conn.execute(text("SELECT chain FROM safe_treasuries FOR UPDATE")).all()
            conn.execute(select(AdminChange.id).limit(1)).all()
            conn.execute(select(HotWallet.address).limit(1)).all()
            conn.execute(
                insert(SafeOwnerSignature).values(
                    safe_address="0x" + "5" * 40,
                    safe_nonce=3,
                    owner_address="0x" + "6" * 40,
                    chain_id=137,
                    safe_tx_hash="0x" + "b" * 64,
                    signature=b"\x1b" * 65,
                    purpose="PAYOUT",
                    to_address="0x" + "7" * 40,
                    change_id=None,
                    withdrawal_ids="",
                    create_time=dt.datetime(2025, 1, 1),
                )
            )
            conn.execute(_ledger("0x" + "a" * 64))  # type: ignore[call-overload]
            conn.execute(
                insert(SignerLedgerItem).values(
                    tx_hash="0x" + "a" * 64, withdrawal_id="0" * 26, wallet="0x" + "1" * 40, nonce=7
                )
            )
        with engine.connect() as conn:
            assert conn.execute(select(SignerLedgerItem.nonce)).scalars().all() == [7]
    finally:
        engine.dispose()


def test_mariadb_refuses_the_processor_approval_decisions_and_the_ledger(
    accounts: tuple[str, dict[str, grants.ServiceAccount]],
) -> None:
    _admin, provisioned = accounts
    url = provisioned["processor"].database_url
    _refused(url, _decision())
    _refused(url, _ledger("0x" + "b" * 64))
    _refused(url, text("UPDATE signer_ledger SET nonce = 0"))
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(select(ApprovalDecision.operator_id)).all()  # it reads them
            conn.execute(text("DELETE FROM approval_requests WHERE withdrawal_id = ''"))
    finally:
        engine.dispose()


def test_provisioning_again_converges_and_keeps_the_given_passwords(
    accounts: tuple[str, dict[str, grants.ServiceAccount]],
) -> None:
    admin_url, provisioned = accounts
    url = make_url(admin_url)
    monitor = provisioned["monitor"]
    grantee = (monitor.user, monitor.host)
    with contextlib.closing(
        pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, password="")
    ) as conn:
        with conn.cursor() as cur:  # a stray grant, as if an operator had added it by hand
            cur.execute(f"GRANT INSERT ON `{url.database}`.`api_keys` TO %s@%s", grantee)
        again = grants.provision(
            admin_url, passwords={s: a.password for s, a in provisioned.items()}
        )
        assert {s: a.database_url for s, a in again.items()} == {
            s: a.database_url for s, a in provisioned.items()
        }
        with conn.cursor() as cur:
            cur.execute(
                "SELECT TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
                "WHERE GRANTEE = %s AND TABLE_SCHEMA = %s",
                (f"'{monitor.user}'@'{monitor.host}'", url.database),
            )
            held = set(cur.fetchall())
    wanted = {(t, p) for t, privs in grants.GRANTS["monitor"].items() for p in privs}
    assert held == wanted
    engine = create_engine(monitor.database_url)  # the kept password still opens it
    try:
        with engine.connect() as conn:
            assert (
                conn.execute(text("SELECT CURRENT_USER()"))
                .scalar_one()
                .startswith(monitor.user + "@")
            )
    finally:
        engine.dispose()
