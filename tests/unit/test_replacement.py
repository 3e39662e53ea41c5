"""The fee bump of a replacement at the same nonce, and how a refused replacement is told."""

from __future__ import annotations

import pytest

from svc_processor.errors import rpc_error_kind
from svc_processor.replacer import MIN_BUMP_PCT, bumped_fees, raised
from withdrawal_shared.chain.fees import Fees

GWEI = 10**9


def test_raised_rounds_up_in_integers() -> None:
    assert raised(100, 10) == 110
    assert raised(101, 10) == 112  # 111.1 -> 112
    assert raised(0, 15) == 0
    assert raised(30 * GWEI + 1, 15) == 34_500_000_002


def test_both_fees_are_raised_by_the_percentage() -> None:
    old = Fees(max_fee_per_gas=100 * GWEI, max_priority_fee_per_gas=30 * GWEI)
    assert bumped_fees(old, 15, cap_wei=1_000 * GWEI) == Fees(115 * GWEI, 34_500_000_000)


def test_below_the_node_minimum_the_minimum_is_used() -> None:
    old = Fees(max_fee_per_gas=100 * GWEI, max_priority_fee_per_gas=30 * GWEI)
    assert bumped_fees(old, 5, cap_wei=1_000 * GWEI) == Fees(110 * GWEI, 33 * GWEI)
    assert MIN_BUMP_PCT == 10


def test_the_max_fee_stops_at_the_cap_while_a_ten_percent_bump_fits() -> None:
    old = Fees(max_fee_per_gas=100 * GWEI, max_priority_fee_per_gas=30 * GWEI)
    assert bumped_fees(old, 50, cap_wei=120 * GWEI) == Fees(120 * GWEI, 45 * GWEI)


def test_no_replacement_when_the_cap_leaves_less_than_ten_percent() -> None:
    old = Fees(max_fee_per_gas=100 * GWEI, max_priority_fee_per_gas=30 * GWEI)
    assert bumped_fees(old, 15, cap_wei=109 * GWEI) is None
    assert bumped_fees(old, 15, cap_wei=90 * GWEI) is None  # the cap was lowered meanwhile


def test_the_tip_never_exceeds_the_max_fee() -> None:
    # The tip already was the whole max fee: capping the max fee caps the tip with it (both
    # still rise at least 10%).
    old = Fees(max_fee_per_gas=100 * GWEI, max_priority_fee_per_gas=100 * GWEI)
    assert bumped_fees(old, 15, cap_wei=111 * GWEI) == Fees(111 * GWEI, 111 * GWEI)
    old = Fees(max_fee_per_gas=100 * GWEI, max_priority_fee_per_gas=99 * GWEI)
    assert bumped_fees(old, 15, cap_wei=110 * GWEI) == Fees(110 * GWEI, 110 * GWEI)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("replacement transaction underpriced", "underpriced"),
        ("{'code': -32003, 'message': 'replacement transaction underpriced'}", "underpriced"),
        ("transaction underpriced", "underpriced"),
        ("nonce too low", "nonce_too_low"),
        ("already known", "already_known"),
        ("insufficient funds for gas * price + value", "other"),
    ],
)
def test_rpc_errors_are_classified(message: str, kind: str) -> None:
    assert rpc_error_kind(message) == kind
