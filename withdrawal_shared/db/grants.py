"""Each service's own database user on MySQL/MariaDB, with only the privileges it needs.

`GRANTS` is the one place that says, for every service and every table of the models'
metadata, which privileges the service holds on it (an empty set: none). It was derived from
the code: the tables each service reads, and those it INSERTs into, UPDATEs (also `SELECT ...
FOR UPDATE` followed by an ORM change, and `INSERT ... ON DUPLICATE KEY UPDATE`) or DELETEs
from. In short:

- the signer reads the withdrawals it pays, their approval requests and decisions, the
  blocklist, the pauses, the tokens, the vault, the processor's payout rows, the treasury Safe
  and its owners, the hot wallets and the four-eyes changes (a treasury operation is signed
  only as an applied change orders it), and writes only its own ledgers (`signer_ledger`,
  `signer_ledger_items`, and an owner's `safe_owner_signatures`: INSERT, never UPDATE or
  DELETE);
- the processor moves withdrawals up to BROADCAST, reserves nonces and payout numbers, writes
  payout rows and items, and creates (or replaces, or marks expired) the approval requests at
  validation, and signs (with the owners' signers) and executes the treasury Safe's
  transactions, taking their Safe nonces; it cannot decide approvals nor touch the signer's
  ledger;
- the monitor moves withdrawals from BROADCAST on and settles payout rows and items;
- the webhook sender reads the audit trail (its outbox) and the withdrawals, and writes the
  delivery rows, their attempts and the outbox cursor;
- the gateway stores withdrawals (and cancels them), reads the block of a mined withdrawal's
  payout row, counts limits, records API keys' use,
  and performs the admin API's operator actions: operators, credentials, four-eyes changes
  and their audit trail, API keys, pauses, token settings, tiers and limits, approval
  decisions, the blocklist, and the treasury operations an applied change records.

A table added to the models without a row here fails `tests/db/test_grants.py` until a
decision is made for every service; a database holding a table not named here (nor Alembic's
`alembic_version`, which no service reads) makes `provision` refuse.

`provision` creates the five users of one database (idempotent: `CREATE USER IF NOT EXISTS`,
the password set to the one given or a generated one, then exactly the table privileges of
`GRANTS` granted and any other privilege on the database's tables revoked). Passwords are
never logged nor printed. With `require_tls` (`--require-tls`) each user is also altered to
`REQUIRE SSL`, so the server refuses it over a plaintext connection; without, a user's TLS
requirement is left as it is. The administrator's connection uses the DATABASE_TLS_* settings
(`withdrawal_shared.store_tls`). `python -m withdrawal_shared.db.grants` runs it after the
migrations and writes each service's `DATABASE_URL` to a credentials file of mode 0600.

SQLite has no users: every service opens the same file with every right.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql  # type: ignore[import-untyped]
from sqlalchemy.engine import URL, make_url

from withdrawal_shared.db.models import Base
from withdrawal_shared.settings import (
    DEFAULT_DATABASE_URL,
    VAR_DIR,
    SettingsError,
    database_tls_env,
    env_str,
)
from withdrawal_shared.store_tls import DatabaseTls

SERVICES: tuple[str, ...] = ("gateway", "processor", "signer", "monitor", "webhooks")
PRIVILEGES: tuple[str, ...] = ("SELECT", "INSERT", "UPDATE", "DELETE")
WRITES = frozenset({"INSERT", "UPDATE", "DELETE"})
LOCKS_WITHOUT_WRITING = frozenset({"signer", "processor"})
"""Services that lock rows of a table they only read (`SELECT ... FOR UPDATE` of the
withdrawals by the signer, `LOCK IN SHARE MODE` of the pause row by both). MariaDB allows that
with SELECT; MySQL 8.0.22+ also wants LOCK TABLES on the database, which `provision` grants
them on MySQL (it lets them lock, never write)."""
IGNORED_TABLES = frozenset({"alembic_version"})
"""Tables of the database that are not the models' and that no service may touch."""
DEFAULT_CREDENTIALS = VAR_DIR / "db-users.json"

_LETTERS = {"S": "SELECT", "I": "INSERT", "U": "UPDATE", "D": "DELETE"}


def _privileges(code: str) -> frozenset[str]:
    return frozenset(_LETTERS[letter] for letter in code)


# S = SELECT, I = INSERT, U = UPDATE, D = DELETE; "" = no access at all.
# One row per table, one column per service: gateway, processor, signer, monitor.
_TABLE: dict[str, tuple[str, str, str, str]] = {
    # reference data (seeded by the migrations and the bootstrap)
    "chains": ("S", "S", "S", "S"),
    "tokens": ("SU", "S", "S", "S"),  # gateway: the admin API's UpdateToken
    "system_addresses": ("S", "SI", "", ""),  # processor: a rotation's new hot wallet
    "hot_wallets": ("S", "SIU", "S", ""),  # gateway: hot_wallet.rotate checks the wallet
    "signer_keys": ("", "", "SIU", ""),  # the signer's keys and their states (rotation)
    "hot_wallet_rotations": ("SI", "SU", "S", ""),  # gateway: at apply; signer: owners check
    "payout_vaults": ("", "SU", "S", "S"),  # processor: next_number
    # partners and their keys
    "partners": ("S", "", "", ""),
    "api_keys": ("SIU", "", "", ""),  # last use, the admin API's create and revoke
    # withdrawals and their audit trail
    "withdrawals": ("SIU", "SU", "S", "SU"),
    "withdrawal_audit": ("SI", "SI", "", "SI"),
    # payouts
    "payout_transactions": ("S", "SIU", "S", "SU"),  # gateway: a withdrawal's block
    "payout_items": ("", "SI", "", "SU"),
    "signer_ledger": ("", "", "SI", ""),
    "signer_ledger_items": ("", "", "SI", ""),
    "safe_owner_signatures": ("", "", "SI", ""),  # an owner's signer: every signature it gave
    "payout_pauses": ("SIU", "S", "S", ""),  # gateway: the admin API's pause and resume
    "leases": ("", "SIU", "", "SIU"),  # processor: batching partitions; monitor: the leader
    "vault_funds": ("S", "SIU", "", ""),  # processor: as it reads the vault; gateway: batches
    # the treasury Safe (set up by the bootstrap; the owners' signers check against it)
    "safe_treasuries": ("S", "SU", "S", "S"),  # processor: next_nonce
    "safe_owners": ("S", "S", "S", "S"),
    # gateway: a treasury operation recorded when its change is applied, read back;
    # processor: records Safe payouts (withdrawals above a token's Safe threshold), signs
    # and executes them
    "safe_transactions": ("SI", "SIU", "S", ""),
    "safe_signatures": ("", "SI", "S", ""),
    # operators and the admin API
    "operators": ("SIU", "", "", ""),
    "operator_credentials": ("SIU", "", "", ""),
    "admin_changes": ("SIU", "", "S", ""),  # signer: the treasury operation of a change
    "admin_audit": ("SI", "", "", ""),
    "admin_audit_head": ("SU", "", "", ""),
    # tiers and limits (the gateway enforces them and the admin API sets them)
    "limit_tiers": ("S", "", "", ""),
    "tier_limits": ("SIUD", "", "", ""),
    "user_tiers": ("SIUD", "", "", ""),
    "partner_limits": ("SIUD", "", "", ""),
    "limit_usage": ("SIUD", "", "", ""),  # D: counters older than the window
    # approvals and screening
    "approval_rules": ("SIUD", "S", "", ""),  # gateway: four-eyes rule changes
    "approval_requests": ("SU", "SIUD", "S", ""),  # processor: at validation, at expiry
    "approval_decisions": ("SIU", "S", "S", ""),  # gateway: the admin API's decisions
    "blocked_addresses": ("SID", "S", "S", ""),
    "allowlisted_addresses": ("S", "S", "", ""),
    # CSV batches (the gateway stores them; their rows are withdrawals)
    "batches": ("SIU", "", "", ""),
    "batch_problems": ("SI", "", "", ""),
    # webhooks (the gateway manages the endpoints and replays; `_WEBHOOKS` has the sender's)
    "webhook_endpoints": ("SIUD", "", "", ""),
    "webhook_deliveries": ("SUD", "", "", ""),
    "webhook_attempts": ("SD", "", "", ""),
    "webhook_outbox_cursor": ("", "", "", ""),
}

_WEBHOOKS: dict[str, str] = {
    "chains": "S",
    "tokens": "S",
    "withdrawals": "S",
    "withdrawal_audit": "S",  # the outbox it reads
    "webhook_endpoints": "SU",  # last success, disabling a failing or gone endpoint
    "webhook_deliveries": "SIU",
    "webhook_attempts": "SI",
    "webhook_outbox_cursor": "SU",
}
"""The webhook sender's column of the table above; a table not named here: no access."""

GRANTS: Mapping[str, Mapping[str, frozenset[str]]] = {
    **{
        service: {table: _privileges(codes[index]) for table, codes in _TABLE.items()}
        for index, service in enumerate(SERVICES[:4])
    },
    "webhooks": {table: _privileges(_WEBHOOKS.get(table, "")) for table in _TABLE},
}
"""service -> table -> privileges (every table of the models, for every service)."""


class GrantsError(RuntimeError):
    """The users cannot be provisioned; the message says why (never a password)."""


@dataclass(frozen=True)
class ServiceAccount:
    service: str
    user: str
    host: str
    password: str
    database_url: str
    """The service's DATABASE_URL: the admin URL with this user and password."""

    def __repr__(self) -> str:  # never show the password
        return f"ServiceAccount({self.service!r}, {self.user!r}@{self.host!r})"


def model_tables() -> frozenset[str]:
    return frozenset(Base.metadata.tables)


def privileges_of(service: str) -> dict[str, frozenset[str]]:
    """The tables `service` holds any privilege on, with those privileges."""
    return {table: privs for table, privs in GRANTS[service].items() if privs}


def markdown_table() -> str:
    """The grants as the Markdown table of docs/operations.md (one row per table)."""
    header = "| table | " + " | ".join(f"`{s}`" for s in SERVICES) + " |"
    lines = [header, "| --- |" + " --- |" * len(SERVICES)]
    for table, codes in _TABLE.items():
        every = (*codes, _WEBHOOKS.get(table, ""))
        cells = [", ".join(p for p in PRIVILEGES if p in _privileges(c)) or "—" for c in every]
        lines.append(f"| `{table}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- accounts --------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_HOST = re.compile(r"^[A-Za-z0-9.%_:-]{1,255}$")


def user_names(prefix: str) -> dict[str, str]:
    """service -> user name (`<prefix><service>`)."""
    names = {service: f"{prefix}{service}" for service in SERVICES}
    for name in names.values():
        if not _NAME.match(name) or len(name) > 80:
            raise GrantsError(f"user name {name!r} must be 1-80 letters, digits or _")
    return names


def account_host(url: str | URL) -> str:
    """The host part of the accounts for clients reaching the server at `url`'s host: the
    loopback the clients come from when it is local, else any host (`%`)."""
    host = make_url(url).host or "localhost"
    return host if host in ("127.0.0.1", "localhost", "::1") else "%"


def service_url(admin_url: str | URL, user: str, password: str) -> str:
    """`admin_url` with `user` and `password` in place of the administrator's."""
    url = make_url(admin_url).set(username=user, password=password)
    return url.render_as_string(hide_password=False)


def _check_mysql(url: URL) -> str:
    if url.get_backend_name() not in ("mysql", "mariadb"):
        raise GrantsError(
            f"{url.get_backend_name()} has no users: per-service users exist only on "
            "MySQL/MariaDB (with SQLite every service opens the same file)"
        )
    database = url.database
    if not database or not _NAME.match(database):
        raise GrantsError("the URL must name the database (letters, digits and _ only)")
    return database


@contextlib.contextmanager
def _admin_connection(url: URL, tls: DatabaseTls | None = None) -> Iterator[Any]:
    unix_socket = url.query.get("unix_socket")
    conn = pymysql.connect(
        host=url.host or "localhost",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        unix_socket=unix_socket if isinstance(unix_socket, str) else None,
        autocommit=True,
        ssl=None if tls is None else tls.ssl_context(),
    )
    try:
        yield conn
    finally:
        conn.close()


def _execute_secret(cursor: Any, sql: str, args: Sequence[str], what: str) -> None:
    """Run a statement carrying a password; an error names `what`, never the statement."""
    try:
        cursor.execute(sql, args)
    except pymysql.MySQLError as exc:
        code = exc.args[0] if exc.args else "?"
        raise GrantsError(f"{what} failed (MySQL error {code})") from None


def _database_tables(cursor: Any, database: str) -> set[str]:
    cursor.execute(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,)
    )
    return {row[0] for row in cursor.fetchall()}


def _held(cursor: Any, database: str, user: str, host: str) -> set[tuple[str, str]]:
    cursor.execute(
        "SELECT TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
        "WHERE GRANTEE = %s AND TABLE_SCHEMA = %s",
        (f"'{user}'@'{host}'", database),
    )
    return {(row[0], row[1]) for row in cursor.fetchall()}


def _broader(cursor: Any, database: str, user: str, host: str) -> list[str]:
    """Privileges of the user beyond table level that reach this database (global or on the
    whole schema): `provision` cannot make such a user least-privileged."""
    grantee = f"'{user}'@'{host}'"
    found: list[str] = []
    cursor.execute(
        "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES "
        "WHERE GRANTEE = %s AND PRIVILEGE_TYPE <> 'USAGE'",
        (grantee,),
    )
    found += [f"{row[0]} ON *.*" for row in cursor.fetchall()]
    cursor.execute(
        "SELECT PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES "
        "WHERE GRANTEE = %s AND TABLE_SCHEMA = %s AND PRIVILEGE_TYPE <> 'LOCK TABLES'",
        (grantee, database),
    )
    found += [f"{row[0]} ON {database}.*" for row in cursor.fetchall()]
    return found


def provision(
    admin_url: str,
    *,
    user_prefix: str | None = None,
    host: str | None = None,
    passwords: Mapping[str, str] | None = None,
    tls: DatabaseTls | None = None,
    require_tls: bool = False,
) -> dict[str, ServiceAccount]:
    """Create (or bring up to date) the services' users of the database `admin_url`
    names, connecting as its administrator, and return each service's account and URL.

    Idempotent: users that exist keep existing; each gets the password in `passwords` (else
    a new random one), exactly the privileges of `GRANTS` on the database's tables, and loses
    any other table privilege there; with `require_tls` it is altered to REQUIRE SSL. The
    administrator connects over TLS with `tls`. Run after the migrations: a model table
    missing from the database, or a database table without a grant decision, is refused
    (GrantsError)."""
    url = make_url(admin_url)
    database = _check_mysql(url)
    prefix = user_prefix if user_prefix is not None else f"{database}_"
    account_at = host if host is not None else account_host(url)
    if not _HOST.match(account_at):
        raise GrantsError(f"account host {account_at!r} is not a host name, address or pattern")
    names = user_names(prefix)
    given = dict(passwords or {})
    accounts: dict[str, ServiceAccount] = {}
    with _admin_connection(url, tls) as conn, conn.cursor() as cur:
        present = _database_tables(cur, database)
        missing = sorted(model_tables() - present)
        if missing:
            raise GrantsError(
                f"database {database} lacks tables {missing}: run the migrations first "
                "(python -m withdrawal_shared.db.migrate)"
            )
        undecided = sorted(present - model_tables() - IGNORED_TABLES)
        if undecided:
            raise GrantsError(
                f"tables {undecided} of database {database} have no grant decision in "
                "withdrawal_shared/db/grants.py"
            )
        cur.execute("SELECT VERSION()")
        mysql_proper = "mariadb" not in str(cur.fetchone()[0]).lower()
        for service in SERVICES:
            user = names[service]
            password = given.get(service) or secrets.token_urlsafe(24)
            what = f"setting up user {user}@{account_at}"
            _execute_secret(
                cur,
                "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                (user, account_at, password),
                what,
            )
            _execute_secret(
                cur, "ALTER USER %s@%s IDENTIFIED BY %s", (user, account_at, password), what
            )
            if require_tls:
                cur.execute("ALTER USER %s@%s REQUIRE SSL", (user, account_at))
            broader = _broader(cur, database, user, account_at)
            if broader:
                raise GrantsError(
                    f"user {user}@{account_at} holds {broader}, more than its table grants: "
                    "revoke those first"
                )
            wanted = {
                (table, privilege)
                for table, privs in GRANTS[service].items()
                for privilege in privs
            }
            held = _held(cur, database, user, account_at)
            for table, privilege in sorted(held - wanted):
                cur.execute(
                    f"REVOKE {privilege} ON `{database}`.`{table}` FROM %s@%s", (user, account_at)
                )
            for table, privs in sorted(GRANTS[service].items()):
                if not privs:
                    continue
                listed = ", ".join(p for p in PRIVILEGES if p in privs)
                cur.execute(
                    f"GRANT {listed} ON `{database}`.`{table}` TO %s@%s", (user, account_at)
                )
            if mysql_proper and service in LOCKS_WITHOUT_WRITING:
                cur.execute(f"GRANT LOCK TABLES ON `{database}`.* TO %s@%s", (user, account_at))
            accounts[service] = ServiceAccount(
                service, user, account_at, password, service_url(url, user, password)
            )
    return accounts


def drop_users(
    admin_url: str, users: Iterable[str], host: str, *, tls: DatabaseTls | None = None
) -> None:
    """DROP USER IF EXISTS each of `users`@`host` (connecting as `admin_url`'s administrator)."""
    url = make_url(admin_url)
    with _admin_connection(url, tls) as conn, conn.cursor() as cur:
        for user in users:
            cur.execute("DROP USER IF EXISTS %s@%s", (user, host))


# -- the credentials file --------------------------------------------------------------------


def write_credentials(path: Path, accounts: Mapping[str, ServiceAccount]) -> None:
    """Write each service's user and DATABASE_URL to `path` (JSON, mode 0600, atomically)."""
    data = {
        service: {
            "user": a.user,
            "host": a.host,
            "password": a.password,
            "database_url": a.database_url,
        }
        for service, a in accounts.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def read_passwords(path: Path, admin_url: str) -> dict[str, str]:
    """The passwords recorded in `path` for the database `admin_url` names ({} when none), so
    that provisioning again keeps them."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    wanted = make_url(admin_url)
    found: dict[str, str] = {}
    for service in SERVICES:
        entry = data.get(service)
        if not isinstance(entry, dict):
            continue
        password, recorded = entry.get("password"), entry.get("database_url")
        if not isinstance(password, str) or not isinstance(recorded, str):
            continue
        try:
            same = make_url(recorded)
        except Exception:  # not a URL: a password recorded for nothing usable
            same = None
        where = (wanted.host, wanted.port, wanted.database)
        if same is not None and (same.host, same.port, same.database) == where:
            found[service] = password
    return found


# -- command line ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m withdrawal_shared.db.grants",
        description=(
            "Create or update each service's own MySQL/MariaDB user with only the privileges "
            "it needs, after the migrations. Connects as the URL's (administrator) user; "
            "writes each service's DATABASE_URL to the credentials file (mode 0600); prints "
            "no password."
        ),
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="administrator URL of the database (default: DATABASE_URL)",
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        default=DEFAULT_CREDENTIALS,
        help=f"file for the services' URLs (default: {DEFAULT_CREDENTIALS})",
    )
    parser.add_argument(
        "--user-prefix",
        default=None,
        help="user names are <prefix><service> (default: the database name and _)",
    )
    parser.add_argument(
        "--account-host",
        default=None,
        help="host part of the accounts (default: the URL's host when it is a loopback, else %%)",
    )
    parser.add_argument(
        "--new-passwords",
        action="store_true",
        help="generate new passwords even where the credentials file has some",
    )
    parser.add_argument(
        "--require-tls",
        action="store_true",
        help="alter each user to REQUIRE SSL: the server refuses it without TLS",
    )
    parser.add_argument("--show", action="store_true", help="print the grant table and exit")
    parser.add_argument("--drop", action="store_true", help="drop the services' users instead")
    args = parser.parse_args(argv)
    if args.show:
        print(markdown_table(), end="")
        return 0
    admin_url = args.database_url or env_str("DATABASE_URL", DEFAULT_DATABASE_URL)
    try:
        tls = database_tls_env(admin_url)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.drop:
            url = make_url(admin_url)
            _check_mysql(url)
            names = user_names(args.user_prefix or f"{url.database}_")
            host = args.account_host or account_host(url)
            drop_users(admin_url, names.values(), host, tls=tls)
            print(f"dropped users {', '.join(names.values())} (@{host})")
            return 0
        kept = {} if args.new_passwords else read_passwords(args.credentials, admin_url)
        accounts = provision(
            admin_url,
            user_prefix=args.user_prefix,
            host=args.account_host,
            passwords=kept,
            tls=tls,
            require_tls=args.require_tls,
        )
    except (GrantsError, pymysql.MySQLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_credentials(args.credentials, accounts)
    for service, account in accounts.items():
        tables = privileges_of(service)
        written = sorted(t for t, p in tables.items() if p & WRITES)
        print(
            f"{service}: user {account.user}@{account.host}, reads {len(tables)} tables, "
            f"writes {', '.join(written) or 'none'}"
        )
    print(f"wrote each service's DATABASE_URL to {args.credentials} (mode 0600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__: Sequence[str] = [
    "GRANTS",
    "SERVICES",
    "GrantsError",
    "ServiceAccount",
    "account_host",
    "drop_users",
    "markdown_table",
    "provision",
    "read_passwords",
    "service_url",
    "user_names",
    "write_credentials",
]
