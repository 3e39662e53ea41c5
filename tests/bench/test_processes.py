"""bench.processes: the MariaDB server a benchmark measures is the one its database is on."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bench.processes import mariadb_pid, pids_by_name
from tests.support.databases import mariadb_database


def test_the_pid_is_the_one_in_the_servers_own_pid_file() -> None:
    with mariadb_database(migrate=False) as url:
        engine = create_engine(url, poolclass=NullPool)
        with engine.connect() as connection:
            pid_file = connection.execute(text("SELECT @@pid_file")).scalar_one()
        engine.dispose()
        pid = mariadb_pid(url)
    assert pid is not None
    assert pid == int(Path(str(pid_file)).read_text().split()[0])
    assert Path(f"/proc/{pid}/comm").read_text().strip() in {"mariadbd", "mysqld"}


def test_no_mariadb_behind_sqlite(tmp_path: Path) -> None:
    assert mariadb_pid(f"sqlite:///{tmp_path / 'db.sqlite'}") is None


def test_pids_by_name_finds_this_process() -> None:
    comm = Path("/proc/self/comm").read_text().strip()
    found = pids_by_name(comm)
    assert os.getpid() in found
    assert found == sorted(found)
