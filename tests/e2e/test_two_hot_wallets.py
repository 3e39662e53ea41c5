"""Two hot wallets on one chain, each with its own nonce sequence (the queue-sharding path to
horizontal scale): a signer holding two keystore keys, both registered and funded by the
bootstrap, and a processor allowed one payout in flight per wallet, so payouts spread over
both wallets. Each wallet's nonces stay consecutive, and every recipient is paid once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from web3 import Web3

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.anvil import set_automine, set_interval_mining
from tests.support.pipeline import Pipeline, running_pipeline, signer_wallets, wait_until
from tests.support.requests import create_request, fresh_address
from tests.support.signers import keystore_signer
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import PayoutTransaction

S = withdrawal_pb2
PAYOUTS = 6


@pytest.fixture(scope="module")
def two_wallet_pipeline(
    e2e_database: str,
    redis_url: str,
    module_redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """The vault pipeline with a signer holding two keystore keys (keystore.json and
    keystore-1.json, as SIGNER_KEYSTORE_COUNT=2 lays them out), one payout per batch and at
    most one payout in flight per wallet."""
    with keystore_signer(e2e_database, tmp_path_factory.mktemp("keystores"), keys=2) as target:
        wallets = signer_wallets(target)
        assert len(wallets) == 2
        with running_pipeline(
            e2e_database,
            redis_url,
            module_redis_prefix,
            target,
            payout_vault=True,
            batch_max_items=1,
            batch_max_wait_seconds=30,
            max_in_flight_per_wallet=1,
        ) as pipeline:
            yield pipeline


def _payouts(p: Pipeline) -> list[PayoutTransaction]:
    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            return list(
                session.scalars(
                    select(PayoutTransaction)
                    .where(PayoutTransaction.kind == "vault")
                    .order_by(PayoutTransaction.wallet, PayoutTransaction.nonce)
                )
            )
    finally:
        engine.dispose()


def test_payouts_spread_over_both_wallets_each_with_its_own_nonces(
    two_wallet_pipeline: Pipeline,
) -> None:
    p = two_wallet_pipeline
    wallets = [w.lower() for w in p.boot.hot_wallets]
    assert len(set(wallets)) == 2
    first_nonce = {
        w: p.w3.eth.get_transaction_count(Web3.to_checksum_address(w), "pending") for w in wallets
    }
    recipients = [fresh_address() for _ in range(PAYOUTS)]
    amounts = [(i + 1) * 1_000_000 + 250_000 for i in range(PAYOUTS)]  # 1.25, 2.25, ... USDC
    # Mining is paused while they are created: each wallet takes one payout (its bound) and
    # the rest wait, so both wallets are certain to pay; then blocks come again.
    set_interval_mining(p.w3, 0)
    set_automine(p.w3, False)
    try:
        names = [
            p.gateway.stub.CreateWithdrawal(
                create_request(
                    amount=f"{amount / 1_000_000:g}",
                    recipient=recipient,
                    priority=withdrawal_pb2.PRIORITY_PRIORITY,
                ),
                metadata=p.partner.metadata,
            ).name
            for recipient, amount in zip(recipients, amounts, strict=True)
        ]
        wait_until(
            lambda: True if {t.wallet for t in _payouts(p)} == set(wallets) else None,
            30,
            lambda: f"payouts did not start on both wallets: {_payouts(p)}",
        )
    finally:
        set_automine(p.w3, True)
        set_interval_mining(p.w3, 1)

    done = [p.wait_for_state(name, S.STATE_COMPLETED, timeout=120) for name in names]
    assert len({w.transaction_hash for w in done}) == PAYOUTS  # one payout each (batch of 1)
    assert [p.token_balance(r) for r in recipients] == amounts

    nonces: dict[str, list[int]] = defaultdict(list)
    for payout in _payouts(p):
        assert payout.state in ("MINED", "CONFIRMED"), payout.state
        nonces[payout.wallet].append(payout.nonce)
    assert set(nonces) == set(wallets), nonces  # both wallets paid
    assert sum(len(n) for n in nonces.values()) == PAYOUTS
    for wallet, used in nonces.items():
        start = first_nonce[wallet]
        # Consecutive from the wallet's own first nonce: no gaps, no duplicates.
        assert sorted(used) == list(range(start, start + len(used))), (wallet, used)
        on_chain = p.w3.eth.get_transaction_count(Web3.to_checksum_address(wallet))
        assert on_chain == start + len(used)
