"""Run the Alembic migrations programmatically: `python -m withdrawal_shared.db.migrate URL`.

The URL defaults to DATABASE_URL; DATABASE_TLS_* apply as in the services
(`withdrawal_shared.store_tls`)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from withdrawal_shared.settings import (
    DEFAULT_DATABASE_URL,
    SettingsError,
    database_tls_env,
    env_str,
)
from withdrawal_shared.store_tls import DatabaseTls

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str, tls: DatabaseTls | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["database_tls"] = tls
    return config


def upgrade(url: str, revision: str = "head", *, tls: DatabaseTls | None = None) -> None:
    """Bring the database at `url` to `revision` (the schema exists only through this),
    connecting over TLS with `tls`."""
    command.upgrade(alembic_config(url, tls), revision)


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else env_str("DATABASE_URL", DEFAULT_DATABASE_URL)
    try:
        tls = database_tls_env(url)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    upgrade(url, tls=tls)
    print("database is at the newest migration")


if __name__ == "__main__":
    main()
