"""Which database failures are transient (`withdrawal_shared.db.transient`), from errors the
real MariaDB and SQLite raise, and what a client is told about them
(`withdrawal_shared.unexpected`): UNAVAILABLE with Retry-After, or INTERNAL for the rest."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, exc

from tests.support.databases import mariadb_database
from withdrawal_shared.db.engine import make_engine
from withdrawal_shared.db.transient import describe, transient_cause
from withdrawal_shared.errors import Code
from withdrawal_shared.unexpected import answer_for


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with mariadb_database(migrate=False) as database_url:
        engine = create_engine(database_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
            conn.exec_driver_sql("INSERT INTO t VALUES (1, 0)")
        engine.dispose()
        yield database_url


def _raised(engine: Engine, statement: str) -> BaseException:
    with pytest.raises(exc.DBAPIError) as caught, engine.begin() as conn:
        conn.exec_driver_sql(statement)
    return caught.value


def test_a_lock_wait_timeout_is_transient_and_described_without_the_statement(url: str) -> None:
    holder = create_engine(url)
    waiter = make_engine(url, pool_size=1)
    try:
        with holder.begin() as conn:
            conn.exec_driver_sql("SELECT v FROM t WHERE id = 1 FOR UPDATE")
            with waiter.begin() as other:
                other.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
            error = _raised(waiter, "UPDATE t SET v = 42 WHERE id = 1")
        cause = transient_cause(error)
        assert cause is not None
        assert describe(cause).startswith("OperationalError 1205: Lock wait timeout exceeded")
        assert "UPDATE" not in describe(cause) and "42" not in describe(cause)
    finally:
        holder.dispose()
        waiter.dispose()


def test_a_refused_connection_and_an_exhausted_pool_are_transient(url: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    refused = make_engine(f"mysql+pymysql://root:@127.0.0.1:{closed_port}/x?charset=utf8mb4")
    with pytest.raises(exc.OperationalError) as caught:
        refused.connect()
    cause = transient_cause(caught.value)
    assert cause is not None and describe(cause).startswith("OperationalError 2003")

    small = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        with small.connect(), pytest.raises(exc.TimeoutError) as waited:
            small.connect()
        assert transient_cause(waited.value) is waited.value
    finally:
        small.dispose()


def test_errors_of_the_request_or_the_code_are_not_transient(url: str) -> None:
    engine = create_engine(url)
    try:
        assert transient_cause(_raised(engine, "SELEC 1")) is None  # 1064: a syntax error
        assert transient_cause(_raised(engine, "INSERT INTO t VALUES (1, 1)")) is None  # 1062
        assert transient_cause(_raised(engine, "SELECT nope FROM t")) is None  # 1054
    finally:
        engine.dispose()
    assert transient_cause(ValueError("a bug")) is None


def test_a_locked_sqlite_database_is_transient(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locked.sqlite3'}"
    holder = create_engine(url)
    waiter = create_engine(url, connect_args={"timeout": 0.1})
    try:
        with holder.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            conn.commit()
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            error = _raised(waiter, "INSERT INTO t VALUES (1)")
            conn.rollback()
        assert transient_cause(error) is not None
    finally:
        holder.dispose()
        waiter.dispose()


def test_the_answer_is_unavailable_with_retry_after_or_internal(url: str) -> None:
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    try:
        with engine.connect(), pytest.raises(exc.TimeoutError) as waited:
            engine.connect()
    finally:
        engine.dispose()
    wrapped = RuntimeError("the batch failed")
    wrapped.__cause__ = waited.value  # found through the exceptions it was raised from
    for transient in (waited.value, wrapped):
        answer = answer_for(transient, "0af7651916cd43dd8448eb211c80319c")
        assert (answer.code, answer.reason) == (Code.UNAVAILABLE, "UNAVAILABLE")
        assert answer.code.http_status == 503
        assert answer.headers == {"retry-after": "1"}
        assert answer.metadata == {
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "retry_after": "1",
        }
        assert "QueuePool" not in answer.message
    answer = answer_for(KeyError("x"), "0af7651916cd43dd8448eb211c80319c")
    assert (answer.code, answer.reason) == (Code.INTERNAL, "INTERNAL")
