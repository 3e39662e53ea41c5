"""Engines and sessions for MySQL/MariaDB (PyMySQL) and the zero-setup SQLite file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 16) -> Engine:
    """An engine tuned per backend: pooled PyMySQL, or SQLite in WAL mode with a busy timeout."""
    parsed = make_url(url)
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
    )
    if parsed.get_driver_name() == "pymysql":

        @event.listens_for(engine, "connect")
        def _pymysql_encoders(dbapi_connection: Any, _record: Any) -> None:
            encoders = getattr(dbapi_connection, "encoders", None)
            if isinstance(encoders, dict):
                encoders[dt.datetime] = escape_datetime

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
