"""Fixtures for the monitor tests: a real anvil (automine, chain id 137) reverted after each
test, the module's real database (MariaDB and SQLite, from tests/conftest.py), and a freshly
deployed test stablecoin registered as a token of the `polygon` chain."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from devstack.anvil import AnvilProcess, revert, set_automine, snapshot
from devstack.stablecoin import deploy_test_stablecoin, mint
from svc_monitor.follower import ChainFollower
from tests.monitor.builders import ChainSetup
from withdrawal_shared.chain.types import BaseUnits
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import PayoutTransaction, Token
from withdrawal_shared.states import PayoutState

pytestmark = pytest.mark.chain


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilProcess]:
    """An automining anvil shared by the monitor tests; stopped at the end of the session."""
    with AnvilProcess(quiet=True) as node:
        yield node


@pytest.fixture
def w3(anvil: AnvilProcess) -> Iterator[Web3]:
    """A Web3 on the anvil; the chain goes back to its prior state after the test."""
    web3 = anvil.web3()
    snap = snapshot(web3)
    yield web3
    set_automine(web3, True)
    assert revert(web3, snap), "evm_revert did not find the test's snapshot"


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions on the module's database. The chain is reverted after each test, so payout
    rows the test left in flight are marked DROPPED: the next test's follower ignores them."""
    maker = make_sessionmaker(engine)
    yield maker
    with maker.begin() as session:
        session.execute(
            update(PayoutTransaction)
            .where(
                PayoutTransaction.state.in_(
                    [PayoutState.SIGNED, PayoutState.BROADCAST, PayoutState.MINED]
                )
            )
            .values(state=PayoutState.DROPPED)
        )


@pytest.fixture
def setup(anvil: AnvilProcess, w3: Web3, sessions: sessionmaker[Session]) -> ChainSetup:
    """A new token (owner: account 0) with 1,000,000 units minted to the payer (account 1),
    registered in `tokens`, and a partner."""
    owner, payer = anvil.accounts[0], anvil.accounts[1]
    token = deploy_test_stablecoin(w3, owner.private_key)
    mint(w3, token, owner.private_key, payer.address, BaseUnits(1_000_000 * 10**6))
    suffix = secrets.token_hex(3)
    with sessions.begin() as session:
        ensure_partner(session, f"partner-{suffix}")
        row = Token(
            chain="polygon",
            symbol=f"T{suffix}".upper(),
            contract_address=token.lower(),
            decimals=6,
            max_amount_base_units=10**15,
            enabled=True,
        )
        session.add(row)
        session.flush()
        token_id = row.id
    return ChainSetup(
        w3=w3,
        sessions=sessions,
        owner=owner,
        payer=payer,
        token=token,
        token_id=token_id,
        partner_id=f"partner-{suffix}",
    )


@pytest.fixture
def follower(w3: Web3, sessions: sessionmaker[Session]) -> ChainFollower:
    return ChainFollower(sessions, w3, "polygon")
