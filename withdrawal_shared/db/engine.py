"""Engines and sessions for MySQL/MariaDB (PyMySQL) and the zero-setup SQLite file.

TLS to MySQL/MariaDB comes from a `DatabaseTls` (the DATABASE_TLS_* settings): see
`withdrawal_shared.store_tls`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pymysql.constants import CLIENT  # type: ignore[import-untyped]
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from withdrawal_shared.db.session_nice import SessionNice
from withdrawal_shared.store_tls import DatabaseTls, check_database_url


def make_engine(
    url: str,
    *,
    pool_size: int = 16,
    tls: DatabaseTls | None = None,
    multi_statements: bool = False,
    session_nice: bool = False,
) -> Engine:
    """An engine tuned per backend: pooled PyMySQL, or SQLite in WAL mode with a busy timeout.

    With `tls`, every PyMySQL connection is TLS, the server's certificate and host name
    verified (SettingsError for a URL it cannot apply to, such as SQLite's).

    `multi_statements` lets a PyMySQL connection send several statements in one query (the
    client flag MULTI_STATEMENTS): only for an engine of its own whose every statement is
    built from fixed SQL and escaped values (`sql_text`'s literals or the driver's), the
    gateway's group commit (`svc_gateway.store`), never for one that runs other code's
    queries.

    `session_nice` (DATABASE_SESSION_NICE) runs each MariaDB session's server thread at the
    nice of the thread that opened it, when the server runs on this host
    (`withdrawal_shared.db.session_nice`)."""
    parsed = make_url(url)
    connect_args: dict[str, Any] = {}
    if tls is not None:
        check_database_url(url)
        connect_args["ssl"] = tls.ssl_context()
    if multi_statements and parsed.get_driver_name() == "pymysql":
        connect_args["client_flag"] = CLIENT.MULTI_STATEMENTS
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own transaction handling is off; SQLAlchemy's "begin" event
            # below emits BEGIN IMMEDIATE (the SQLAlchemy documentation's recipe).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(conn: Any) -> None:
            # Take the write lock at BEGIN so read-then-write transactions cannot deadlock.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
    )
    if parsed.get_driver_name() == "pymysql":

        @event.listens_for(engine, "connect")
        def _pymysql_encoders(dbapi_connection: Any, _record: Any) -> None:
            encoders = getattr(dbapi_connection, "encoders", None)
            if isinstance(encoders, dict):
                encoders[dt.datetime] = escape_datetime

        if session_nice:
            SessionNice().install(engine)
    return engine


def escape_datetime(value: dt.datetime, mapping: object = None) -> str:
    """PyMySQL's datetime literal, the same text five times faster: a batch insert of
    withdrawals escapes three timestamps per row, and PyMySQL's `str.format` of each field
    took as long as all the row's strings together. Like PyMySQL, it writes an aware
    datetime's wall-clock fields and drops the zone (ours are naive UTC anyway)."""
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return f"'{value.isoformat(' ')}'"


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
