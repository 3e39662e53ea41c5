"""DATABASE_SESSION_NICE on the real MariaDB on this host
(`withdrawal_shared.db.session_nice`): a session's server thread runs at the nice of the
thread that opened it while the session lasts, and at 0 again once it is closed."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import TypeVar

import pymysql
import pytest
from sqlalchemy import text

from tests.support.databases import (
    MARIADB_HOST,
    MARIADB_PASSWORD,
    MARIADB_PORT,
    MARIADB_USER,
    mariadb_database,
)
from withdrawal_shared.db import session_nice
from withdrawal_shared.db.engine import make_engine
from withdrawal_shared.db.session_nice import SessionNice

T = TypeVar("T")


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with mariadb_database(migrate=False) as database_url:
        yield database_url


def _connect() -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(
        host=MARIADB_HOST, port=MARIADB_PORT, user=MARIADB_USER, password=MARIADB_PASSWORD
    )


def _server_thread(connection: object) -> int:
    with connection.cursor() as cursor:  # type: ignore[attr-defined]
        cursor.execute(session_nice.SERVER_THREAD_QUERY)
        (thread_id,) = cursor.fetchone()
    assert session_nice.is_local_server_thread(thread_id)
    return int(thread_id)


def _in_thread_at_nice(nice: int, work: Callable[[], T]) -> T:
    """`work()` on a new thread whose nice is `nice` (on Linux a thread's nice is its own)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
            result.append(work())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def test_a_session_runs_at_its_openers_nice_and_at_zero_once_closed(url: str) -> None:
    engine = make_engine(url, pool_size=1, session_nice=True)
    try:

        def open_session() -> tuple[int, int]:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
                thread_id = _server_thread(connection.connection.dbapi_connection)
                return thread_id, os.getpriority(os.PRIO_PROCESS, thread_id)

        thread_id, nice_while_open = _in_thread_at_nice(7, open_session)
        assert nice_while_open == 7
        # Back in the pool, the session is still open and still niced.
        assert os.getpriority(os.PRIO_PROCESS, thread_id) == 7
    finally:
        engine.dispose()  # closes the session: its thread goes back to MariaDB's cache
    if session_nice.is_local_server_thread(thread_id):
        assert os.getpriority(os.PRIO_PROCESS, thread_id) == 0


def test_a_session_on_a_niced_server_thread_gets_its_openers_nice(url: str) -> None:
    """A server thread another session left niced (MariaDB reuses them) is set back to the
    opener's nice, here 0."""
    connection = _connect()
    try:
        thread_id = _server_thread(connection)
        os.setpriority(os.PRIO_PROCESS, thread_id, 9)
        record = SimpleNamespace(info={})
        nicer = SessionNice()
        nicer.on_connect(connection, record)
        assert nicer.off_reason is None
        assert os.getpriority(os.PRIO_PROCESS, thread_id) == os.getpriority(os.PRIO_PROCESS, 0)
        assert record.info == {"server_thread": thread_id}
        os.setpriority(os.PRIO_PROCESS, thread_id, 9)
        nicer.on_close(connection, record)
        assert os.getpriority(os.PRIO_PROCESS, thread_id) == 0
        assert record.info == {}
    finally:
        connection.close()


def test_a_server_elsewhere_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the session's thread is not a database server's process on this host (a remote
    server whose thread id names some local thread, or none), nothing is reniced, and the
    engine's hook stops asking."""
    connection = _connect()
    try:
        thread_id = _server_thread(connection)
        os.setpriority(os.PRIO_PROCESS, thread_id, 3)
        monkeypatch.setattr(session_nice, "server_process_name", lambda _thread_id: "python")
        record = SimpleNamespace(info={})
        nicer = SessionNice()
        _in_thread_at_nice(6, lambda: nicer.on_connect(connection, record))
        assert nicer.off_reason == "the server does not run on this host"
        assert os.getpriority(os.PRIO_PROCESS, thread_id) == 3
        assert record.info == {}
    finally:
        os.setpriority(os.PRIO_PROCESS, thread_id, 0)
        connection.close()


def test_idle_threads_left_niced_are_reset_and_sessions_are_not(url: str) -> None:
    """A session killed niced leaves its thread in MariaDB's thread cache at nice 10;
    `reset_idle_threads` (the harness at stop) gives it 0 back, and leaves a niced thread that
    serves a session as it is. (Other tests may open sessions meanwhile and be given the
    cached thread: such an attempt is tried again.)"""
    live = _connect()
    admin = _connect()
    serving = _server_thread(live)
    os.setpriority(os.PRIO_PROCESS, serving, 10)
    try:
        for _attempt in range(5):
            killed = _connect()  # stands for a niced service's session, its process killed
            left = _server_thread(killed)
            os.setpriority(os.PRIO_PROCESS, left, 10)
            killed.close()  # no hook runs: the server keeps the thread, still at nice 10
            assert os.path.exists(f"/proc/{left}"), "the server did not keep the thread"
            with admin.cursor() as cursor:
                reset = session_nice.reset_idle_threads(cursor)
                cursor.execute(session_nice.SESSION_THREADS_QUERY)
                in_session = {tid for (tid,) in cursor.fetchall()}
            if left in in_session:  # another session was given the thread meanwhile
                continue
            assert reset >= 1
            assert os.getpriority(os.PRIO_PROCESS, left) == 0
            assert os.getpriority(os.PRIO_PROCESS, serving) == 10
            return
        pytest.fail("every attempt's thread was taken by another session")
    finally:
        os.setpriority(os.PRIO_PROCESS, serving, 0)
        live.close()
        admin.close()
