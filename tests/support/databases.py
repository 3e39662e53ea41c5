"""Databases of the suite's own: a fresh MariaDB database (created and dropped here, never the
shared `test` one) or a SQLite file, both brought up by the real migrations."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pymysql

from withdrawal_shared.db.migrate import upgrade

MARIADB_HOST = os.environ.get("TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("TEST_MARIADB_PORT", "3306"))
MARIADB_USER = os.environ.get("TEST_MARIADB_USER", "root")
MARIADB_PASSWORD = os.environ.get("TEST_MARIADB_PASSWORD", "")


def _admin() -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(
        host=MARIADB_HOST, port=MARIADB_PORT, user=MARIADB_USER, password=MARIADB_PASSWORD
    )


@contextlib.contextmanager
def mariadb_database(migrate: bool = True) -> Iterator[str]:
    name = f"aws_test_{secrets.token_hex(4)}"
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = (
            f"mysql+pymysql://{MARIADB_USER}:{MARIADB_PASSWORD}@{MARIADB_HOST}:"
            f"{MARIADB_PORT}/{name}?charset=utf8mb4"
        )
        if migrate:
            upgrade(url)
        yield url
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@contextlib.contextmanager
def sqlite_database(directory: Path, migrate: bool = True) -> Iterator[str]:
    url = f"sqlite:///{directory / f'withdrawals-{secrets.token_hex(4)}.sqlite3'}"
    if migrate:
        upgrade(url)
    yield url


@contextlib.contextmanager
def database(backend: str, directory: Path) -> Iterator[str]:
    if backend == "mariadb":
        with mariadb_database() as url:
            yield url
    elif backend == "sqlite":
        with sqlite_database(directory) as url:
            yield url
    else:
        raise ValueError(backend)
