"""Alembic environment: migrations run against the URL set by `migrate.alembic_config`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from withdrawal_shared.db.engine import make_engine
from withdrawal_shared.db.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "set sqlalchemy.url (use withdrawal_shared.db.migrate)"

engine: Engine = make_engine(url, pool_size=1, tls=config.attributes.get("database_tls"))
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
