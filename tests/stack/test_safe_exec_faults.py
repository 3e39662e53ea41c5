"""A Safe payout's execution under chain faults, on real components (`tests.support.treasury`:
MariaDB, Redis, anvil with the Safe v1.4.1 contracts, the gateway, processor with its treasury
executor, monitor, a hot wallets' signer and the owners' signers). USDC's Safe threshold is
100 USDC here, so a 150 USDC withdrawal is paid by a Safe transaction calling the vault's
`payout`, executed by a hot wallet's `safe_exec` payout row. Anvil mines only when a test
mines (`tests.support.chain_faults`), so each fault lands exactly where it is aimed.

- Replaced: the hot wallet's `execTransaction` is dropped from the pool and the replacer
  re-signs it at the same (wallet, nonce) with higher fees; whether the replacement or the
  original bytes mine, the Safe executes once and the withdrawal is paid once.
- Reorganised: the mined execution is taken away by `anvil_reorg`; the monitor sends the same
  signed bytes again, they mine again, and the withdrawal is paid once, with the Safe
  transaction never signed at another Safe nonce.
- A failing inner call: the vault is paused between the execution's gas estimate and its
  block. With `safeTxGas` and `gasPrice` 0 the Safe reverts the whole `execTransaction`
  (GS013) rather than emit `ExecutionFailure`, so its nonce is not used: the Safe payout keeps
  its Safe nonce and its owners' signatures, waits while the vault is paused, and once it is
  unpaused is executed from another hot-wallet nonce; paid once, no `ExecutionFailure` ever.

Every test judges the outcome from the chain (the recipient's balance, the vault's paid
bitmap and its `PayoutExecuted` events, exactly one `ExecutionSuccess` for the hash, the
Safe's nonce up by exactly one) and from the database (one Safe transaction EXECUTED at the
nonce it took first, the owners' signers' ledger holding signatures at that nonce only).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.anvil import drop_transaction, mine, reorg
from svc_processor import treasury as treasury_module
from svc_processor.replacer import raised
from tests.support.chain_faults import manual_blocks, mine_until, send_as
from tests.support.pipeline import wait_until
from tests.support.requests import create_request, fresh_address
from tests.support.treasury import CHAIN, TreasuryStack, safe_events, treasury_stack
from tests.support.withdrawals import payouts_paying
from withdrawal_shared.approvals import core
from withdrawal_shared.chain.payout import (
    decode_payout_events,
    encode_pause,
    encode_unpause,
    is_paid,
    payout_vault_contract,
)
from withdrawal_shared.chain.safe import safe_nonce
from withdrawal_shared.chain.safe_tx import EXECUTION_FAILURE_TOPIC, EXECUTION_SUCCESS_TOPIC
from withdrawal_shared.chain.types import HexStr
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    PayoutTransaction,
    SafeOwnerSignature,
    SafeTransaction,
    Token,
    Withdrawal,
    WithdrawalAudit,
)
from withdrawal_shared.states import PayoutState, State

pytestmark = pytest.mark.chain

S = withdrawal_pb2
USDC = 10**6
AMOUNT = 150 * USDC
STUCK_AFTER_BLOCKS = 5  # the processor's default (tests.support.pipeline keeps it)


@pytest.fixture(scope="module")
def stack(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TreasuryStack]:
    with (
        treasury_stack(redis_url, module_redis_prefix, tmp_path_factory) as running,
        manual_blocks(running.pipeline.w3),
    ):
        yield running


@pytest.fixture(scope="module")
def sessions(stack: TreasuryStack) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(stack.pipeline.database_url, pool_size=2)
    made = make_sessionmaker(engine)
    with made.begin() as session:
        session.execute(
            update(Token).where(Token.chain == CHAIN).values(safe_threshold_base_units=100 * USDC)
        )
    yield made
    engine.dispose()


@dataclass(frozen=True)
class Large:
    """A withdrawal paid by the Safe, and the chain as it was before it."""

    name: str
    id: str
    recipient: str
    start_block: int
    safe_nonce: int


def _approved(stack: TreasuryStack, sessions: sessionmaker[Session]) -> Large:
    p = stack.pipeline
    recipient = fresh_address()
    start = Large("", "", recipient, p.w3.eth.block_number, safe_nonce(p.w3, stack.safe))
    name = p.gateway.stub.CreateWithdrawal(
        create_request(amount=str(AMOUNT // USDC), recipient=recipient),
        metadata=p.partner.metadata,
    ).name
    withdrawal_id = name.split("/", 1)[1]
    p.wait_for_state(name, S.STATE_PENDING_APPROVAL, timeout=20)
    core.approve(sessions, withdrawal_id, "alice")
    assert core.approve(sessions, withdrawal_id, "bob").state == State.QUEUED
    return Large(name, withdrawal_id, recipient, start.start_block, start.safe_nonce)


def _exec_rows(sessions: sessionmaker[Session], withdrawal_id: str) -> list[PayoutTransaction]:
    """Every payout row paying the withdrawal, oldest first."""
    with sessions() as session:
        return payouts_paying(session, withdrawal_id)


def _safe_tx(sessions: sessionmaker[Session], withdrawal_id: str) -> SafeTransaction:
    with sessions() as session:
        rows = session.scalars(
            select(SafeTransaction).where(SafeTransaction.withdrawal_id == withdrawal_id)
        ).all()
    assert len(rows) == 1, rows  # one Safe transaction for the withdrawal, ever
    return rows[0]


def _row_in(
    sessions: sessionmaker[Session], withdrawal_id: str, count: int, state: PayoutState
) -> list[PayoutTransaction] | None:
    """The withdrawal's payout rows once there are `count` and the last is in `state`."""
    rows = _exec_rows(sessions, withdrawal_id)
    return rows if len(rows) == count and rows[-1].state == state else None


def _wait_rows(
    stack: TreasuryStack,
    sessions: sessionmaker[Session],
    large: Large,
    count: int,
    state: PayoutState,
    *,
    mining: bool = False,
) -> list[PayoutTransaction]:
    def describe() -> str:
        return f"never {count} rows, the last {state}: {_exec_rows(sessions, large.id)}"

    def probe() -> list[PayoutTransaction] | None:
        return _row_in(sessions, large.id, count, state)

    if mining:
        return mine_until(stack.pipeline.w3, probe, 60, describe)
    return wait_until(probe, 60, describe)


def _completed(stack: TreasuryStack, sessions: sessionmaker[Session], large: Large) -> None:
    """Mine until the withdrawal is COMPLETED and its Safe transaction EXECUTED."""
    p = stack.pipeline

    def done() -> bool | None:
        if p.get(large.name).state != S.STATE_COMPLETED:
            return None
        return True if _safe_tx(sessions, large.id).state == "EXECUTED" else None

    mine_until(
        p.w3,
        done,
        90,
        lambda: f"never paid: {p.get(large.name)} {_safe_tx(sessions, large.id).state}",
    )


def _assert_paid_once(
    stack: TreasuryStack, sessions: sessionmaker[Session], large: Large
) -> tuple[SafeTransaction, list[PayoutTransaction]]:
    """Paid once, by one execution of one Safe transaction at the nonce it took first; the
    Safe transaction and the withdrawal's payout rows."""
    p = stack.pipeline
    w3 = p.w3
    vault = p.boot.payout_vault
    assert vault is not None
    op = _safe_tx(sessions, large.id)
    assert (op.purpose, op.state, op.safe_nonce) == ("PAYOUT", "EXECUTED", large.safe_nonce)
    assert op.safe_tx_hash is not None
    digest = bytes.fromhex(op.safe_tx_hash[2:])
    with sessions() as session:
        row = session.get(Withdrawal, large.id)
        assert row is not None and row.state == State.COMPLETED and row.payout_number is not None
        number = row.payout_number
        ledger = session.scalars(
            select(SafeOwnerSignature).where(SafeOwnerSignature.withdrawal_ids.contains(large.id))
        ).all()
    # From the chain.
    assert p.token_balance(large.recipient) == AMOUNT
    assert is_paid(w3, vault, number)
    assert safe_nonce(w3, stack.safe) == large.safe_nonce + 1
    assert safe_events(stack, large.start_block, EXECUTION_SUCCESS_TOPIC) == [digest]
    assert safe_events(stack, large.start_block, EXECUTION_FAILURE_TOPIC) == []
    vault_logs = w3.eth.get_logs(
        {"address": vault, "fromBlock": large.start_block, "toBlock": "latest"}
    )
    executed = decode_payout_events(vault_logs, vault).executed
    assert [(e.first_number, e.count, e.paid, e.total_amount) for e in executed] == [
        (number, 1, 1, AMOUNT)
    ]
    # The owners signed this one transaction, at this one Safe nonce, and nothing else for it.
    assert len(ledger) == 2
    assert {(s.safe_nonce, s.safe_tx_hash) for s in ledger} == {(large.safe_nonce, op.safe_tx_hash)}
    rows = _exec_rows(sessions, large.id)
    assert {r.kind for r in rows} == {"safe_exec"}
    confirmed = [r for r in rows if r.state == PayoutState.CONFIRMED]
    assert len(confirmed) == 1, rows
    assert op.tx_hash == confirmed[0].tx_hash == row.tx_hash
    receipt = w3.eth.get_transaction_receipt(HexStr(confirmed[0].tx_hash))
    assert receipt["status"] == 1 and receipt["to"].lower() == stack.safe.lower()
    return op, rows


def _assert_replacement(old: PayoutTransaction, new: PayoutTransaction) -> None:
    assert (new.wallet, new.nonce, new.replaces_id) == (old.wallet, old.nonce, old.id)
    assert (new.kind, new.to_address, new.calldata) == ("safe_exec", old.to_address, old.calldata)
    assert new.tx_hash != old.tx_hash
    assert new.max_fee_per_gas >= raised(old.max_fee_per_gas, 10)
    assert new.max_priority_fee_per_gas >= raised(old.max_priority_fee_per_gas, 10)


def _stuck_and_replaced(
    stack: TreasuryStack, sessions: sessionmaker[Session], large: Large
) -> tuple[PayoutTransaction, PayoutTransaction]:
    """The execution broadcast, dropped by the node, blocks mined without it: replaced."""
    w3 = stack.pipeline.w3
    [first] = _wait_rows(stack, sessions, large, 1, PayoutState.BROADCAST)
    assert first.kind == "safe_exec" and first.to_address == stack.safe.lower()
    drop_transaction(w3, HexStr(first.tx_hash))
    mine(w3, STUCK_AFTER_BLOCKS)  # empty blocks: the replacer sees it stuck
    old, new = _wait_rows(stack, sessions, large, 2, PayoutState.BROADCAST)
    assert old.id == first.id and old.state == PayoutState.REPLACED
    _assert_replacement(old, new)
    assert safe_nonce(w3, stack.safe) == large.safe_nonce  # nothing executed yet
    return old, new


def test_a_replaced_execution_pays_once_when_the_replacement_mines(
    stack: TreasuryStack, sessions: sessionmaker[Session]
) -> None:
    large = _approved(stack, sessions)
    old, new = _stuck_and_replaced(stack, sessions, large)
    _completed(stack, sessions, large)

    op, rows = _assert_paid_once(stack, sessions, large)
    assert [(r.id, r.state) for r in rows] == [
        (old.id, PayoutState.DROPPED),
        (new.id, PayoutState.CONFIRMED),
    ]
    assert op.tx_hash == new.tx_hash


def test_a_replaced_execution_pays_once_when_the_original_bytes_mine(
    stack: TreasuryStack, sessions: sessionmaker[Session]
) -> None:
    w3 = stack.pipeline.w3
    large = _approved(stack, sessions)
    old, new = _stuck_and_replaced(stack, sessions, large)
    # The replacement never mines; the original signed bytes do.
    drop_transaction(w3, HexStr(new.tx_hash))
    assert Web3.to_hex(w3.eth.send_raw_transaction(old.raw_tx)) == old.tx_hash
    _completed(stack, sessions, large)

    op, rows = _assert_paid_once(stack, sessions, large)
    assert [(r.id, r.state) for r in rows] == [
        (old.id, PayoutState.CONFIRMED),
        (new.id, PayoutState.DROPPED),
    ]
    assert op.tx_hash == old.tx_hash


def test_a_reorganised_execution_is_sent_again_and_pays_once(
    stack: TreasuryStack, sessions: sessionmaker[Session]
) -> None:
    p = stack.pipeline
    w3 = p.w3
    large = _approved(stack, sessions)
    [sent] = _wait_rows(stack, sessions, large, 1, PayoutState.BROADCAST)
    mine(w3, 1)
    [mined] = _wait_rows(stack, sessions, large, 1, PayoutState.MINED)
    assert mined.block_number is not None
    p.wait_for_state(large.name, S.STATE_CONFIRMING, timeout=20)
    assert p.token_balance(large.recipient) == AMOUNT  # paid in the block about to vanish
    assert safe_nonce(w3, stack.safe) == large.safe_nonce + 1

    reorg(w3, 1)  # the block holding the execution is replaced by an empty one
    assert p.token_balance(large.recipient) == 0
    assert safe_nonce(w3, stack.safe) == large.safe_nonce
    # The monitor sees it, sends the same signed bytes again (anvil mines nothing meanwhile).
    [back] = _wait_rows(stack, sessions, large, 1, PayoutState.BROADCAST)
    assert (back.id, back.tx_hash, back.block_number) == (sent.id, sent.tx_hash, None)
    assert back.broadcast_count > mined.broadcast_count
    p.wait_for_state(large.name, S.STATE_BROADCAST, timeout=20)
    assert _safe_tx(sessions, large.id).state == "EXECUTING"
    _completed(stack, sessions, large)

    op, rows = _assert_paid_once(stack, sessions, large)
    assert {(r.wallet, r.nonce) for r in rows} == {(sent.wallet, sent.nonce)}
    assert op.tx_hash == sent.tx_hash
    with sessions() as session:
        reorged = session.scalars(
            select(WithdrawalAudit).where(
                WithdrawalAudit.withdrawal_id == large.id, WithdrawalAudit.reorged.is_(True)
            )
        ).all()
    assert [(a.from_state, a.to_state) for a in reorged] == [("CONFIRMING", "BROADCAST")]


def test_a_failing_inner_call_reverts_keeps_the_safe_nonce_and_pays_once_later(
    stack: TreasuryStack, sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = stack.pipeline
    w3 = p.w3
    vault = p.boot.payout_vault
    assert vault is not None
    monkeypatch.setattr(treasury_module, "RETRY_SECONDS", 0.5)
    large = _approved(stack, sessions)
    [first] = _wait_rows(stack, sessions, large, 1, PayoutState.BROADCAST)
    # Between its gas estimate and its block the vault is paused (by its owner, the Safe).
    drop_transaction(w3, HexStr(first.tx_hash))
    send_as(w3, stack.safe, vault, encode_pause())
    mine(w3, 1)
    assert payout_vault_contract(w3, vault).functions.paused().call()
    assert Web3.to_hex(w3.eth.send_raw_transaction(first.raw_tx)) == first.tx_hash
    mine(w3, 1)
    receipt = w3.eth.get_transaction_receipt(HexStr(first.tx_hash))
    assert receipt["status"] == 0 and receipt["logs"] == []

    # At the confirmation depth: REVERTED, the withdrawal ON_HOLD; the Safe payout keeps its
    # nonce and is tried again, and while the vault is paused it is not sent (it would revert).
    def waiting() -> SafeTransaction | None:
        op = _safe_tx(sessions, large.id)
        return op if "would revert" in op.failure_reason else None

    op = mine_until(w3, waiting, 60, lambda: f"never retried: {_safe_tx(sessions, large.id)}")
    assert (op.state, op.safe_nonce) == ("SIGNED", large.safe_nonce)
    [reverted] = _exec_rows(sessions, large.id)
    assert (reverted.id, reverted.state, reverted.revert_reason) == (
        first.id,
        PayoutState.REVERTED,
        "GS013",
    )
    held = p.get(large.name)
    assert (held.state, held.state_reason) == (S.STATE_ON_HOLD, "PAYOUT_REVERTED")
    assert safe_nonce(w3, stack.safe) == large.safe_nonce
    assert p.token_balance(large.recipient) == 0
    assert safe_events(stack, large.start_block, EXECUTION_FAILURE_TOPIC) == []

    send_as(w3, stack.safe, vault, encode_unpause())
    _completed(stack, sessions, large)

    op, rows = _assert_paid_once(stack, sessions, large)
    assert [r.state for r in rows] == [PayoutState.REVERTED, PayoutState.CONFIRMED]
    again = rows[1]
    # Sent again from another hot-wallet nonce, with the same owners' signatures.
    assert (again.wallet, again.nonce) != (first.wallet, first.nonce)
    assert again.calldata == first.calldata and again.to_address == first.to_address
    assert op.tx_hash == again.tx_hash
    assert not payout_vault_contract(w3, vault).functions.paused().call()
