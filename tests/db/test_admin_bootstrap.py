"""The first admin: `python -m withdrawal_shared.db.admin_bootstrap` creates it once, audited,
and refuses when an admin exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from withdrawal_shared.db.admin_audit import verify_admin_audit_chain
from withdrawal_shared.db.admin_bootstrap import main
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.migrate import upgrade
from withdrawal_shared.db.operators import Role, operator_for_credential


def test_first_admin_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(url)
    assert main(["root-admin", "--database-url", url]) == 0
    credential = capsys.readouterr().out.strip()
    assert credential.startswith("awo_")
    engine = make_engine(url, pool_size=1)
    with make_sessionmaker(engine)() as session:
        identity = operator_for_credential(session, credential)
        assert identity is not None and identity.roles == {Role.ADMIN}
        assert verify_admin_audit_chain(session)
    engine.dispose()
    assert main(["second-admin", "--database-url", url]) == 1
    assert "already exists" in capsys.readouterr().err
