"""A digest of everything the gateway can change: every row of every table of the test
database, and every Redis key under the test's prefix."""

from __future__ import annotations

import hashlib
from typing import Any

import redis
from sqlalchemy import Engine, MetaData, select

UNTRACKED_COLUMNS = {"api_keys": frozenset({"last_use_time"})}
"""Columns a valid credential's use writes by design whatever the request: a key's last use
(recorded at most once a minute per key and gateway process, for every authenticated call)."""


def database_rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ordered by primary key (by all columns without one), leaving
    out only the UNTRACKED_COLUMNS."""
    metadata = MetaData()
    metadata.reflect(engine)
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for name, table in sorted(metadata.tables.items()):
            skip = UNTRACKED_COLUMNS.get(name, frozenset())
            columns = [c for c in table.columns if c.name not in skip]
            order = list(table.primary_key.columns) or list(table.columns)
            rows[name] = [tuple(r) for r in conn.execute(select(*columns).order_by(*order))]
    return rows


def redis_keys(client: redis.Redis, prefix: str) -> dict[bytes, tuple[Any, ...]]:
    """Each key under `prefix`: its type and value (a stream: its length and last id)."""
    found: dict[bytes, tuple[Any, ...]] = {}
    for key in sorted(client.scan_iter(match=prefix + "*", count=1000)):
        kind = client.type(key).decode()
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = sorted(client.hgetall(key).items())
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(client.smembers(key))
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            info = client.xinfo_stream(key)
            value = (info["length"], info["last-generated-id"])
        else:
            value = None
        found[key] = (kind, value)
    return found


def digest(state: object) -> str:
    return hashlib.sha256(repr(state).encode()).hexdigest()


def snapshot(engine: Engine, client: redis.Redis, prefix: str) -> dict[str, Any]:
    return {"database": database_rows(engine), "redis": redis_keys(client, prefix)}
