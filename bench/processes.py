"""Finding the processes whose CPU the benchmarks report."""

from __future__ import annotations

import contextlib
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

MARIADB_COMMANDS = frozenset({"mariadbd", "mysqld"})


def pids_by_name(comm: str) -> list[int]:
    """The pids of the running processes whose command name is `comm`, in pid order."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == comm:
                pids.append(int(entry.name))
    return sorted(pids)


def mariadb_pid(database_url: str) -> int | None:
    """The pid of the MariaDB server that `database_url` reaches, read from the pid file the
    server names (`@@pid_file`), so that a second server on the machine is never measured
    instead. When that file cannot be read here, the first `mariadbd` running on this machine
    (None if there is none); None for a URL that is not MySQL's (SQLite)."""
    if not database_url.startswith("mysql"):
        return None
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            pid_file = connection.execute(text("SELECT @@pid_file")).scalar_one()
        pid = int(Path(str(pid_file)).read_text().split()[0])
        if Path(f"/proc/{pid}/comm").read_text().strip() in MARIADB_COMMANDS:
            return pid
    except (SQLAlchemyError, OSError, ValueError, IndexError):
        pass
    finally:
        engine.dispose()
    found = pids_by_name("mariadbd")
    return found[0] if found else None
