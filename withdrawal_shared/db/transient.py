"""Which database failures the same request can get past: a lock held past the wait timeout,
a lost or refused connection, a server restarting, no pooled connection free in time.

The services answer these UNAVAILABLE (HTTP 503 with `Retry-After`) instead of INTERNAL
(`withdrawal_shared.unexpected`), so that a client, or the SDKs' automatic retry, sends the
same request again with the same idempotency key. Nothing else is called transient: an error
the code does not expect stays INTERNAL.
"""

from __future__ import annotations

import sqlite3

import pymysql  # type: ignore[import-untyped]
from sqlalchemy import exc as sa_exc

# MySQL/MariaDB error numbers after which the same statement can succeed unchanged.
TRANSIENT_MYSQL_ERRORS = frozenset(
    {
        1040,  # ER_CON_COUNT_ERROR: too many connections
        1053,  # ER_SERVER_SHUTDOWN
        1205,  # ER_LOCK_WAIT_TIMEOUT (also a metadata lock's)
        1213,  # ER_LOCK_DEADLOCK: InnoDB rolled the transaction back
        1927,  # ER_CONNECTION_KILLED (MariaDB)
        2002,  # CR_CONNECTION_ERROR
        2003,  # CR_CONN_HOST_ERROR: the server refused or did not answer the connection
        2006,  # CR_SERVER_GONE_ERROR
        2013,  # CR_SERVER_LOST
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8: an idle connection closed)
    }
)


def _driver_error_transient(exc: BaseException) -> bool:
    if isinstance(exc, pymysql.err.InterfaceError):  # the connection is closed
        return True
    if isinstance(exc, pymysql.err.OperationalError):
        return bool(exc.args) and exc.args[0] in TRANSIENT_MYSQL_ERRORS
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc)  # "database is locked": the busy timeout passed
    return False


def transient_cause(exc: BaseException) -> BaseException | None:
    """The transient database failure behind `exc` (itself, a driver error SQLAlchemy
    wrapped, or an exception it was raised from), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.TimeoutError):  # no pooled connection free in time
            return current
        if isinstance(current, sa_exc.DBAPIError):
            orig = current.orig
            if isinstance(orig, BaseException) and (
                current.connection_invalidated or _driver_error_transient(orig)
            ):
                return orig
        elif _driver_error_transient(current):
            return current
        current = current.__cause__ or current.__context__
    return None


def describe(cause: BaseException) -> str:
    """A log line's account of a transient failure: the driver's error number and message,
    never SQLAlchemy's text (which quotes the statement and its parameters)."""
    if isinstance(cause, pymysql.err.MySQLError) and len(cause.args) == 2:
        return f"{type(cause).__name__} {cause.args[0]}: {cause.args[1]}"
    return f"{type(cause).__name__}: {cause}"
