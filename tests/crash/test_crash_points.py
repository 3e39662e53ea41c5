"""Crash anywhere: `kill -9` of any service at any registered crash point never pays
a withdrawal twice, never loses one, and never leaves a nonce gap.

One `HarnessStack` (its own Redis, MariaDB database, anvil with 1 s blocks and the four
services as supervised processes) serves the whole module. Each test arms one point of
`withdrawal_shared.crash_points` in its service (`respawn` with `AWS_CRASH_AT`), submits a few
withdrawals to fresh recipients over gRPC (retrying with the same request_id, as a client
must), proves the process died at that point (the marker holds the armed pid, the supervisor
restarted it, the exit was a SIGKILL), waits for quiescence, and then asks the chain:

- `check_exactly_once` (Transfer logs and balances): every withdrawal paid exactly once, for
  exactly its amount, COMPLETED in the database, no vault skip;
- no nonce gap: for each hot wallet, the chain's transaction count (latest and pending) is
  the database's `next_nonce`, and the signer never signed at a nonce not reserved;
- every payout row is settled (CONFIRMED, or DROPPED for a replaced one);
- signed once: each withdrawal is in the signer's ledger at one (wallet, nonce), no (wallet,
  nonce) holds two payouts (a replacement is the only other transaction allowed there), and
  each confirmed payout's stored hash has a successful receipt.

The scenario of each point is listed explicitly; `test_every_point_has_a_scenario` fails for a
registered point without one.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from web3 import Web3

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2_grpc
from devstack.anvil import drop_transaction, set_interval_mining
from devstack.exactly_once import Submitted, check_exactly_once, non_terminal_count
from devstack.harness import SERVICES, HarnessConfig, HarnessStack
from tests.support.pipeline import wait_until
from tests.support.requests import create_request, fresh_address
from withdrawal_shared.chain.types import HexStr
from withdrawal_shared.crash_points import CRASH_POINTS, ENV_AT, ENV_ONCE_DIR, service_of
from withdrawal_shared.db.models import (
    HotWallet,
    PayoutItem,
    PayoutTransaction,
    SignerLedger,
    SignerLedgerItem,
    Withdrawal,
)
from withdrawal_shared.states import PayoutState, State

# The internal waits below fail first, with a description of the stack; the generous limits
# are for a shared two-core machine, where one service start can take a minute.
pytestmark = [pytest.mark.chain, pytest.mark.timeout(600)]

BLOCK_TIME = 1
CONFIRMATIONS = 2
WITHDRAWALS = 3
STUCK_AFTER_BLOCKS = 5  # the processor's default
SETTLED = frozenset({PayoutState.CONFIRMED, PayoutState.DROPPED})
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
CRASH_TIMEOUT = 90.0
QUIET_TIMEOUT = 180.0
STARTUP_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessStack]:
    config = HarnessConfig(
        var_dir=tmp_path_factory.mktemp("crash-stack"),
        block_time=BLOCK_TIME,
        confirmations=CONFIRMATIONS,
        startup_timeout=STARTUP_TIMEOUT,
        env={
            # Quick recovery: a batch closes soon, the sweeper looks every second at rows
            # two seconds old, and a dead consumer's task is claimed after two seconds.
            "PROCESSOR_BATCH_MAX_WAIT_SECONDS": "0.3",
            "PROCESSOR_SWEEP_INTERVAL_SECONDS": "1",
            "PROCESSOR_SWEEP_AGE_SECONDS": "2",
            "PROCESSOR_CLAIM_IDLE_SECONDS": "2",
            "PROCESSOR_CLAIM_INTERVAL_SECONDS": "1",
            "PROCESSOR_STUCK_AFTER_BLOCKS": str(STUCK_AFTER_BLOCKS),
            "MONITOR_POLL_SECONDS": "0.3",
        },
    )
    with HarnessStack(config) as running:
        yield running


# -- submitting, as a client that retries with the same request_id -------------------------


@dataclass
class Submission:
    submitted: list[Submitted]
    request_ids: list[str]
    failed_attempts: int
    """Calls that failed UNAVAILABLE or DEADLINE_EXCEEDED and were retried."""


def submit(stack: HarnessStack, count: int = WITHDRAWALS, timeout: float = 90.0) -> Submission:
    """Create `count` withdrawals to fresh recipients; a call that fails because the gateway
    is down (or died mid-call) is repeated with the same request until it succeeds."""
    options = [
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    metadata = (("authorization", f"Bearer {stack.api_key}"),)
    result = Submission([], [], 0)
    with grpc.insecure_channel(stack.grpc_target, options=options) as channel:
        stub = withdrawal_pb2_grpc.WithdrawalServiceStub(channel)
        for index in range(count):
            units = (index + 1) * 1_000_000 + 250_000  # 1.25, 2.25, ... USDC
            recipient = fresh_address()
            request = create_request(
                amount=f"{units // 10**6}.{units % 10**6:06d}", recipient=recipient
            )
            deadline = time.monotonic() + timeout
            while True:
                try:
                    response = stub.CreateWithdrawal(request, metadata=metadata, timeout=15)
                    break
                except grpc.RpcError as exc:
                    code = exc.code()  # type: ignore[attr-defined]
                    if code not in RETRYABLE or time.monotonic() > deadline:
                        raise
                    result.failed_attempts += 1
                    time.sleep(0.3)
            withdrawal_id = response.name.removeprefix("withdrawals/")
            result.submitted.append(Submitted(withdrawal_id, recipient, units))
            result.request_ids.append(request.request_id)
    return result


# -- what the stack looks like, for failure messages ----------------------------------------


def describe(stack: HarnessStack, headline: str) -> str:
    sessions = stack.sessions()
    with sessions() as session:
        withdrawals = Counter(
            dict(
                session.execute(
                    select(Withdrawal.state, func.count()).group_by(Withdrawal.state)
                ).all()
            )
        )
        payouts = Counter(
            dict(
                session.execute(
                    select(PayoutTransaction.state, func.count()).group_by(PayoutTransaction.state)
                ).all()
            )
        )
    lines = [headline, f"withdrawals by state: {dict(withdrawals)}", f"payouts: {dict(payouts)}"]
    for name in SERVICES:
        child = stack.child(name)
        lines.append(
            f"--- {name}: running={child.running} restarts={child.restarts} "
            f"last exit={child.last_exit_code}; log tail:"
        )
        lines.append(stack.log_tail(name, 15))
    return "\n".join(lines)


# -- scenarios: how each point is reached -----------------------------------------------------

Scenario = Callable[[HarnessStack], Submission]


def plain(stack: HarnessStack) -> Submission:
    """A few withdrawals: every point on the normal path is reached by them."""
    return submit(stack)


def stuck(stack: HarnessStack) -> Submission:
    """A few withdrawals whose payouts the node forgets (mining paused, the transactions
    dropped from the mempool) so that, STUCK_AFTER_BLOCKS later, the processor replaces them."""
    w3 = stack.web3()
    sessions = stack.sessions()
    set_interval_mining(w3, 0)
    try:
        submission = submit(stack)
        ids = [s.withdrawal_id for s in submission.submitted]

        def broadcast_hashes() -> list[str] | None:
            with sessions() as session:
                states = set(
                    session.scalars(select(Withdrawal.state).where(Withdrawal.id.in_(ids)))
                )
                hashes = session.scalars(
                    select(PayoutTransaction.tx_hash)
                    .join(PayoutItem, PayoutItem.payout_tx_id == PayoutTransaction.id)
                    .where(
                        PayoutItem.withdrawal_id.in_(ids),
                        PayoutTransaction.state == PayoutState.BROADCAST,
                    )
                    .distinct()
                ).all()
            return list(hashes) if states == {State.BROADCAST} else None

        hashes = wait_until(
            broadcast_hashes, 60, lambda: describe(stack, "payouts were never broadcast")
        )
        for tx_hash in hashes:
            drop_transaction(w3, HexStr(tx_hash))
    finally:
        set_interval_mining(w3, BLOCK_TIME)
    return submission


SCENARIOS: dict[str, Scenario] = {
    "gateway.after_insert_before_enqueue": plain,
    "gateway.after_enqueue_before_reply": plain,
    "processor.after_process_before_ack": plain,
    "processor.after_nonce_reserved": plain,
    "processor.after_signed_before_store": plain,
    "processor.after_store_before_broadcast": plain,
    "processor.after_broadcast_before_record": plain,
    "processor.after_replacement_signed": stuck,
    "signer.after_ledger_before_reply": plain,
    "monitor.after_receipt_before_update": plain,
    "monitor.mid_state_update": plain,
    "monitor.after_complete_before_publish": plain,
}


def test_every_point_has_a_scenario() -> None:
    assert sorted(SCENARIOS) == sorted(CRASH_POINTS)


# -- the checks -------------------------------------------------------------------------------


def wait_crashed(
    stack: HarnessStack, point: str, once_dir: Path, armed_pid: int, restarts: int
) -> None:
    """The armed process killed itself at `point` and the supervisor started a new one."""
    service = service_of(point)
    marker = once_dir / point

    def crashed() -> bool | None:
        return True if marker.exists() and stack.restarts(service) > restarts else None

    wait_until(crashed, CRASH_TIMEOUT, lambda: describe(stack, f"{point} never crashed"))
    assert marker.read_text().strip() == str(armed_pid), "another process took the marker"
    assert stack.child(service).last_exit_code == -signal.SIGKILL
    stack.wait_serving(service)
    assert stack.pid(service) != armed_pid


def wait_quiescent(stack: HarnessStack) -> None:
    sessions = stack.sessions()
    wait_until(
        lambda: True if non_terminal_count(sessions) == 0 else None,
        QUIET_TIMEOUT,
        lambda: describe(stack, "the stack never became quiet (a stuck or lost row)"),
    )


def assert_exactly_once(stack: HarnessStack, submission: Submission) -> None:
    boot = stack.result
    verdict = check_exactly_once(
        stack.web3(),
        stack.sessions(),
        boot.token_address,
        boot.payout_vault,
        submission.submitted,
        check_balances=True,
    )
    assert verdict.ok, verdict.summary()
    assert verdict.paid_once == len(submission.submitted), verdict.summary()
    # Retries with the same request_id never created a second withdrawal.
    with stack.sessions()() as session:
        rows = session.scalars(
            select(Withdrawal.id).where(Withdrawal.request_id.in_(submission.request_ids))
        ).all()
    assert sorted(rows) == sorted(s.withdrawal_id for s in submission.submitted)


def assert_no_nonce_gap(stack: HarnessStack) -> None:
    w3 = stack.web3()
    with stack.sessions()() as session:
        wallets = {w.address: w.next_nonce for w in session.scalars(select(HotWallet))}
        signed_up_to = dict(
            session.execute(
                select(SignerLedger.wallet, func.max(SignerLedger.nonce)).group_by(
                    SignerLedger.wallet
                )
            ).all()
        )
        payouts = Counter(session.scalars(select(PayoutTransaction.state)).all())
    assert wallets, "no hot wallet in the database"
    for address, next_nonce in wallets.items():
        checksum = Web3.to_checksum_address(address)
        latest = int(w3.eth.get_transaction_count(checksum, "latest"))
        pending = int(w3.eth.get_transaction_count(checksum, "pending"))
        assert (latest, pending) == (next_nonce, next_nonce), (
            f"wallet {address}: chain latest={latest} pending={pending}, "
            f"database next_nonce={next_nonce}"
        )
        assert signed_up_to.get(address, -1) < next_nonce, f"signed beyond {address}'s nonces"
    assert set(payouts) <= SETTLED, f"payout rows not settled: {dict(payouts)}"


def assert_signed_once(stack: HarnessStack, submission: Submission) -> None:
    """The crash never made anything sign a withdrawal again at another nonce, or another
    payout at a nonce already signed for (only a REPLACEMENT may share it), and each confirmed
    payout's stored hash is the transaction the chain mined."""
    ids = [s.withdrawal_id for s in submission.submitted]
    w3 = stack.web3()
    with stack.sessions()() as session:
        claims = session.execute(
            select(SignerLedgerItem.withdrawal_id, SignerLedgerItem.wallet, SignerLedgerItem.nonce)
            .where(SignerLedgerItem.withdrawal_id.in_(ids))
            .distinct()
        ).all()
        payouts_at = Counter(
            session.execute(
                select(SignerLedger.wallet, SignerLedger.nonce).where(
                    SignerLedger.purpose == "PAYOUT"
                )
            ).all()
        )
        confirmed = session.scalars(
            select(PayoutTransaction.tx_hash)
            .join(PayoutItem, PayoutItem.payout_tx_id == PayoutTransaction.id)
            .where(
                PayoutItem.withdrawal_id.in_(ids),
                PayoutTransaction.state == PayoutState.CONFIRMED,
            )
            .distinct()
        ).all()
    nonces = Counter(claim.withdrawal_id for claim in claims)
    assert sorted(nonces) == sorted(ids) and set(nonces.values()) == {1}, claims
    twice = {at: n for at, n in payouts_at.items() if n > 1}
    assert not twice, f"two payouts signed at one (wallet, nonce): {twice}"
    assert confirmed, "no confirmed payout pays the withdrawals"
    for tx_hash in confirmed:
        assert w3.eth.get_transaction_receipt(HexStr(tx_hash))["status"] == 1, tx_hash


# -- one test per point -----------------------------------------------------------------------


@pytest.mark.parametrize("point", list(SCENARIOS))
def test_crash_point(stack: HarnessStack, point: str, tmp_path: Path) -> None:
    service = service_of(point)
    once_dir = tmp_path / "crash-once"
    stack.respawn(service, {ENV_AT: point, ENV_ONCE_DIR: str(once_dir)})
    try:
        armed_pid = stack.pid(service)
        assert armed_pid is not None
        restarts = stack.restarts(service)

        submission = SCENARIOS[point](stack)

        wait_crashed(stack, point, once_dir, armed_pid, restarts)
        if service == "gateway":
            assert submission.failed_attempts >= 1, "the client never saw the gateway die"
        wait_quiescent(stack)
        assert_exactly_once(stack, submission)
        assert_no_nonce_gap(stack)
        assert_signed_once(stack, submission)
    finally:
        stack.respawn(service, {ENV_AT: "", ENV_ONCE_DIR: ""})


# -- the stack's services run as their own database users -----------------------------------


def test_each_service_connects_as_its_own_database_user(stack: HarnessStack) -> None:
    """The crashes above ran with per-service users (the harness default on MariaDB): each
    service's DATABASE_URL names its own user, the server sees the long-running ones connected
    as theirs, and the signer's ledger (which only its user may write) holds what it signed."""
    database = make_url(stack.database_url).database
    users = {name: f"{database}_{name}" for name in SERVICES}
    for name, user in users.items():
        url = make_url(stack.child(name).spec.env["DATABASE_URL"])  # type: ignore[index]
        assert (url.username, url.database) == (user, database), name
        assert url == make_url(stack.service_database_url(name))

    def connected() -> set[str]:
        with stack.sessions()() as session:
            rows = session.execute(
                text("SELECT DISTINCT USER FROM information_schema.PROCESSLIST WHERE DB = :db"),
                {"db": database},
            )
            return {row[0] for row in rows}

    polling = {users[name] for name in ("gateway", "processor", "monitor")}
    wait_until(
        lambda: True if polling <= connected() else None,
        timeout=60,
        describe=lambda: f"connected to {database}: {sorted(connected())}, wanted {polling}",
    )
    submit(stack, count=1)

    def signed() -> int | None:
        with stack.sessions()() as session:
            return session.scalar(select(func.count()).select_from(SignerLedger)) or None

    wait_until(signed, timeout=QUIET_TIMEOUT, describe=lambda: "the signer recorded nothing")
