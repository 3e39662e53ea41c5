"""Watching a withdrawal over gRPC in tests, and what every watch stream must satisfy: each
event shows the withdrawal as it was at its version, with a state message that agrees with
the confirmations beside it."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2, withdrawal_pb2_grpc

S = withdrawal_pb2
BEFORE_SIGNING = (S.STATE_RECEIVED, S.STATE_VALIDATED, S.STATE_QUEUED, S.STATE_PENDING_APPROVAL)
_COUNTED = re.compile(r"\b(\d+) of (\d+) confirmations\b")
_PAID = re.compile(r"\bhas (\d+) confirmations\b")


def watch(
    stub: withdrawal_pb2_grpc.WithdrawalServiceStub,
    name: str,
    metadata: tuple[tuple[str, str], ...],
    *,
    resume_after_version: int | None = None,
    timeout: float = 60,
) -> list[withdrawal_pb2.WatchWithdrawalResponse]:
    """Every event of one WatchWithdrawal stream, until it ends (at a terminal state)."""
    request = S.WatchWithdrawalRequest(name=name)
    if resume_after_version is not None:
        request.resume_after_version = resume_after_version
    return list(stub.WatchWithdrawal(request, metadata=metadata, timeout=timeout))


@dataclass
class LiveWatch:
    """A watch without resume (a snapshot, then live events) running on its own thread."""

    stub: withdrawal_pb2_grpc.WithdrawalServiceStub
    name: str
    metadata: tuple[tuple[str, str], ...]
    timeout: float = 60
    events: list[withdrawal_pb2.WatchWithdrawalResponse] = field(default_factory=list)
    error: BaseException | None = None
    started: threading.Event = field(default_factory=threading.Event)

    def start(self) -> LiveWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.started.wait(10), "the watch sent no snapshot"
        return self

    def _run(self) -> None:
        try:
            request = S.WatchWithdrawalRequest(name=self.name)
            stream = self.stub.WatchWithdrawal(
                request, metadata=self.metadata, timeout=self.timeout
            )
            for event in stream:
                self.events.append(event)
                self.started.set()
        except BaseException as exc:
            self.error = exc
            self.started.set()

    def join(self, timeout: float = 30) -> list[withdrawal_pb2.WatchWithdrawalResponse]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the live watch did not end"
        if self.error is not None:
            raise self.error
        return self.events


def message_agrees(withdrawal: withdrawal_pb2.Withdrawal) -> bool:
    """The state message states no other count of confirmations than `confirmations` (for
    CONFIRMING "N of M confirmations", for COMPLETED "has N confirmations")."""
    if withdrawal.state == S.STATE_CONFIRMING:
        counted = [int(m.group(1)) for m in _COUNTED.finditer(withdrawal.state_message)]
        return counted == [withdrawal.confirmations]
    if withdrawal.state == S.STATE_COMPLETED:
        paid = [int(m.group(1)) for m in _PAID.finditer(withdrawal.state_message)]
        return all(n == withdrawal.confirmations for n in paid)
    return True


def check_replay(events: Sequence[withdrawal_pb2.WatchWithdrawalResponse], required: int) -> None:
    """What a replay from version 0 of a withdrawal paid without incident must show: every
    version once, in order; nothing of the payout before signing; the hash from SIGNED on;
    confirmations rising through CONFIRMING to `required` at COMPLETED, each beside a message
    that states the same count; the fee only at COMPLETED."""
    shown = [e.withdrawal for e in events]
    assert [w.version for w in shown] == list(range(1, len(shown) + 1)), shown
    assert all(e.event_type == S.EVENT_TYPE_STATE_CHANGED for e in events)
    assert [e.previous_state for e in events[1:]] == [w.state for w in shown[:-1]]
    assert shown[-1].state == S.STATE_COMPLETED
    for w in shown:
        assert message_agrees(w), w
        if w.state in BEFORE_SIGNING:
            assert (w.transaction_hash, w.fee, w.confirmations) == ("", "", 0), w
            assert not w.HasField("end_time")
    signed = [w for w in shown if w.state in (S.STATE_SIGNED, S.STATE_BROADCAST)]
    assert signed and all(len(w.transaction_hash) == 66 for w in signed), signed
    assert all(w.fee == "" and w.confirmations == 0 for w in signed), signed
    confirming = [w for w in shown if w.state == S.STATE_CONFIRMING]
    counts = [w.confirmations for w in [*confirming, shown[-1]]]
    assert counts == sorted(counts) and counts[0] >= 1 and counts[-1] >= required, counts
    assert all(w.fee == "" for w in confirming), confirming
    assert shown[-1].fee and shown[-1].HasField("end_time")
    assert shown[-1].transaction_hash == confirming[-1].transaction_hash
    assert shown[-1].end_time == shown[-1].update_time


def check_live_equals_replay(
    live: Sequence[withdrawal_pb2.WatchWithdrawalResponse],
    replay: Sequence[withdrawal_pb2.WatchWithdrawalResponse],
) -> None:
    """A live watch (snapshot first) saw exactly the replay's events from the snapshot's
    version on: the same messages, field for field."""
    assert live and live[0].event_type == S.EVENT_TYPE_SNAPSHOT
    start = live[0].withdrawal.version
    by_version = {e.withdrawal.version: e for e in replay}
    assert [e.withdrawal.version for e in live[1:]] == [v for v in sorted(by_version) if v > start]
    for event in live[1:]:
        assert event == by_version[event.withdrawal.version]
