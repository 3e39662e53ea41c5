"""The chain follower on a real anvil and a real database (MariaDB and SQLite): mined ->
confirming -> completed, reverted -> on hold for a retry at the depth, reorganised ->
broadcast again -> completed once."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy.orm.attributes import set_committed_value
from web3 import Web3

import svc_monitor.mining as mining_module
from devstack.anvil import drop_transaction, mine, reorg, set_automine
from devstack.stablecoin import pause
from svc_monitor.follower import ChainFollower, MonitorError
from tests.monitor.builders import ChainSetup, audit_trail, pay, payout_row, withdrawals
from withdrawal_shared.chain.contracts import balance_of, stablecoin_contract
from withdrawal_shared.db.models import Chain
from withdrawal_shared.db.transitions import Moved, RowAsRead, verify_audit_chain
from withdrawal_shared.holds import HoldReason
from withdrawal_shared.states import PayoutState, State

pytestmark = pytest.mark.chain

AMOUNT = 12_500_000  # 12.5 USDC


def required_confirmations(setup: ChainSetup) -> int:
    with setup.sessions() as session:
        return session.get_one(Chain, "polygon").confirmations


def test_success_completes_at_the_confirmation_depth(
    setup: ChainSetup, follower: ChainFollower
) -> None:
    required = required_confirmations(setup)
    assert required >= 3
    payout = pay(setup, [AMOUNT])
    receipt = setup.w3.eth.wait_for_transaction_receipt(payout.tx_hash, timeout=30)  # type: ignore[arg-type]
    assert receipt["status"] == 1

    report = follower.poll_once()
    assert report.mined == 1
    [w] = withdrawals(setup, payout)
    assert (w.state, w.state_reason, w.confirmations) == ("CONFIRMING", "MINED", 1)
    row = payout_row(setup, payout)
    expected_fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert row.state == PayoutState.MINED
    assert row.block_number == receipt["blockNumber"]
    assert row.block_hash == receipt["blockHash"].to_0x_hex()
    assert (row.gas_used, row.effective_gas_price) == (
        receipt["gasUsed"],
        receipt["effectiveGasPrice"],
    )
    assert row.fee_wei == expected_fee > 0

    mine(setup.w3, required - 2)
    report = follower.poll_once()
    assert report.moved == []
    [w] = withdrawals(setup, payout)
    assert (w.state, w.confirmations) == ("CONFIRMING", required - 1)
    # The message beside the count states the same count (no new version: no audit row).
    assert w.state_message.endswith(f"; {required - 1} of {required} confirmations.")

    mine(setup.w3, 1)
    report = follower.poll_once()
    assert report.confirmed == 1
    [w] = withdrawals(setup, payout)
    assert (w.state, w.state_reason) == ("COMPLETED", "CONFIRMED")
    assert w.confirmations == required
    assert w.fee_wei == expected_fee
    assert w.end_time is not None
    assert payout_row(setup, payout).state == PayoutState.CONFIRMED
    assert balance_of(setup.w3, setup.token, payout.recipient) == AMOUNT

    # Idempotent: more blocks and more polls change nothing.
    mine(setup.w3, 3)
    assert follower.poll_once().moved == []
    trail = audit_trail(setup, w.id)
    assert [a.to_state for a in trail][-2:] == ["CONFIRMING", "COMPLETED"]
    assert all(a.actor == "monitor" for a in trail[-2:])
    with setup.sessions() as session:
        assert verify_audit_chain(session, w.id)


def test_a_transaction_already_deep_enough_completes_in_one_poll(
    setup: ChainSetup, follower: ChainFollower
) -> None:
    payout = pay(setup, [AMOUNT])
    mine(setup.w3, required_confirmations(setup) + 2)
    report = follower.poll_once()
    assert [m.to_state for m in report.moved] == [State.CONFIRMING, State.COMPLETED]
    [w] = withdrawals(setup, payout)
    assert w.state == "COMPLETED"


def test_reverted_transfer_waits_for_the_depth_then_holds_for_a_retry_and_pays_nothing(
    setup: ChainSetup, follower: ChainFollower
) -> None:
    required = required_confirmations(setup)
    pause(setup.w3, setup.token, setup.owner.private_key)
    payout = pay(setup, [AMOUNT], gas=100_000)  # explicit gas: mined, and reverts on chain
    receipt = setup.w3.eth.wait_for_transaction_receipt(payout.tx_hash, timeout=30)  # type: ignore[arg-type]
    assert receipt["status"] == 0

    # First receipt: the payout row records the revert; the withdrawal is not moved yet (a
    # reorganisation could still mine the same bytes again, successfully).
    report = follower.poll_once()
    assert (report.reverted, report.reverted_final, report.moved) == (1, 0, [])
    [w] = withdrawals(setup, payout)
    assert w.state == "BROADCAST"
    row = payout_row(setup, payout)
    assert (row.state, row.receipt_status) == (PayoutState.MINED, 0)
    assert row.revert_reason == "EnforcedPause()"
    assert row.block_number == receipt["blockNumber"]

    mine(setup.w3, required - 2)
    assert follower.poll_once().moved == []
    assert withdrawals(setup, payout)[0].state == "BROADCAST"

    mine(setup.w3, 1)  # the depth: REVERTED, and the withdrawal waits for its retry
    report = follower.poll_once()
    assert report.reverted_final == 1
    [w] = withdrawals(setup, payout)
    assert (w.state, w.state_reason) == ("ON_HOLD", "PAYOUT_REVERTED")
    assert "EnforcedPause()" in w.state_message
    assert w.state_message.startswith(HoldReason.PAYOUT_REVERTED.meaning)
    assert w.payout_tx_id is None
    assert w.fee_wei == receipt["gasUsed"] * receipt["effectiveGasPrice"]
    row = payout_row(setup, payout)
    assert (row.state, row.receipt_status) == (PayoutState.REVERTED, 0)
    assert balance_of(setup.w3, setup.token, payout.recipient) == 0

    mine(setup.w3, 10)
    assert follower.poll_once().moved == []
    assert [a.to_state for a in audit_trail(setup, w.id)].count("ON_HOLD") == 1
    with setup.sessions() as session:
        assert verify_audit_chain(session, w.id)


def test_a_reverted_transfer_reorged_away_mines_again_and_completes_once(
    setup: ChainSetup, follower: ChainFollower
) -> None:
    """The revert was in a block a reorganisation took away; the same bytes mine again after
    the token is unpaused, and succeed: the withdrawal completes, paid once, never held."""
    required = required_confirmations(setup)
    pause(setup.w3, setup.token, setup.owner.private_key)
    payout = pay(setup, [AMOUNT], gas=100_000)
    setup.w3.eth.wait_for_transaction_receipt(payout.tx_hash, timeout=30)  # type: ignore[arg-type]
    assert follower.poll_once().reverted == 1

    set_automine(setup.w3, False)
    reorg(setup.w3, 1)  # the reverting block is gone
    assert follower.poll_once().reorged == 1  # ... and the same bytes are sent again
    row = payout_row(setup, payout)
    assert (row.state, row.receipt_status, row.revert_reason) == (PayoutState.BROADCAST, None, "")
    [w] = withdrawals(setup, payout)
    assert w.state == "BROADCAST"

    # The token is unpaused in the next block, ahead of the payout (a higher tip).
    stablecoin_contract(setup.w3, setup.token).functions.unpause().transact(
        {
            "from": setup.owner.address,
            "maxPriorityFeePerGas": Web3.to_wei(500, "gwei"),
            "maxFeePerGas": Web3.to_wei(2000, "gwei"),
        }
    )
    mine(setup.w3, 1)
    follower.poll_once()
    assert payout_row(setup, payout).receipt_status == 1
    mine(setup.w3, required)
    follower.poll_once()
    [w] = withdrawals(setup, payout)
    assert w.state == "COMPLETED"
    assert balance_of(setup.w3, setup.token, payout.recipient) == AMOUNT
    assert "ON_HOLD" not in [a.to_state for a in audit_trail(setup, w.id)]


def test_reorg_while_confirming_goes_back_to_broadcast_and_completes_once(
    setup: ChainSetup, follower: ChainFollower
) -> None:
    required = required_confirmations(setup)
    payout = pay(setup, [AMOUNT])
    follower.poll_once()
    mine(setup.w3, 1)
    follower.poll_once()
    [w] = withdrawals(setup, payout)
    assert (w.state, w.confirmations) == ("CONFIRMING", 2)
    old_block = payout_row(setup, payout).block_number

    # Replace the transaction's block and the one above it: the transfer is gone.
    set_automine(setup.w3, False)
    reorg(setup.w3, 2)
    assert balance_of(setup.w3, setup.token, payout.recipient) == 0

    report = follower.poll_once()
    assert report.reorged == 1
    [w] = withdrawals(setup, payout)
    assert (w.state, w.state_reason, w.confirmations) == ("BROADCAST", "REORGED", 0)
    row = payout_row(setup, payout)
    assert row.state == PayoutState.BROADCAST
    assert (row.block_number, row.block_hash, row.fee_wei) == (None, None, None)
    assert row.broadcast_count == 2
    trail = audit_trail(setup, w.id)
    assert (trail[-1].from_state, trail[-1].to_state, trail[-1].reorged) == (
        "CONFIRMING",
        "BROADCAST",
        True,
    )
    # The same signed bytes are back in the mempool (automine is off: not mined yet).
    pending = setup.w3.eth.get_transaction(payout.tx_hash)  # type: ignore[arg-type]
    assert pending["blockNumber"] is None
    assert follower.poll_once().moved == []

    mine(setup.w3, 1)
    follower.poll_once()
    [w] = withdrawals(setup, payout)
    assert w.state == "CONFIRMING"
    assert payout_row(setup, payout).block_number not in (None, old_block)
    mine(setup.w3, required)
    follower.poll_once()
    [w] = withdrawals(setup, payout)
    assert w.state == "COMPLETED"
    assert balance_of(setup.w3, setup.token, payout.recipient) == AMOUNT  # not 2x
    states = [a.to_state for a in audit_trail(setup, w.id)]
    assert states.count("COMPLETED") == 1
    assert states[-4:] == ["CONFIRMING", "BROADCAST", "CONFIRMING", "COMPLETED"]
    with setup.sessions() as session:
        assert verify_audit_chain(session, w.id)


def test_reorg_with_automine_remines_the_same_bytes_at_once(
    setup: ChainSetup, follower: ChainFollower
) -> None:
    payout = pay(setup, [AMOUNT])
    follower.poll_once()
    reorg(setup.w3, 1)
    assert follower.poll_once().reorged == 1
    # Automine mined the re-sent bytes immediately: the next poll sees the new receipt.
    follower.poll_once()
    mine(setup.w3, required_confirmations(setup))
    follower.poll_once()
    [w] = withdrawals(setup, payout)
    assert w.state == "COMPLETED"
    assert balance_of(setup.w3, setup.token, payout.recipient) == AMOUNT


def test_no_receipt_stays_broadcast(setup: ChainSetup, follower: ChainFollower) -> None:
    set_automine(setup.w3, False)
    payout = pay(setup, [AMOUNT])  # sent, pending in the mempool
    report = follower.poll_once()
    assert (report.pending, report.moved) == (1, [])
    drop_transaction(setup.w3, payout.tx_hash)  # type: ignore[arg-type]
    report = follower.poll_once()
    assert (report.pending, report.moved) == (1, [])
    [w] = withdrawals(setup, payout)
    assert w.state == "BROADCAST"
    assert payout_row(setup, payout).state == PayoutState.BROADCAST

    never_sent = pay(setup, [AMOUNT], send=False)
    report = follower.poll_once()
    assert report.pending == 2
    [w] = withdrawals(setup, never_sent)
    assert w.state == "BROADCAST"


def test_withdrawals_sharing_a_payout_complete_together_with_exact_fee_shares(
    setup: ChainSetup, follower: ChainFollower
) -> None:
    payout = pay(setup, [1_000_000, 2_000_000, 3_000_000])
    mine(setup.w3, required_confirmations(setup))
    follower.poll_once()
    rows = withdrawals(setup, payout)
    assert [w.state for w in rows] == ["COMPLETED"] * 3
    fee = payout_row(setup, payout).fee_wei
    assert fee is not None
    shares = [w.fee_wei or 0 for w in rows]
    assert sum(shares) == fee
    assert shares[1] == shares[2] == fee // 3
    assert shares[0] == fee // 3 + fee % 3
    assert balance_of(setup.w3, setup.token, payout.recipient) == 6_000_000


def test_a_conflict_rolls_back_the_whole_payout_and_the_next_poll_retries(
    setup: ChainSetup, follower: ChainFollower, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone else moved a withdrawal between our read and our write: nothing of the poll's
    transaction is kept (the payout row stays BROADCAST) and the next poll settles it."""
    payout = pay(setup, [AMOUNT, AMOUNT])
    real_move_many = mining_module.move_many
    calls = 0

    def racing_move_many(session: Any, rows: Any, *args: Any, **kwargs: Any) -> list[Moved]:
        nonlocal calls
        calls += 1
        if calls == 1:
            # The second withdrawal of the payout was moved by someone else since it was
            # read: the version the compare-and-set expects is no longer the stored one.
            rows = list(rows)
            if isinstance(rows[1], RowAsRead):
                rows[1] = dataclasses.replace(rows[1], version=rows[1].version - 1)
            else:
                set_committed_value(rows[1], "version", rows[1].version - 1)
        return real_move_many(session, rows, *args, **kwargs)

    monkeypatch.setattr(mining_module, "move_many", racing_move_many)
    report = follower.poll_once()
    assert (report.conflicts, report.mined, report.moved) == (1, 0, [])
    assert payout_row(setup, payout).state == PayoutState.BROADCAST
    assert [w.state for w in withdrawals(setup, payout)] == ["BROADCAST", "BROADCAST"]

    report = follower.poll_once()
    assert report.mined == 1
    assert [w.state for w in withdrawals(setup, payout)] == ["CONFIRMING", "CONFIRMING"]
    assert len(report.moved) == 2


def test_an_unknown_chain_is_refused_with_what_to_do(setup: ChainSetup) -> None:
    follower = ChainFollower(setup.sessions, setup.w3, "nochain")
    with pytest.raises(MonitorError, match="set CHAIN"):
        follower.poll_once()
