"""Multi-row INSERTs on MariaDB/MySQL through PyMySQL as SQL text rendered here: the CSV
batch rows (`svc_gateway.batches.sql_rows`), the webhook sender's fanned-out deliveries and
recorded attempts and the audit rows of state changes (`insert_rows`), and the gateway's
group commit (`row_values`, `svc_gateway.store`). The driver's own escaping of every value
of every row (type dispatch, one call per value) cost more than the rest of those INSERTs.

Strings are quoted for the connection's mode: backslash escapes unless the server's sql_mode
has NO_BACKSLASH_ESCAPES (`quoting`), through a `str.translate` table kept as a list over
ASCII, which indexes faster than `str.maketrans`'s dict. Integers are rendered with `int()`,
times as the engine's PyMySQL datetime literal; nothing else is accepted. Elsewhere (SQLite)
`insert_rows` hands the rows to SQLAlchemy's executemany."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pymysql.constants.SERVER_STATUS import (  # type: ignore[import-untyped]
    SERVER_STATUS_NO_BACKSLASH_ESCAPES,
)
from sqlalchemy import Connection, Table, insert

from withdrawal_shared.db.engine import escape_datetime


def _table(escapes: dict[str, str]) -> list[str]:
    """A `str.translate` table as a list over ASCII (characters past it are left as they
    are): a list indexes faster than `str.maketrans`'s dict, as PyMySQL's own table does."""
    table = [chr(code) for code in range(128)]
    for char, escaped in escapes.items():
        table[ord(char)] = escaped
    return table


BACKSLASH_ESCAPES = _table(
    {
        "\0": "\\0",
        "\n": "\\n",
        "\r": "\\r",
        "\x1a": "\\Z",
        "'": "\\'",
        '"': '\\"',
        "\\": "\\\\",
    }
)
QUOTES_ONLY = _table({"'": "''"})
"""The table for a connection whose server's sql_mode has NO_BACKSLASH_ESCAPES."""
STATEMENT_BYTES = 1 << 20
"""Rendered rows per statement at most about this many characters (PyMySQL's own limit)."""


def quoting(dbapi_connection: Any) -> list[str]:
    """The quoting table for a PyMySQL connection, by its server's current sql_mode."""
    no_backslash = dbapi_connection.server_status & SERVER_STATUS_NO_BACKSLASH_ESCAPES
    return QUOTES_ONLY if no_backslash else BACKSLASH_ESCAPES


def quote(text: str, table: list[str]) -> str:
    """`text` as a quoted SQL string literal (`table`: from `quoting`)."""
    return "'" + text.translate(table) + "'"


def _literal(value: Any, table: list[str]) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.translate(table) + "'"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, dt.datetime):
        return escape_datetime(value)
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def row_values(row: Mapping[str, Any], columns: Sequence[str], table: list[str]) -> str:
    """`row`'s values of `columns`, in that order, as one parenthesised SQL row
    (`table`: from `quoting`)."""
    return "(" + ",".join(_literal(row[name], table) for name in columns) + ")"


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` (dicts with the same keys) into `table`, in the caller's transaction."""
    if not rows:
        return
    if conn.dialect.driver != "pymysql":
        conn.execute(insert(table), list(rows))
        return
    table_quoting = quoting(conn.connection.dbapi_connection)
    columns = list(rows[0])
    for name in columns:  # names come from this package's code; checked against the table
        if name not in table.c:
            raise ValueError(f"{table.name} has no column {name!r}")
    head = f"INSERT INTO {table.name} ({','.join(columns)}) VALUES "  # noqa: S608 - checked names
    cursor = conn.connection.cursor()
    try:
        values: list[str] = []
        size = 0
        for row in rows:
            rendered = row_values(row, columns, table_quoting)
            if values and size + len(rendered) > STATEMENT_BYTES:
                cursor.execute(head + ",".join(values))
                values, size = [], 0
            values.append(rendered)
            size += len(rendered) + 1
        cursor.execute(head + ",".join(values))
    finally:
        cursor.close()
