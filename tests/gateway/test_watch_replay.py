"""WatchWithdrawal against a real gateway (MariaDB and SQLite, Redis), the withdrawal moved
through its whole payout with `transitions` as the processor and monitor move it: every event
shows the withdrawal as it was at its version, a replay from 0 equals what a live watcher saw,
and the state message always agrees with the confirmations beside it."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from sqlalchemy import update

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_monitor.messages import confirming_message
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request
from tests.support.watching import (
    LiveWatch,
    check_live_equals_replay,
    check_replay,
    message_agrees,
    watch,
)
from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.db.transitions import Step, move_many, rows_as_read
from withdrawal_shared.states import State

S = withdrawal_pb2
REQUIRED = 5  # polygon's confirmations in the reference data
TX = "0x" + "ab" * 32
PAUSE = 0.6  # longer than the gateway's watch poll: the live watcher reads between moves


def _move(gateway: RunningGateway, withdrawal_id: str, *steps: Step, **fields: Any) -> None:
    with gateway.server.store.sessions.begin() as session:
        rows = rows_as_read(session, Withdrawal.id == withdrawal_id)
        move_many(session, rows, steps, actor="test", fields=fields)
    time.sleep(PAUSE)


def _count(gateway: RunningGateway, withdrawal_id: str, confirmations: int) -> None:
    """What the monitor does between blocks: the count and its message rise, the version
    stays."""
    with gateway.server.store.sessions.begin() as session:
        session.execute(
            update(Withdrawal)
            .where(Withdrawal.id == withdrawal_id)
            .values(
                confirmations=confirmations,
                state_message=confirming_message(7, TX, confirmations, REQUIRED),
            )
        )
    time.sleep(PAUSE)


def _get(gateway: RunningGateway, partner: Partner, name: str) -> withdrawal_pb2.Withdrawal:
    return gateway.stub.GetWithdrawal(S.GetWithdrawalRequest(name=name), metadata=partner.metadata)


def test_replay_shows_each_version_as_it_was_and_equals_the_live_watch(
    gateway: RunningGateway, partner_a: Partner
) -> None:
    created = gateway.stub.CreateWithdrawal(create_request(), metadata=partner_a.metadata)
    withdrawal_id = created.name.removeprefix("withdrawals/")
    live = LiveWatch(gateway.stub, created.name, partner_a.metadata).start()
    _move(gateway, withdrawal_id, Step(State.VALIDATED, "VALIDATED"), Step(State.QUEUED, "QUEUED"))
    _move(gateway, withdrawal_id, Step(State.SIGNED, "SIGNED", "Signed."), tx_hash=TX)
    _move(gateway, withdrawal_id, Step(State.BROADCAST, "BROADCAST", "Sent."))
    mined = f"Mined in block 7 (transaction {TX}); 1 of {REQUIRED} confirmations."
    _move(gateway, withdrawal_id, Step(State.CONFIRMING, "MINED", mined), confirmations=1)
    during = []
    for count in (2, 3, 4):
        _count(gateway, withdrawal_id, count)
        during.append(_get(gateway, partner_a, created.name))
    paid = f"Paid: transaction {TX} in block 7 has {REQUIRED} confirmations."
    _move(
        gateway,
        withdrawal_id,
        Step(State.COMPLETED, "CONFIRMED", paid),
        confirmations=REQUIRED,
        fee_wei=21_000 * 30 * 10**9,
    )
    seen = live.join()

    # GetWithdrawal while confirming: the count and the message rise together, same version.
    assert [(w.confirmations, w.version) for w in during] == [(2, 6), (3, 6), (4, 6)]
    assert all(message_agrees(w) for w in during), during
    assert during[-1].state_message.endswith(f"; 4 of {REQUIRED} confirmations.")

    replay = watch(gateway.stub, created.name, partner_a.metadata, resume_after_version=0)
    check_replay(replay, REQUIRED)
    assert [w.withdrawal.state for w in replay] == [
        S.STATE_RECEIVED,
        S.STATE_VALIDATED,
        S.STATE_QUEUED,
        S.STATE_SIGNED,
        S.STATE_BROADCAST,
        S.STATE_CONFIRMING,
        S.STATE_COMPLETED,
    ]
    confirming = replay[5].withdrawal
    assert (confirming.confirmations, confirming.state_message) == (1, mined)
    assert replay[-1].withdrawal.fee == "0.00063" and replay[-1].withdrawal.fee_currency == "POL"
    assert replay[-1].withdrawal == _get(gateway, partner_a, created.name)
    check_live_equals_replay(seen, replay)
    assert seen[0].withdrawal == replay[0].withdrawal  # the snapshot, at version 1
    # Resuming anywhere gives the same events from there on.
    assert (
        watch(gateway.stub, created.name, partner_a.metadata, resume_after_version=4)
        == (replay[4:])
    )

    # The REST stream renders the same events.
    with httpx.stream(
        "GET",
        f"{gateway.base_url}/v1/{created.name}:watch",
        params={"resumeAfterVersion": 0},
        headers=partner_a.headers,
        timeout=30,
    ) as stream:
        lines = [json.loads(line)["withdrawal"] for line in stream.iter_lines() if line]
    assert [w["version"] for w in lines] == [str(v) for v in range(1, 8)]
    assert [w.get("transactionHash", "") for w in lines] == ["", "", "", TX, TX, TX, TX]
    assert [w.get("confirmations", 0) for w in lines] == [0, 0, 0, 0, 0, 1, REQUIRED]
    assert [w.get("fee", "") for w in lines] == ["", "", "", "", "", "", "0.00063"]
