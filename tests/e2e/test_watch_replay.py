"""Watching a withdrawal paid by the real pipeline (keystore signer, anvil, MariaDB, Redis):
watched live to COMPLETED, then replayed from version 0, every event shows the withdrawal as
it was at its version and the replay equals what the live watcher saw; GetWithdrawal's state
message agrees with its confirmations all the way."""

from __future__ import annotations

import time

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from tests.support.pipeline import Pipeline
from tests.support.requests import create_request, fresh_address
from tests.support.watching import (
    LiveWatch,
    check_live_equals_replay,
    check_replay,
    message_agrees,
    watch,
)

S = withdrawal_pb2
REQUIRED = 5  # polygon's confirmations in the reference data


def test_replay_of_a_paid_withdrawal_shows_each_version_as_the_live_watch_saw_it(
    keystore_pipeline: Pipeline,
) -> None:
    p = keystore_pipeline
    created = p.gateway.stub.CreateWithdrawal(
        create_request(amount="3.25", recipient=fresh_address()), metadata=p.partner.metadata
    )
    live = LiveWatch(p.gateway.stub, created.name, p.partner.metadata, timeout=90).start()
    polled: list[withdrawal_pb2.Withdrawal] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        current = p.get(created.name)
        polled.append(current)
        if current.state == S.STATE_COMPLETED:
            break
        time.sleep(0.1)
    seen = live.join(30)

    assert polled[-1].state == S.STATE_COMPLETED, polled[-1]
    disagreeing = [w for w in polled if not message_agrees(w)]
    assert not disagreeing, disagreeing
    counted = [w.confirmations for w in polled if w.state == S.STATE_CONFIRMING]
    assert counted == sorted(counted), counted
    assert len(set(counted)) > 1, counted  # the count rose while the version stood still

    replay = watch(p.gateway.stub, created.name, p.partner.metadata, resume_after_version=0)
    check_replay(replay, REQUIRED)
    check_live_equals_replay(seen, replay)
    assert replay[-1].withdrawal == polled[-1]
    receipt = p.w3.eth.get_transaction_receipt(polled[-1].transaction_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1
