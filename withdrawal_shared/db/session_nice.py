"""A MariaDB session's server thread at the CPU priority of the service that opened it.

The services off the API's request path run niced (`<SERVICE>_NICE`, set by the dev stack)
so that, on cores they share with the gateway, an API request is served first. The database
does their work too, and MariaDB runs every session's statements at its own priority: on a
host where the database shares the cores with the services, the batch services' big
statements take the CPU from the gateway's small ones. MariaDB serves each session on a
thread of its own (`thread_handling=one-thread-per-connection`, its default) and names that
thread in `information_schema.PROCESSLIST.TID`.

With DATABASE_SESSION_NICE on, every new connection gives its server thread the nice of the
thread that opened it, and a closed connection gives it back nice 0 (MariaDB keeps the thread
for a later session; the thread of a session whose service was killed keeps its nice until a
session of a service with this setting on is given it, or `reset_idle_threads` runs, as the
harness does when it stops). This is done only when the server
runs on this host (the thread's process is `mariadbd` or `mysqld`) and this process may
change its priority; otherwise it is turned off for the engine and said once in the log.
Nothing changes for a remote database.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pymysql  # type: ignore[import-untyped]
from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

SERVER_PROCESS_NAMES = frozenset({"mariadbd", "mysqld"})
"""A session thread whose process has another name is not the database server's."""

SERVER_THREAD_QUERY = "SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()"
"""The operating system's id of the server thread behind this connection (MariaDB 10.5 and
later)."""
SESSION_THREADS_QUERY = "SELECT TID FROM information_schema.PROCESSLIST WHERE TID IS NOT NULL"
"""Every session's server thread (all users' with the PROCESS privilege)."""
_THREAD_INFO_KEY = "server_thread"
_TGID = re.compile(r"^Tgid:\s*(\d+)$", re.MULTILINE)


def _process_of(thread_id: int) -> int | None:
    """The id of the process on this host that thread `thread_id` belongs to, or None."""
    try:
        tgid = _TGID.search(Path(f"/proc/{thread_id}/status").read_text())
    except OSError:
        return None
    return int(tgid.group(1)) if tgid else None


def server_process_name(thread_id: int) -> str | None:
    """The name of the process on this host that thread `thread_id` belongs to; None when
    there is no such thread here."""
    process = _process_of(thread_id)
    if process is None:
        return None
    try:
        return Path(f"/proc/{process}/comm").read_text().strip()
    except OSError:
        return None


def is_local_server_thread(thread_id: int) -> bool:
    """Whether `thread_id` is a thread of a database server process on this host."""
    return server_process_name(thread_id) in SERVER_PROCESS_NAMES


def reset_idle_threads(cursor: Any) -> int:
    """Give nice 0 back to the local server's threads that serve no session now and still
    carry a nice: threads the server keeps for later sessions after a niced service was
    killed with its sessions open. `cursor` is on a connection to that server whose user
    sees every session (the PROCESS privilege). Returns how many were reset; 0 for a server
    not on this host.

    A thread the server hands to a new session between the read of the sessions and the
    reset runs that session at nice 0 until it closes: only its priority, never its work,
    is affected."""
    cursor.execute(SERVER_THREAD_QUERY)
    row = cursor.fetchone()
    own = row[0] if row else None
    if not isinstance(own, int) or not is_local_server_thread(own):
        return 0
    server = _process_of(own)
    if server is None:
        return 0
    cursor.execute(SESSION_THREADS_QUERY)
    in_session = {int(tid) for (tid,) in cursor.fetchall()}
    reset = 0
    for task in Path(f"/proc/{server}/task").iterdir():
        thread_id = int(task.name)
        if thread_id in in_session:
            continue
        try:
            if os.getpriority(os.PRIO_PROCESS, thread_id) <= 0:
                continue
            os.setpriority(os.PRIO_PROCESS, thread_id, 0)
        except OSError:  # gone, or not ours to change
            continue
        reset += 1
    return reset


class SessionNice:
    """The pool events that keep each session's server thread at its opener's nice."""

    def __init__(self) -> None:
        self.off_reason: str | None = None

    def _turn_off(self, reason: str) -> None:
        if self.off_reason is None:
            self.off_reason = reason
            log.info("database sessions keep the server's priority: %s", reason)

    def on_connect(self, dbapi_connection: Any, record: Any) -> None:
        if self.off_reason is not None:
            return
        nice = os.getpriority(os.PRIO_PROCESS, 0)  # this thread's, on Linux
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(SERVER_THREAD_QUERY)
                row = cursor.fetchone()
            dbapi_connection.rollback()
        except pymysql.MySQLError as exc:  # a server without the column: MySQL
            self._turn_off(f"the server does not name its session threads ({type(exc).__name__})")
            return
        thread_id = row[0] if row else None
        if not isinstance(thread_id, int):
            self._turn_off("the server does not name its session threads")
            return
        if not is_local_server_thread(thread_id):
            self._turn_off("the server does not run on this host")
            return
        try:
            os.setpriority(os.PRIO_PROCESS, thread_id, nice)
        except PermissionError:
            self._turn_off("this process may not change the server's threads (CAP_SYS_NICE)")
            return
        except ProcessLookupError:  # the session ended already
            return
        record.info[_THREAD_INFO_KEY] = thread_id

    def on_close(self, _dbapi_connection: Any, record: Any) -> None:
        thread_id = record.info.pop(_THREAD_INFO_KEY, None)
        if thread_id is None:
            return
        try:
            if is_local_server_thread(thread_id):
                os.setpriority(os.PRIO_PROCESS, thread_id, 0)
        except OSError:  # gone, or raising a priority is not allowed here
            pass

    def install(self, engine: Engine) -> None:
        event.listen(engine, "connect", self.on_connect)
        event.listen(engine, "close", self.on_close)
