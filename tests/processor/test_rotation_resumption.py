"""The rotation driver (`svc_processor.rotation`) on MariaDB, anvil and a real hot signer that
creates its keys: every step run again after it was done (as after a crash before or after its
compare-and-set) does nothing twice; a failed treasury step or a signer refusal makes the
rotation FAILED; and applying `hot_wallet.rotate` refuses what it cannot start. The treasury
executor is not running here: a Safe step's operation is moved to EXECUTED or FAILED in the
database, as the executor records it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from devstack.anvil import AnvilProcess, rpc
from svc_processor.payouts import CallDraft, Kind, Payouts
from svc_processor.rotation import RotationDriver
from svc_processor.signer_client import SignerClient
from tests.support.databases import mariadb_database
from tests.support.pipeline import signer_wallets
from tests.support.requests import fresh_address
from tests.support.signers import keystore_signer
from withdrawal_shared.chain.fees import Fees
from withdrawal_shared.db.changes import AppliedChange, ChangeNotApplicable
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    HotWallet,
    HotWalletRotation,
    PayoutTransaction,
    SafeTransaction,
    SafeTreasury,
    SignerKey,
    SystemAddress,
)
from withdrawal_shared.db.rotation_changes import RotationState, Step, apply_rotation, validate
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.errors import ApiError
from withdrawal_shared.ids import new_ulid

pytestmark = pytest.mark.chain

CHAIN = "polygon"


@dataclass
class World:
    sessions: sessionmaker[Session]
    w3: Web3
    driver: RotationDriver
    signer: SignerClient
    old: str
    safe: str

    def rotation(self, rotation_id: str) -> HotWalletRotation:
        with self.sessions() as session:
            row = session.get(HotWalletRotation, rotation_id)
        assert row is not None
        return row

    def step(self, rotation_id: str) -> HotWalletRotation:
        """One pass of the driver's current step."""
        self.driver._step(self.rotation(rotation_id))
        return self.rotation(rotation_id)

    def set(self, rotation_id: str, **values: object) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(HotWalletRotation)
                .where(HotWalletRotation.id == rotation_id)
                .values(**values)
            )

    def settle_operation(self, rotation_id: str, step: Step, state: str) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(SafeTransaction)
                .where(
                    SafeTransaction.rotation_id == rotation_id,
                    SafeTransaction.rotation_step == step.value,
                )
                .values(state=state, failure_reason="as the executor recorded it")
            )

    def count(self, model: type, *where: object) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    def add_rotation(self, *, old: str | None = None, step: Step = Step.CREATE_KEY) -> str:
        rotation_id = new_ulid()
        now = utcnow()
        with self.sessions.begin() as session:
            session.add(
                HotWalletRotation(
                    id=rotation_id,
                    change_id=new_ulid(),
                    chain=CHAIN,
                    old_wallet=old or self.old,
                    new_wallet=None,
                    gas_wei="1000",
                    step=step.value,
                    state=RotationState.RUNNING.value,
                    failure_reason="",
                    create_time=now,
                    update_time=now,
                )
            )
        return rotation_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(mariadb_database())
        anvil = stack.enter_context(AnvilProcess())
        w3 = anvil.web3()
        target = stack.enter_context(
            keystore_signer(database, tmp_path_factory.mktemp("hot"), owns_keys=True)
        )
        old = signer_wallets(target)[0].lower()
        engine = make_engine(database)
        stack.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        safe = fresh_address()
        with sessions.begin() as session:
            session.add(SafeTreasury(chain=CHAIN, address=safe, threshold=2, create_time=utcnow()))
            session.add(HotWallet(address=old, chain=CHAIN, next_nonce=0, enabled=True))
        rpc(w3, "anvil_setBalance", [Web3.to_checksum_address(old), hex(10**18)])
        signer = SignerClient(target, 30.0)
        stack.callback(signer.close)
        yield World(sessions, w3, RotationDriver(sessions, w3, signer, CHAIN), signer, old, safe)


def test_every_step_run_again_does_nothing_twice(world: World) -> None:
    rotation = world.add_rotation()
    # CREATE_KEY, again after a crash before its compare-and-set: the same key.
    first = world.step(rotation)
    assert first.step == Step.REGISTER and first.new_wallet is not None
    new = first.new_wallet
    world.set(rotation, step=Step.CREATE_KEY.value, new_wallet=None)
    assert world.step(rotation).new_wallet == new
    assert world.count(SignerKey, SignerKey.request_id == rotation) == 1
    # REGISTER twice: one wallet row (PENDING), one system address, two Safe operations.
    assert world.step(rotation).step == Step.ENABLE_OPERATOR
    world.set(rotation, step=Step.REGISTER.value)
    assert world.step(rotation).step == Step.ENABLE_OPERATOR
    with world.sessions() as session:
        wallet = session.get(HotWallet, new)
        assert wallet is not None and (wallet.state, wallet.enabled) == ("PENDING", True)
    assert world.count(SystemAddress, SystemAddress.address == new) == 1
    assert world.count(SafeTransaction, SafeTransaction.rotation_id == rotation) == 2
    # The Safe steps wait for their operations.
    assert world.step(rotation).step == Step.ENABLE_OPERATOR
    world.settle_operation(rotation, Step.ENABLE_OPERATOR, "EXECUTED")
    assert world.step(rotation).step == Step.FUND_GAS
    assert world.step(rotation).step == Step.FUND_GAS
    world.settle_operation(rotation, Step.FUND_GAS, "EXECUTED")
    assert world.step(rotation).step == Step.SWITCH
    # SWITCH twice: the new wallet ACTIVE, the old one DRAINING.
    assert world.step(rotation).step == Step.DRAIN
    world.set(rotation, step=Step.SWITCH.value)
    assert world.step(rotation).step == Step.DRAIN
    with world.sessions() as session:
        states = {w.address: w.state for w in session.scalars(select(HotWallet))}
    assert (states[new], states[world.old]) == ("ACTIVE", "DRAINING")
    # DRAIN waits for the old wallet's payout in flight.
    payout_id = new_ulid()
    now = utcnow()
    with world.sessions.begin() as session:
        session.add(
            PayoutTransaction(
                id=payout_id,
                chain=CHAIN,
                wallet=world.old,
                nonce=0,
                to_address=world.safe,
                raw_tx=b"",
                tx_hash=f"reserved:{payout_id}",
                gas_limit=90_000,
                max_fee_per_gas=1,
                max_priority_fee_per_gas=1,
                state="BROADCAST",
                create_time=now,
                update_time=now,
            )
        )
        session.execute(
            update(HotWallet).where(HotWallet.address == world.old).values(next_nonce=0)
        )
    assert world.step(rotation).step == Step.DRAIN
    with world.sessions.begin() as session:
        session.execute(
            update(PayoutTransaction)
            .where(PayoutTransaction.id == payout_id)
            .values(state="CONFIRMED")
        )
    assert world.step(rotation).step == Step.REMOVE_OPERATOR
    # REMOVE_OPERATOR records its operation once, and waits for it.
    assert world.step(rotation).step == Step.REMOVE_OPERATOR
    assert world.step(rotation).step == Step.REMOVE_OPERATOR
    assert world.count(SafeTransaction, SafeTransaction.rotation_id == rotation) == 3
    world.settle_operation(rotation, Step.REMOVE_OPERATOR, "EXECUTED")
    assert world.step(rotation).step == Step.SWEEP
    # SWEEP: its nonce taken (then a crash), then signed, stored and sent; then settled.
    world.driver._take_sweep_nonce(world.rotation(rotation))
    world.driver._take_sweep_nonce(world.rotation(rotation))  # kept, not taken twice
    taken = world.rotation(rotation).sweep_nonce
    assert taken == 0
    swept = world.step(rotation)
    assert swept.sweep_tx_hash is not None and swept.sweep_nonce == taken
    again = world.step(rotation)
    assert again.step == Step.RETIRE and again.sweep_tx_hash == swept.sweep_tx_hash
    with world.sessions() as session:
        old_row = session.get(HotWallet, world.old)
        assert old_row is not None and old_row.next_nonce == 1
    old_address = Web3.to_checksum_address(world.old)
    assert world.w3.eth.get_balance(old_address) < 10**15
    safe_balance = world.w3.eth.get_balance(Web3.to_checksum_address(world.safe))
    assert safe_balance == int(again.sweep_value_wei or "0") > 0
    # RETIRE twice: the key retired in the signer, the wallet RETIRED and disabled.
    done = world.step(rotation)
    assert (done.step, done.state) == (Step.DONE, RotationState.DONE)
    world.set(rotation, step=Step.RETIRE.value, state=RotationState.RUNNING.value)
    assert world.step(rotation).state == RotationState.DONE
    with world.sessions() as session:
        key = session.get(SignerKey, world.old)
        wallet = session.get(HotWallet, world.old)
    assert key is not None and key.state == "RETIRED"
    assert wallet is not None and (wallet.state, wallet.enabled) == ("RETIRED", False)


def test_a_failed_step_or_a_refusal_fails_the_rotation(world: World) -> None:
    failing = world.add_rotation(step=Step.ENABLE_OPERATOR)
    now = utcnow()
    with world.sessions.begin() as session:
        session.add(
            SafeTransaction(
                id=new_ulid(),
                chain=CHAIN,
                purpose="TREASURY",
                change_id=None,
                kind="treasury.set_vault_operator",
                payload="{}",
                safe_nonce=None,
                state="FAILED",
                failure_reason="cannot be built",
                create_time=now,
                update_time=now,
                rotation_id=failing,
                rotation_step=Step.ENABLE_OPERATOR.value,
            )
        )
    world.driver.run_once()
    row = world.rotation(failing)
    assert row.state == RotationState.FAILED and "ENABLE_OPERATOR failed" in row.failure_reason
    refused = world.add_rotation(old=fresh_address(), step=Step.RETIRE)
    world.driver.run_once()
    row = world.rotation(refused)
    assert row.state == RotationState.FAILED and "UNKNOWN_WALLET" in row.failure_reason


def test_applying_a_rotation_refuses_what_it_cannot_start(world: World) -> None:
    def apply(payload: dict[str, object]) -> None:
        with world.sessions.begin() as session:
            apply_rotation(session, AppliedChange(new_ulid(), "hot_wallet.rotate", payload))

    payload: dict[str, object] = {"chain": CHAIN, "wallet": fresh_address(), "gas_wei": "1"}
    with pytest.raises(ChangeNotApplicable, match="not an ACTIVE hot wallet"):
        apply(payload)  # unknown wallet
    with pytest.raises(ChangeNotApplicable, match="not an ACTIVE hot wallet"):
        apply({**payload, "wallet": world.old})  # RETIRED by the first test
    with pytest.raises(ChangeNotApplicable, match="no treasury Safe"):
        apply({**payload, "chain": "nochain"})
    for bad in (
        {**payload, "gas_wei": "0"},
        {**payload, "wallet": "0x12"},
        {**payload, "extra": 1},
        {"chain": CHAIN},
    ):
        with pytest.raises(ApiError):
            validate(bad)
    assert validate(payload) == f"chains/{CHAIN}/wallets/{str(payload['wallet']).lower()}"


def test_a_wallet_no_longer_active_takes_no_nonce(world: World) -> None:
    """A reservation re-reads its wallet's state under the row lock the switch takes: a wallet
    picked while ACTIVE but DRAINING (or RETIRED) by then reserves nothing."""
    payouts = Payouts(world.sessions, world.w3, world.signer, CHAIN)
    for state in ("DRAINING", "RETIRED"):
        with world.sessions.begin() as session:
            session.execute(
                update(HotWallet).where(HotWallet.address == world.old).values(state=state)
            )
            before = session.get(HotWallet, world.old)
            assert before is not None
            nonce = before.next_nonce
        draft = CallDraft(
            kind=Kind.SAFE_EXEC,
            wallet=world.old,
            to_address=world.safe,
            calldata=b"\x01",
            gas_limit=100_000,
            fees=Fees(max_fee_per_gas=2, max_priority_fee_per_gas=1),
        )
        assert payouts.reserve_call(draft, lambda session, payout_id: True) is None
        with world.sessions() as session:
            after = session.get(HotWallet, world.old)
            assert after is not None and after.next_nonce == nonce
        assert world.count(PayoutTransaction, PayoutTransaction.wallet == world.old) == 1
