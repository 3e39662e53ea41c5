"""Rendering a withdrawal now and as it was at a version: the audit row's snapshot, never the
current row's changing fields; a row without a snapshot (written before they existed) shows
them empty; a CONFIRMING message states the confirmations rendered beside it."""

from __future__ import annotations

import datetime as dt

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.convert import as_of, to_proto
from svc_monitor.messages import confirming_message
from withdrawal_shared.db.audit import Snapshot
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.db.reference import ChainInfo, ReferenceData, TokenInfo

S = withdrawal_pb2
T0 = dt.datetime(2026, 1, 2, 3, 4, 5)
TX = "0x" + "cd" * 32
TOKEN = TokenInfo(1, "polygon", "USDC", "0x" + "00" * 20, 6, 10**12, True)
REFERENCE = ReferenceData(
    chains={"polygon": ChainInfo("polygon", 137, "POL", 18, 5, True)},
    tokens={("polygon", "USDC"): TOKEN},
    tokens_by_id={1: TOKEN},
    system_addresses=frozenset(),
)
MINED = f"Mined in block 9 (transaction {TX}); 1 of 5 confirmations."


def _current() -> Withdrawal:
    return Withdrawal(
        id="01" + "A" * 24,
        partner_id="p",
        client_reference="ref",
        chain="polygon",
        token_id=1,
        recipient="0x" + "11" * 20,
        amount=12_500_000,
        priority="STANDARD",
        state="COMPLETED",
        state_reason="CONFIRMED",
        state_message=f"Paid: transaction {TX} in block 9 has 5 confirmations.",
        tx_hash=TX,
        fee_wei=10**15,
        confirmations=5,
        version=7,
        create_time=T0,
        update_time=T0 + dt.timedelta(seconds=20),
        end_time=T0 + dt.timedelta(seconds=20),
    )


def _audit(version: int, to_state: str, message: str, snapshot: Snapshot | None) -> WithdrawalAudit:
    return WithdrawalAudit(
        withdrawal_id="01" + "A" * 24,
        version=version,
        from_state="",
        to_state=to_state,
        actor="t",
        reason=to_state,
        message=message,
        reorged=False,
        occur_time=T0 + dt.timedelta(seconds=version),
        prev_hash="",
        hash="",
        snapshot=None if snapshot is None else snapshot.encode(),
    )


def test_an_event_shows_its_versions_fields_and_the_rows_unchanging_ones() -> None:
    shown = as_of(_current(), _audit(6, "CONFIRMING", MINED, Snapshot(TX, None, 1)), REFERENCE)
    assert (shown.state, shown.version, shown.state_message) == (S.STATE_CONFIRMING, 6, MINED)
    assert (shown.transaction_hash, shown.confirmations, shown.fee) == (TX, 1, "")
    assert shown.update_time.ToDatetime() == T0 + dt.timedelta(seconds=6)
    assert not shown.HasField("end_time")
    assert (shown.amount, shown.client_reference, shown.token) == ("12.5", "ref", "USDC")
    assert shown.create_time.ToDatetime() == T0


def test_the_last_event_of_a_finished_withdrawal_is_the_withdrawal() -> None:
    current = _current()
    audit = _audit(7, "COMPLETED", current.state_message, Snapshot(TX, 10**15, 5))
    audit.reason, audit.occur_time = "CONFIRMED", current.update_time
    assert as_of(current, audit, REFERENCE) == to_proto(current, REFERENCE)


def test_rows_without_a_snapshot_show_no_payout_fields_but_the_stated_count() -> None:
    current = _current()
    received = as_of(current, _audit(1, "RECEIVED", "Accepted.", None), REFERENCE)
    assert (received.transaction_hash, received.fee, received.confirmations) == ("", "", 0)
    confirming = as_of(current, _audit(6, "CONFIRMING", MINED, None), REFERENCE)
    assert (confirming.transaction_hash, confirming.confirmations) == ("", 1)
    assert confirming.state_message == MINED
    completed = as_of(current, _audit(7, "COMPLETED", current.state_message, None), REFERENCE)
    assert (completed.confirmations, completed.fee) == (5, "")


def test_the_message_is_shown_as_stored_beside_the_fields_stored_with_it() -> None:
    """The monitor writes a CONFIRMING message together with the count it states
    (`svc_monitor.messages`); the gateway shows both as stored, rewriting neither."""
    current = _current()
    message = confirming_message(9, TX, 4, 5)
    current.state, current.state_message, current.confirmations = "CONFIRMING", message, 4
    current.fee_wei, current.end_time = None, None
    shown = to_proto(current, REFERENCE)
    assert (shown.confirmations, shown.state_message) == (4, message)
    assert message == f"Mined in block 9 (transaction {TX}); 4 of 5 confirmations."
