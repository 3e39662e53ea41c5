"""The payout kill switch on the real pipeline (anvil, MariaDB, Redis, the four services, two
hot wallets, the PayoutVault) under a continuous stream of withdrawals: once the pause
commits no payout row is created and no hot wallet uses a nonce beyond those reserved before;
new withdrawals wait ON_HOLD `PAUSED`; the signer itself refuses a new payout in the paused
scope; after resume every withdrawal is paid exactly once (judged from the chain)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from devstack.exactly_once import Submitted, check_exactly_once
from tests.support.databases import mariadb_database
from tests.support.pipeline import Pipeline, running_pipeline, wait_until
from tests.support.requests import create_request, fresh_address
from tests.support.signers import keystore_signer
from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.chain.erc20 import encode_transfer
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import HotWallet, PayoutTransaction, Token, Withdrawal
from withdrawal_shared.db.pauses import PauseScope, pause, resume
from withdrawal_shared.holds import HoldReason
from withdrawal_shared.states import State

AMOUNT = 1_500_000  # 1.5 USDC (6 decimals)


@pytest.fixture(scope="module")
def kill_switch_stack(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Pipeline, str]]:
    with (
        mariadb_database() as url,
        keystore_signer(url, tmp_path_factory.mktemp("keystore"), keys=2) as target,
        running_pipeline(
            url,
            redis_url,
            module_redis_prefix,
            target,
            payout_vault=True,
            batch_max_items=10,
            batch_max_wait_seconds=0.3,
        ) as pipeline,
    ):
        yield pipeline, target


class Submitter(threading.Thread):
    """Creates a withdrawal through the gateway every `interval` seconds until stopped."""

    def __init__(self, p: Pipeline, interval: float = 0.08) -> None:
        super().__init__(daemon=True)
        self.p = p
        self.interval = interval
        self.stop = threading.Event()
        self.submitted: list[Submitted] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.is_set():
            recipient = fresh_address()
            created = self.p.gateway.stub.CreateWithdrawal(
                create_request(amount="1.5", recipient=recipient),
                metadata=self.p.partner.metadata,
            )
            with self.lock:
                self.submitted.append(
                    Submitted(created.name.split("/")[1], recipient.lower(), AMOUNT)
                )
            self.stop.wait(self.interval)

    def ids(self) -> list[str]:
        with self.lock:
            return [s.withdrawal_id for s in self.submitted]


def _next_nonces(session: Session) -> dict[str, int]:
    return dict(session.execute(select(HotWallet.address, HotWallet.next_nonce)).all())


def test_the_kill_switch_stops_new_payouts_under_load_and_resume_pays_each_once(
    kill_switch_stack: tuple[Pipeline, str],
) -> None:
    p, signer_target = kill_switch_stack
    engine = make_engine(p.database_url, pool_size=2)
    sessions: sessionmaker[Session] = make_sessionmaker(engine)
    submitter = Submitter(p)
    submitter.start()
    try:
        with sessions() as session:
            token = session.scalars(select(Token).where(Token.chain == "polygon")).one()
        scope = PauseScope("polygon", token.symbol)
        # Payouts flow before the pause.
        wait_until(
            lambda: _count_payouts(sessions) >= 2 or None,
            20,
            lambda: "no payout transaction before the pause",
        )

        with sessions.begin() as session:
            change = pause(session, scope, reason="e2e kill switch", actor="e2e")
        assert change.changed and change.after.paused
        # Read right after the commit: what was reserved before the pause.
        with sessions() as session:
            payouts_before = set(session.scalars(select(PayoutTransaction.id)))
            nonces_at_pause = _next_nonces(session)
        submitted_at_pause = len(submitter.ids())

        # A payout the processor never reserved, asked of the signer directly: refused.
        with sessions.begin() as session:
            probe_id = add_withdrawal(
                session,
                partner_id=p.partner.id,
                token_id=token.id,
                recipient=fresh_address(),
                amount=AMOUNT,
                to=State.QUEUED,
            )
            probe = session.get(Withdrawal, probe_id)
            assert probe is not None
            probe_recipient = probe.recipient
        wallet = p.boot.hot_wallets[0].lower()
        token_address = p.boot.token_address.lower()
        with grpc.insecure_channel(signer_target) as channel:
            stub = signer_pb2_grpc.SignerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.SignTransaction(
                    signer_pb2.SignTransactionRequest(
                        wallet_address=wallet,
                        chain_id=137,
                        nonce=nonces_at_pause[wallet] + 50,
                        to_address=token_address,
                        data=encode_transfer(probe_recipient, AMOUNT),
                        value_wei="0",
                        gas_limit=100_000,
                        max_fee_per_gas_wei=str(200 * 10**9),
                        max_priority_fee_per_gas_wei=str(30 * 10**9),
                        purpose=signer_pb2.PURPOSE_PAYOUT,
                        items=[
                            signer_pb2.PayoutItem(
                                withdrawal_id=probe_id,
                                recipient_address=probe_recipient,
                                amount_base_units=str(AMOUNT),
                                token_address=token_address,
                            )
                        ],
                    ),
                    timeout=10,
                )
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "paused" in (refused.value.details() or "").lower()

        # Paused for a few seconds under load: nothing new is reserved, signed or sent.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            for address, nonce in nonces_at_pause.items():
                mined = p.w3.eth.get_transaction_count(Web3.to_checksum_address(address))
                pending = p.w3.eth.get_transaction_count(
                    Web3.to_checksum_address(address), "pending"
                )
                assert max(mined, pending) <= nonce, f"{address} used a nonce after the pause"
            time.sleep(0.5)
        with sessions() as session:
            assert _next_nonces(session) == nonces_at_pause
            new_rows = session.execute(
                select(
                    PayoutTransaction.id,
                    PayoutTransaction.wallet,
                    PayoutTransaction.nonce,
                    PayoutTransaction.replaces_id,
                ).where(PayoutTransaction.id.not_in(payouts_before))
            ).all()
            # Only replacements of what was out before (same nonce) may appear.
            for row in new_rows:
                assert row.replaces_id in payouts_before, row
                assert row.nonce < nonces_at_pause[row.wallet], row
            # Withdrawals created during the pause wait ON_HOLD PAUSED (the last second's
            # may still be on their way there).
            during = submitter.ids()[submitted_at_pause:]
            states = dict(
                session.execute(
                    select(Withdrawal.id, Withdrawal.state + ":" + Withdrawal.state_reason).where(
                        Withdrawal.id.in_([*during, probe_id])
                    )
                ).all()
            )
        assert len(during) > 20
        held = f"{State.ON_HOLD.value}:{HoldReason.PAUSED.value}"
        settled = during[: len(during) - 12]
        assert [states[i] for i in settled] == [held] * len(settled)
        assert all(
            states[i].split(":")[0] in {"RECEIVED", "VALIDATED", "QUEUED", "ON_HOLD"}
            for i in during
        )

        with sessions.begin() as session:
            lifted = resume(session, scope, actor="e2e")
        assert lifted.changed and not lifted.after.paused
        time.sleep(1.5)
    finally:
        submitter.stop.set()
        submitter.join(10)

    every = [*submitter.submitted, Submitted(probe_id, probe_recipient, AMOUNT)]
    wait_until(
        lambda: _all_completed(sessions, [s.withdrawal_id for s in every]) or None,
        45,
        lambda: f"not all completed: {_state_counts(sessions, [s.withdrawal_id for s in every])}",
    )
    verdict = check_exactly_once(
        p.w3, sessions, token_address, (p.boot.payout_vault or "").lower(), every
    )
    engine.dispose()
    assert verdict.ok, verdict.summary()
    assert verdict.paid_once == len(every), verdict.summary()


def _count_payouts(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(PayoutTransaction)) or 0)


def _all_completed(sessions: sessionmaker[Session], ids: list[str]) -> bool:
    return _state_counts(sessions, ids) == {State.COMPLETED.value: len(ids)}


def _state_counts(sessions: sessionmaker[Session], ids: list[str]) -> dict[str, int]:
    with sessions() as session:
        return dict(
            session.execute(
                select(Withdrawal.state, func.count())
                .where(Withdrawal.id.in_(ids))
                .group_by(Withdrawal.state)
            ).all()
        )
