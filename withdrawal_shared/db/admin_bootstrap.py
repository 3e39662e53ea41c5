"""Create the first admin operator: `python -m withdrawal_shared.db.admin_bootstrap OPERATOR_ID`.

Every later operator, and every change of roles, is a change one admin proposes and another
confirms (four eyes); the first admin cannot need a second's confirmation, so this command
creates it directly. It refuses when an enabled admin already exists, so it cannot be used to
bypass four eyes later. It prints the new operator's credential once (stdout; never stored,
never logged) and records the creation in the admin audit trail (operator `bootstrap`).
The database is `DATABASE_URL` (or `--database-url`), migrated first
(`python -m withdrawal_shared.db.migrate`), reached over TLS as DATABASE_TLS_* say.

`make up` (devstack) creates its development admins through `create_admin` directly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy.orm import Session

from withdrawal_shared.db.admin_audit import SUCCEEDED, append_admin_audit
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Operator
from withdrawal_shared.db.operators import (
    OPERATOR_ID,
    Role,
    admin_exists,
    create_operator,
    issue_credential,
    operator_as_dict,
    operator_name,
)
from withdrawal_shared.settings import (
    DEFAULT_DATABASE_URL,
    SettingsError,
    database_tls_env,
    env_str,
)
from withdrawal_shared.store_tls import DatabaseTls

BOOTSTRAP_ACTOR = "bootstrap"
"""The audit trail's operator id for operators created outside the admin API."""


class AdminBootstrapError(RuntimeError):
    """The admin cannot be created (an admin exists, the id is taken or invalid)."""


def create_admin(
    session: Session,
    operator_id: str,
    display_name: str = "",
    roles: Sequence[Role] = (Role.ADMIN,),
) -> str:
    """Create an admin operator (holding `roles`, admin among them) and a credential for it,
    audited; returns the credential.

    No four-eyes check: only for the first admin (`bootstrap_first_admin`) and the dev stack.
    """
    if Role.ADMIN not in roles:
        raise AdminBootstrapError("an admin created by the bootstrap must hold the admin role")
    if not OPERATOR_ID.match(operator_id):
        raise AdminBootstrapError(
            f"{operator_id!r} is not an operator id: 2-63 lowercase letters, digits and '-', "
            "starting with a letter"
        )
    if session.get(Operator, operator_id) is not None:
        raise AdminBootstrapError(f"operator {operator_id!r} already exists")
    row = create_operator(session, operator_id, list(roles), display_name)
    session.flush()
    credential, token = issue_credential(
        session, operator_id, created_by=BOOTSTRAP_ACTOR, description="created by bootstrap"
    )
    append_admin_audit(
        session,
        operator_id=BOOTSTRAP_ACTOR,
        action="BootstrapAdmin",
        target=operator_name(operator_id),
        outcome=SUCCEEDED,
        after={**operator_as_dict(row), "credential": credential.prefix},
    )
    return token


def bootstrap_first_admin(
    database_url: str,
    operator_id: str,
    display_name: str = "",
    *,
    tls: DatabaseTls | None = None,
) -> str:
    """Create the first admin; AdminBootstrapError when an enabled admin exists."""
    engine = make_engine(database_url, pool_size=1, tls=tls)
    try:
        with make_sessionmaker(engine).begin() as session:
            if admin_exists(session):
                raise AdminBootstrapError(
                    "an admin operator already exists: further operators are created by a "
                    "change one admin proposes and another confirms (awctl / AdminService)"
                )
            return create_admin(session, operator_id, display_name)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m withdrawal_shared.db.admin_bootstrap",
        description="Create the first admin operator and print its credential once.",
    )
    parser.add_argument("operator_id", help="e.g. alice: 2-63 of a-z, 0-9 and '-'")
    parser.add_argument("--display-name", default="")
    parser.add_argument("--database-url", default=env_str("DATABASE_URL", DEFAULT_DATABASE_URL))
    args = parser.parse_args(argv)
    try:
        tls = database_tls_env(args.database_url)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        token = bootstrap_first_admin(
            args.database_url, args.operator_id, args.display_name, tls=tls
        )
    except AdminBootstrapError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(token)
    print(
        f"created admin operators/{args.operator_id}; the line above is its credential, "
        "shown only now: keep it in a secret store",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
