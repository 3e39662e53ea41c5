"""Fees come from a live fee market: background traffic with tips spread over 30..300 gwei fills
eth_feeHistory, and a STANDARD and an EMERGENCY withdrawal pay tips read from it (the urgency's
reward percentile), not the chain's floor and not an echo of the system's own payouts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from chaos.traffic import GWEI, TrafficGenerator, fixed_tips, uniform_tips
from tests.support.pipeline import Pipeline, wait_until
from tests.support.requests import create_request, fresh_address
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Chain, PayoutTransaction, Withdrawal

S = withdrawal_pb2
LOW_TIP = 30 * GWEI
HIGH_TIP = 300 * GWEI
CHAIN_MIN_TIP = 25 * GWEI  # chains.min_priority_fee_wei for polygon (migration 0002)


def market(w3: Any) -> tuple[int, int, list[list[int]]]:
    """(median p50, median p95, per-block [p50, p95]) over the last 10 blocks, the way the
    processor reads them (the median over the blocks of each percentile)."""
    history = w3.eth.fee_history(10, "latest", [50, 95])
    rows = [[int(v) for v in row] for row in history["reward"]]
    return (
        int(statistics.median_low(r[0] for r in rows)),
        int(statistics.median_low(r[1] for r in rows)),
        rows,
    )


def spread_market(w3: Any) -> tuple[int, int, list[list[int]]] | None:
    """The market once every block of the window carries traffic and p95 is well above p50."""
    p50, p95, rows = market(w3)
    full = len(rows) == 10 and all(r[0] >= LOW_TIP for r in rows)
    return (p50, p95, rows) if full and p95 >= p50 + 50 * GWEI else None


def gwei(values: Sequence[int]) -> list[float]:
    return [round(v / GWEI, 1) for v in values]


def test_tips_follow_the_market_percentile_per_urgency(keystore_pipeline: Pipeline) -> None:
    p = keystore_pipeline
    started = time.monotonic()
    traffic = TrafficGenerator(
        p.anvil.rpc_url,
        p.anvil.accounts[1:],  # accounts[0] deploys and owns the token: leave its nonces alone
        uniform_tips(LOW_TIP, HIGH_TIP, step_wei=GWEI),
        rate=20,
        max_duration=30,
        max_count=600,
        seed=4,
    )
    with traffic:
        p50, p95, rows = wait_until(
            lambda: spread_market(p.w3),
            15,
            lambda: f"eth_feeHistory never showed a spread market: {market(p.w3)}",
        )
        names = {
            priority: p.gateway.stub.CreateWithdrawal(
                create_request(amount="1", recipient=fresh_address(), priority=priority),
                metadata=p.partner.metadata,
            ).name
            for priority in (S.PRIORITY_STANDARD, S.PRIORITY_EMERGENCY)
        }
        for name in names.values():
            p.wait_for_state(name, S.STATE_COMPLETED, timeout=30)
    assert not traffic.running
    assert traffic.stop_reason == "stopped"
    assert traffic.errors <= 2, traffic.error_messages
    sent = traffic.tips
    assert len(sent) >= 100

    engine = make_engine(p.database_url, pool_size=1)
    try:
        with make_sessionmaker(engine)() as session:
            payouts: dict[int, PayoutTransaction] = {}
            for priority, name in names.items():
                payout = session.scalars(
                    select(PayoutTransaction)
                    .join(Withdrawal, Withdrawal.payout_tx_id == PayoutTransaction.id)
                    .where(Withdrawal.id == name.split("/")[1])
                ).one()
                payouts[priority] = payout
            chain = session.get(Chain, payouts[S.PRIORITY_STANDARD].chain)
            assert chain is not None
    finally:
        engine.dispose()

    standard = payouts[S.PRIORITY_STANDARD]
    emergency = payouts[S.PRIORITY_EMERGENCY]
    tips = {
        "standard": standard.max_priority_fee_per_gas,
        "emergency": emergency.max_priority_fee_per_gas,
    }
    print(  # shown with -s: what the market and the payouts looked like
        f"\nmarket before the requests: median p50 {p50 / GWEI:.1f} gwei, median p95 "
        f"{p95 / GWEI:.1f} gwei; per block [p50, p95] {[gwei(r) for r in rows]}"
        f"\ntraffic: {len(sent)} tx in {traffic.elapsed:.1f}s, tips {min(sent) / GWEI:.0f}.."
        f"{max(sent) / GWEI:.0f} gwei, errors {traffic.errors}"
        f"\npaid tips: standard {tips['standard'] / GWEI:.1f} gwei, emergency "
        f"{tips['emergency'] / GWEI:.1f} gwei; max fees {standard.max_fee_per_gas / GWEI:.1f} / "
        f"{emergency.max_fee_per_gas / GWEI:.1f} gwei (cap {chain.max_fee_cap_wei / GWEI:.0f})"
        f"\ntest body took {time.monotonic() - started:.1f}s"
    )
    assert chain.min_priority_fee_wei == CHAIN_MIN_TIP
    for payout in (standard, emergency):
        tip = payout.max_priority_fee_per_gas
        assert tip >= chain.min_priority_fee_wei
        # From the market: within what the traffic actually paid, so not the floor (25 gwei,
        # below every traffic tip) and not an echo of the system's own payouts.
        assert min(sent) <= tip <= max(sent)
        assert payout.max_fee_per_gas <= chain.max_fee_cap_wei
        assert payout.max_fee_per_gas >= tip
        on_chain = p.w3.eth.get_transaction(payout.tx_hash)  # type: ignore[arg-type]
        assert on_chain["maxPriorityFeePerGas"] == tip
        assert on_chain["maxFeePerGas"] == payout.max_fee_per_gas
    assert emergency.max_priority_fee_per_gas > standard.max_priority_fee_per_gas
    # The urgencies read different percentiles: STANDARD near the market's median, EMERGENCY in
    # its upper tail (loose bounds: the window moved on between our reading and the processor's).
    assert tips["standard"] < 250 * GWEI
    assert tips["emergency"] > 200 * GWEI


def test_traffic_stops_by_itself_and_pays_the_tips_it_records(keystore_pipeline: Pipeline) -> None:
    p = keystore_pipeline
    choices = [40 * GWEI, 90 * GWEI, 260 * GWEI]
    traffic = TrafficGenerator(
        p.anvil.rpc_url,
        p.anvil.accounts[1:4],
        fixed_tips(choices),
        rate=50,
        max_count=15,
        max_duration=10,
        seed=1,
    )
    with traffic:
        assert traffic.wait(5), "the generator did not stop by itself"
        assert not traffic.running
    assert traffic.stop_reason == "max_count"
    assert traffic.errors == 0, traffic.error_messages
    sent = traffic.sent
    assert len(sent) == 15
    assert set(traffic.tips) <= set(choices)
    for tx in sent:
        receipt = p.w3.eth.wait_for_transaction_receipt(tx.tx_hash, timeout=10)
        assert receipt["status"] == 1
        block = p.w3.eth.get_block(receipt["blockNumber"])
        assert receipt["effectiveGasPrice"] - block["baseFeePerGas"] == tx.tip_wei
