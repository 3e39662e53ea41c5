"""The monitor's reading of a treasury Safe execution's receipt (`svc_monitor.vault_items.
item_outcomes`): an item is taken as paid only when a vault `PayoutExecuted` in the receipt
covers its payout number. A Safe transaction with `safeTxGas` or `gasPrice` set emits
`ExecutionFailure` (status 1) when the vault's call fails; its items are FAILED, never paid.
The transactions the processor builds keep both 0 (the Safe reverts instead, GS013), so this
is the guard for a receipt that should not happen (tests/chain/test_safe_treasury.py shows
both behaviours of the contract)."""

from __future__ import annotations

from typing import Any

from svc_monitor.receipts import Receipt
from svc_monitor.rows import PayoutRow
from svc_monitor.vault_items import NOT_RUN_REASON, Outcome, item_outcomes
from withdrawal_shared.chain.payout import PAYMENT_SKIPPED_TOPIC, PAYOUT_EXECUTED_TOPIC
from withdrawal_shared.chain.safe_tx import EXECUTION_FAILURE_TOPIC, EXECUTION_SUCCESS_TOPIC

SAFE = "0x" + "5a" * 20
VAULT = "0x" + "7a" * 20
TOKEN = "0x" + "3c" * 20
SAFE_TX_HASH = "0x" + "ab" * 32


def _word(value: int) -> str:
    return value.to_bytes(32, "big").hex()


def _executed(first: int, count: int, paid: int, total: int) -> dict[str, Any]:
    return {
        "address": VAULT,
        "topics": [PAYOUT_EXECUTED_TOPIC, "0x" + "00" * 12 + TOKEN[2:]],
        "data": "0x" + _word(first) + _word(count) + _word(paid) + _word(total),
    }


def _skipped(number: int) -> dict[str, Any]:
    return {"address": VAULT, "topics": [PAYMENT_SKIPPED_TOPIC, "0x" + _word(number)], "data": "0x"}


def _safe_event(topic: str) -> dict[str, Any]:
    return {"address": SAFE, "topics": [topic, SAFE_TX_HASH], "data": "0x" + _word(0)}


def _receipt(*logs: dict[str, Any]) -> Receipt:
    return Receipt(1, "0x" + "11" * 32, 90_000, 1, 1, list(logs))


def _row(kind: str) -> PayoutRow:
    return PayoutRow("p1", "0x" + "22" * 32, None, None, None, kind=kind, to_address=SAFE)


def test_a_safe_execution_that_ran_the_vault_call_paid_its_item() -> None:
    receipt = _receipt(_executed(7, 1, 1, 150), _safe_event(EXECUTION_SUCCESS_TOPIC))
    assert item_outcomes(_row("safe_exec"), receipt, VAULT, [7]) == {}


def test_a_safe_execution_failure_pays_nothing() -> None:
    receipt = _receipt(_safe_event(EXECUTION_FAILURE_TOPIC))
    assert item_outcomes(_row("safe_exec"), receipt, VAULT, [7]) == {
        7: (Outcome.FAILED, NOT_RUN_REASON)
    }


def test_an_item_outside_every_payout_executed_range_is_not_paid() -> None:
    receipt = _receipt(_executed(7, 1, 0, 0), _skipped(7), _safe_event(EXECUTION_SUCCESS_TOPIC))
    assert item_outcomes(_row("safe_exec"), receipt, VAULT, [7, 9]) == {
        7: (Outcome.SKIPPED, "already paid"),
        9: (Outcome.FAILED, NOT_RUN_REASON),
    }


def test_a_hot_wallet_vault_payout_is_read_as_before() -> None:
    row = PayoutRow("p2", "0x" + "33" * 32, None, None, None, kind="vault", to_address=VAULT)
    assert item_outcomes(row, _receipt(_executed(7, 2, 2, 300)), None, [7, 8]) == {}
