"""Run the Alembic migrations programmatically: `python -m withdrawal_shared.db.migrate URL`."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from withdrawal_shared.settings import DEFAULT_DATABASE_URL, env_str

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (the schema exists only through this)."""
    command.upgrade(alembic_config(url), revision)


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else env_str("DATABASE_URL", DEFAULT_DATABASE_URL)
    upgrade(url)
    print("database is at the newest migration")


if __name__ == "__main__":
    main()
