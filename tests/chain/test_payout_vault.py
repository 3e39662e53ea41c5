"""The payout contract on a real anvil, and its Python calldata / event codec."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import TxParams, TxReceipt

from devstack.anvil import AnvilProcess, mine, rpc
from devstack.stablecoin import deploy_test_stablecoin
from devstack.transactions import TransactionReverted, deploy_contract, send_transaction
from devstack.vault import (
    deploy_payout_vault,
    fund_vault,
    pause_vault,
    send_payout,
    set_operator,
    set_outflow_cap,
    sweep,
    unpause_vault,
)
from withdrawal_shared.chain.contracts import (
    BUILD_DIR,
    balance_of,
    load_artifact,
    stablecoin_contract,
)
from withdrawal_shared.chain.erc20 import TRANSFER_TOPIC, CalldataError
from withdrawal_shared.chain.payout import (
    OUTFLOW_CAP_REASON,
    PAYMENT_FAILED_TOPIC,
    PAYMENT_SKIPPED_TOPIC,
    PAYOUT_EXECUTED_TOPIC,
    PAYOUT_SELECTOR,
    PAYOUT_VAULT,
    TRANSFER_RETURNED_FALSE_REASON,
    EventDecodeError,
    FailedPayment,
    Payment,
    PayoutEvents,
    PayoutExecuted,
    decode_payout,
    decode_payout_events,
    encode_payout,
    is_paid,
    payout_calldata_length,
    payout_vault_contract,
    remaining_outflow,
)
from withdrawal_shared.chain.types import BaseUnits, ChecksumAddress, HexStr, PrivateKey

ONE_USDC = 1_000_000
chain = pytest.mark.chain  # the tests that need anvil
TEST_BUILD_DIR = BUILD_DIR / "test"


# -- helpers ---------------------------------------------------------------------------------


def _recipient(tag: str, index: int) -> str:
    """A deterministic fresh address (never touched before), lowercase."""
    return "0x" + Web3.keccak(text=f"payout-test/{tag}/{index}")[-20:].hex()


def _checksum(address: str) -> ChecksumAddress:
    return Web3.to_checksum_address(address)


def _transact(w3: Web3, key: PrivateKey, function: ContractFunction) -> TxReceipt:
    tx: TxParams = {"to": function.address, "data": HexStr(function._encode_transaction_data())}
    return send_transaction(w3, key, tx, abi=function.contract_abi)


def _balance(w3: Web3, token: ChecksumAddress, holder: str) -> int:
    return int(balance_of(w3, token, _checksum(holder)))


@dataclass(frozen=True)
class Vault:
    address: ChecksumAddress
    token: ChecksumAddress
    owner_key: PrivateKey
    operator_key: PrivateKey
    operator: ChecksumAddress


@pytest.fixture
def vault(w3: Web3, anvil: AnvilProcess) -> Vault:
    """A vault owned by account 0, operated by account 1, holding 1,000,000 test USDC."""
    owner, operator = anvil.accounts[0], anvil.accounts[1]
    token = deploy_test_stablecoin(w3, owner.private_key)
    address = deploy_payout_vault(w3, owner.private_key, owner.address)
    set_operator(w3, address, owner.private_key, operator.address)
    fund_vault(
        w3, token, owner.private_key, address, BaseUnits(1_000_000 * ONE_USDC), mint_new=True
    )
    return Vault(address, token, owner.private_key, operator.private_key, operator.address)


def _pay(
    w3: Web3, vault: Vault, payments: Sequence[Payment], token: str | None = None
) -> tuple[TxReceipt, PayoutEvents]:
    receipt = send_payout(w3, vault.address, vault.operator_key, token or vault.token, payments)
    return receipt, decode_payout_events(receipt["logs"], vault.address)


def _deploy_test_token(w3: Web3, key: PrivateKey, name: str) -> ChecksumAddress:
    return deploy_contract(w3, key, load_artifact(name, TEST_BUILD_DIR))


def _token_contract(w3: Web3, token: ChecksumAddress, name: str) -> Any:
    return w3.eth.contract(address=token, abi=load_artifact(name, TEST_BUILD_DIR).abi)


# -- paying ----------------------------------------------------------------------------------


@chain
def test_pays_many_recipients_in_one_transaction(w3: Web3, vault: Vault) -> None:
    payments = [Payment(1000 + i, _recipient("many", i), (i + 1) * ONE_USDC) for i in range(25)]
    before = _balance(w3, vault.token, vault.address)
    receipt, events = _pay(w3, vault, payments)

    for payment in payments:
        assert _balance(w3, vault.token, payment.recipient) == payment.amount
        assert is_paid(w3, vault.address, payment.number)
    total = sum(p.amount for p in payments)
    assert _balance(w3, vault.token, vault.address) == before - total
    assert events.executed == [
        PayoutExecuted(
            token=vault.token.lower(),
            first_number=1000,
            count=25,
            paid=25,
            total_amount=total,
            log_index=events.executed[0].log_index,
        )
    ]
    assert events.skipped == [] and events.failed == []
    # One Transfer per payment from the vault (the monitor's recipients and amounts), then one
    # PayoutExecuted; nothing else.
    transfers = [log for log in receipt["logs"] if log["topics"][0].to_0x_hex() == TRANSFER_TOPIC]
    assert len(transfers) == 25 and len(receipt["logs"]) == 26
    assert not is_paid(w3, vault.address, 999) and not is_paid(w3, vault.address, 1025)
    # Consecutive numbers share bitmap slots: 1000..1024 are bits 232..255 of slot 3 and 0 of 4.
    bitmap = payout_vault_contract(w3, vault.address).functions.paidBitmap
    assert bitmap(3).call() == ((1 << 256) - 1) ^ ((1 << 232) - 1)
    assert bitmap(4).call() == 1


@chain
def test_only_operators_may_pay(w3: Web3, anvil: AnvilProcess, vault: Vault) -> None:
    payments = [Payment(1, _recipient("op", 0), ONE_USDC)]
    for outsider in (anvil.accounts[2], anvil.accounts[0]):  # a stranger, and even the owner
        with pytest.raises(TransactionReverted) as caught:
            send_payout(w3, vault.address, outsider.private_key, vault.token, payments)
        assert caught.value.reason == f"NotOperator({outsider.address})"
    # On chain (fixed gas, no estimation) it reverts too.
    with pytest.raises(TransactionReverted) as mined:
        send_payout(
            w3, vault.address, anvil.accounts[2].private_key, vault.token, payments, gas=200_000
        )
    assert mined.value.receipt is not None and mined.value.receipt["status"] == 0

    contract = payout_vault_contract(w3, vault.address)
    assert contract.functions.operators(vault.operator).call()
    receipt = set_operator(w3, vault.address, vault.owner_key, vault.operator, False)
    assert len(receipt["logs"]) == 1  # OperatorSet(operator, false)
    assert not contract.functions.operators(vault.operator).call()
    with pytest.raises(TransactionReverted, match="NotOperator"):
        send_payout(w3, vault.address, vault.operator_key, vault.token, payments)
    with pytest.raises(TransactionReverted, match="OwnableUnauthorizedAccount"):
        set_operator(w3, vault.address, vault.operator_key, vault.operator, True)
    assert _balance(w3, vault.token, payments[0].recipient) == 0
    assert not is_paid(w3, vault.address, 1)


@chain
def test_paused_vault_reverts_until_unpaused(w3: Web3, vault: Vault) -> None:
    payments = [Payment(7, _recipient("pause", 0), ONE_USDC)]
    with pytest.raises(TransactionReverted, match="OwnableUnauthorizedAccount"):
        pause_vault(w3, vault.address, vault.operator_key)
    pause_vault(w3, vault.address, vault.owner_key)
    with pytest.raises(TransactionReverted) as caught:
        send_payout(w3, vault.address, vault.operator_key, vault.token, payments)
    assert caught.value.reason == "EnforcedPause()"
    assert not is_paid(w3, vault.address, 7)

    unpause_vault(w3, vault.address, vault.owner_key)
    _pay(w3, vault, payments)
    assert _balance(w3, vault.token, payments[0].recipient) == ONE_USDC


@chain
def test_a_number_already_paid_is_skipped_never_paid_twice(w3: Web3, vault: Vault) -> None:
    payments = [Payment(500 + i, _recipient("twice", i), 10 * ONE_USDC) for i in range(3)]
    _pay(w3, vault, payments)

    # The same transaction again (e.g. re-sent after a lost receipt): every item is skipped.
    receipt, events = _pay(w3, vault, payments)
    assert events.skipped == [500, 501, 502]
    assert events.failed == []
    assert [(e.count, e.paid, e.total_amount) for e in events.executed] == [(3, 0, 0)]
    assert not [log for log in receipt["logs"] if log["topics"][0].to_0x_hex() == TRANSFER_TOPIC]
    for payment in payments:
        assert _balance(w3, vault.token, payment.recipient) == 10 * ONE_USDC

    # A payout whose range partly overlaps an earlier one pays only the numbers not paid yet.
    overlap = [Payment(501 + i, _recipient("overlap", i), ONE_USDC) for i in range(5)]
    receipt, events = _pay(w3, vault, overlap)
    assert events.skipped == [501, 502] and events.failed == []
    assert [(e.first_number, e.count, e.paid) for e in events.executed] == [(501, 5, 3)]
    assert [_balance(w3, vault.token, p.recipient) for p in overlap] == [0, 0] + [ONE_USDC] * 3
    assert all(is_paid(w3, vault.address, n) for n in range(500, 506))
    assert not is_paid(w3, vault.address, 506)
    transfers = [log for log in receipt["logs"] if log["topics"][0].to_0x_hex() == TRANSFER_TOPIC]
    assert len(transfers) == 3


@chain
def test_skips_across_bitmap_slots(w3: Web3, vault: Vault) -> None:
    """Numbers paid earlier on both sides of a slot boundary (255 | 256) are skipped; the cached
    bitmap words of both slots are written back with the old and the new bits."""
    _pay(w3, vault, [Payment(254 + i, _recipient("slots-earlier", i), ONE_USDC) for i in range(4)])
    _pay(w3, vault, [Payment(520, _recipient("slots-earlier", 9), ONE_USDC)])
    payments = [Payment(250 + i, _recipient("slots", i), ONE_USDC) for i in range(300)]
    receipt, events = _pay(w3, vault, payments)
    assert events.skipped == [254, 255, 256, 257, 520] and events.failed == []
    assert [(e.first_number, e.count, e.paid) for e in events.executed] == [(250, 300, 295)]
    bitmap = payout_vault_contract(w3, vault.address).functions.paidBitmap
    assert bitmap(0).call() == ((1 << 256) - 1) ^ ((1 << 250) - 1)
    assert bitmap(1).call() == (1 << 256) - 1
    assert bitmap(2).call() == (1 << (550 - 512)) - 1
    assert bitmap(3).call() == 0
    assert not is_paid(w3, vault.address, 249) and not is_paid(w3, vault.address, 550)
    for payment in payments:
        expected = 0 if payment.number in (254, 255, 256, 257, 520) else ONE_USDC
        assert _balance(w3, vault.token, payment.recipient) == expected
    transfers = [log for log in receipt["logs"] if log["topics"][0].to_0x_hex() == TRANSFER_TOPIC]
    assert len(transfers) == 295


@chain
def test_blacklisted_recipient_fails_alone_and_can_be_retried(
    w3: Web3, anvil: AnvilProcess, vault: Vault
) -> None:
    owner_key = anvil.accounts[0].private_key
    token = _deploy_test_token(w3, owner_key, "BlacklistToken")
    contract = _token_contract(w3, token, "BlacklistToken")
    _transact(w3, owner_key, contract.functions.mint(vault.address, 1_000 * ONE_USDC))
    bad = _recipient("blacklist", 1)
    _transact(w3, owner_key, contract.functions.setBlacklisted(_checksum(bad), True))

    payments = [Payment(70 + i, _recipient("blacklist", i), (i + 1) * ONE_USDC) for i in range(3)]
    _, events = _pay(w3, vault, payments, token)
    assert _balance(w3, token, payments[0].recipient) == ONE_USDC
    assert _balance(w3, token, bad) == 0
    assert _balance(w3, token, payments[2].recipient) == 3 * ONE_USDC
    assert [is_paid(w3, vault.address, n) for n in (70, 71, 72)] == [True, False, True]
    # The reason is the token's revert data: RecipientBlacklisted(bad).
    selector = Web3.keccak(text="RecipientBlacklisted(address)")[:4]
    assert events.failed == [FailedPayment(71, selector + bytes(12) + bytes.fromhex(bad[2:]))]
    assert [(e.count, e.paid, e.total_amount) for e in events.executed] == [(3, 2, 4 * ONE_USDC)]

    # After un-blacklisting, the same payout pays only the missing item.
    _transact(w3, owner_key, contract.functions.setBlacklisted(_checksum(bad), False))
    _, events = _pay(w3, vault, payments, token)
    assert events.skipped == [70, 72] and events.failed == []
    assert _balance(w3, token, bad) == 2 * ONE_USDC
    assert _balance(w3, token, payments[0].recipient) == ONE_USDC
    assert is_paid(w3, vault.address, 71)


@chain
def test_false_returning_token_item_fails_alone(
    w3: Web3, anvil: AnvilProcess, vault: Vault
) -> None:
    key = anvil.accounts[0].private_key
    token = _deploy_test_token(w3, key, "FalseReturningToken")
    contract = _token_contract(w3, token, "FalseReturningToken")
    _transact(w3, key, contract.functions.mint(vault.address, 1_000 * ONE_USDC))
    _transact(w3, key, contract.functions.setTransferLimit(50 * ONE_USDC))
    flagged = _recipient("false", 3)
    _transact(w3, key, contract.functions.setFlagged(_checksum(flagged), True))

    payments = [
        Payment(1, _recipient("false", 0), 10 * ONE_USDC),
        Payment(2, _recipient("false", 1), 60 * ONE_USDC),  # above the limit: returns false
        Payment(3, _recipient("false", 2), 50 * ONE_USDC),
        Payment(4, flagged, ONE_USDC),  # flagged: returns false
    ]
    _, events = _pay(w3, vault, payments, token)
    assert events.failed == [
        FailedPayment(2, TRANSFER_RETURNED_FALSE_REASON),
        FailedPayment(4, TRANSFER_RETURNED_FALSE_REASON),
    ]
    assert [is_paid(w3, vault.address, n) for n in (1, 2, 3, 4)] == [True, False, True, False]
    assert _balance(w3, token, payments[0].recipient) == 10 * ONE_USDC
    assert _balance(w3, token, payments[1].recipient) == 0
    assert _balance(w3, token, payments[2].recipient) == 50 * ONE_USDC
    assert _balance(w3, token, vault.address) == 940 * ONE_USDC


@chain
def test_a_paused_token_fails_every_item_with_its_revert_data(
    w3: Web3, anvil: AnvilProcess, vault: Vault
) -> None:
    owner_key = anvil.accounts[0].private_key
    _transact(w3, owner_key, stablecoin_contract(w3, vault.token).functions.pause())
    payments = [Payment(40 + i, _recipient("paused", i), ONE_USDC) for i in range(2)]
    _, events = _pay(w3, vault, payments)
    enforced_pause = bytes(Web3.keccak(text="EnforcedPause()")[:4])
    assert events.failed == [FailedPayment(40, enforced_pause), FailedPayment(41, enforced_pause)]
    assert [(e.count, e.paid, e.total_amount) for e in events.executed] == [(2, 0, 0)]
    assert not is_paid(w3, vault.address, 40) and not is_paid(w3, vault.address, 41)


@chain
def test_oversized_revert_data_is_truncated_to_256_bytes(
    w3: Web3, anvil: AnvilProcess, vault: Vault
) -> None:
    key = anvil.accounts[0].private_key
    token = _deploy_test_token(w3, key, "FalseReturningToken")
    contract = _token_contract(w3, token, "FalseReturningToken")
    _transact(w3, key, contract.functions.mint(vault.address, 1_000 * ONE_USDC))
    long_reason = bytes(range(256)) * 4 + b"tail"
    _transact(w3, key, contract.functions.setRevertData(long_reason))
    _, events = _pay(w3, vault, [Payment(8, _recipient("long", 0), ONE_USDC)], token)
    assert events.failed == [FailedPayment(8, long_reason[:256])]
    _transact(w3, key, contract.functions.setRevertData(b"\x01" * 33))
    _, events = _pay(w3, vault, [Payment(8, _recipient("long", 0), ONE_USDC)], token)
    assert events.failed == [FailedPayment(8, b"\x01" * 33)]
    assert not is_paid(w3, vault.address, 8)


@chain
def test_outflow_cap_limits_each_window(w3: Web3, vault: Vault) -> None:
    contract = payout_vault_contract(w3, vault.address)
    with pytest.raises(TransactionReverted, match="OwnableUnauthorizedAccount"):
        set_outflow_cap(w3, vault.address, vault.operator_key, vault.token, BaseUnits(1), 60)
    with pytest.raises(TransactionReverted, match="InvalidOutflowCap"):
        set_outflow_cap(w3, vault.address, vault.owner_key, vault.token, BaseUnits(1), 0)
    assert remaining_outflow(w3, vault.address, vault.token) == 2**256 - 1
    window = 3600
    set_outflow_cap(
        w3, vault.address, vault.owner_key, vault.token, BaseUnits(100 * ONE_USDC), window
    )
    assert contract.functions.outflowCaps(vault.token).call() == [100 * ONE_USDC, window]
    # Start at the beginning of a window so the payout and its retry cannot straddle two.
    now = w3.eth.get_block("latest")["timestamp"]
    rpc(w3, "evm_setNextBlockTimestamp", [(now // window + 1) * window])
    mine(w3)

    payments = [Payment(900 + i, _recipient("cap", i), 40 * ONE_USDC) for i in range(4)]
    _, events = _pay(w3, vault, payments)
    assert [is_paid(w3, vault.address, p.number) for p in payments] == [True, True, False, False]
    assert events.failed == [
        FailedPayment(902, OUTFLOW_CAP_REASON),
        FailedPayment(903, OUTFLOW_CAP_REASON),
    ]
    assert remaining_outflow(w3, vault.address, vault.token) == 20 * ONE_USDC
    # Within the same window a small item still fits, the big ones still do not.
    _, events = _pay(w3, vault, [*payments, Payment(904, _recipient("cap", 4), 20 * ONE_USDC)])
    assert events.skipped == [900, 901]
    assert [f.number for f in events.failed] == [902, 903]
    assert is_paid(w3, vault.address, 904)
    assert remaining_outflow(w3, vault.address, vault.token) == 0

    # The next window allows the rest.
    rpc(w3, "evm_increaseTime", [window])
    mine(w3)
    assert remaining_outflow(w3, vault.address, vault.token) == 100 * ONE_USDC
    _, events = _pay(w3, vault, payments)
    assert events.skipped == [900, 901] and events.failed == []
    assert all(_balance(w3, vault.token, p.recipient) == 40 * ONE_USDC for p in payments)
    assert remaining_outflow(w3, vault.address, vault.token) == 20 * ONE_USDC

    # Cap 0 removes the cap.
    set_outflow_cap(w3, vault.address, vault.owner_key, vault.token, BaseUnits(0), 0)
    _pay(w3, vault, [Payment(990, _recipient("cap", 90), 500 * ONE_USDC)])
    assert _balance(w3, vault.token, _recipient("cap", 90)) == 500 * ONE_USDC


@chain
def test_sweep_by_owner_only(w3: Web3, anvil: AnvilProcess, vault: Vault) -> None:
    treasury = anvil.accounts[5].address
    for intruder in (anvil.accounts[2], anvil.accounts[1]):  # a stranger and the operator
        with pytest.raises(TransactionReverted) as caught:
            sweep(w3, vault.address, intruder.private_key, vault.token, treasury, BaseUnits(1))
        assert caught.value.reason == f"OwnableUnauthorizedAccount({intruder.address})"
    receipt = sweep(
        w3, vault.address, vault.owner_key, vault.token, treasury, BaseUnits(400_000 * ONE_USDC)
    )
    assert _balance(w3, vault.token, treasury) == 400_000 * ONE_USDC
    assert _balance(w3, vault.token, vault.address) == 600_000 * ONE_USDC
    swept = (
        payout_vault_contract(w3, vault.address)
        .events.Swept()
        .process_receipt(receipt, errors=DISCARD)
    )
    assert swept[0]["args"]["amount"] == 400_000 * ONE_USDC
    assert swept[0]["args"]["to"] == treasury
    with pytest.raises(TransactionReverted, match="RenounceOwnershipDisabled"):
        _transact(
            w3,
            vault.owner_key,
            payout_vault_contract(w3, vault.address).functions.renounceOwnership(),
        )


@chain
def test_malformed_payouts_revert(w3: Web3, anvil: AnvilProcess, vault: Vault) -> None:
    def raw(data: bytes) -> TxParams:
        return {"to": vault.address, "data": HexStr("0x" + (PAYOUT_SELECTOR + data).hex())}

    def encoded(first: int, words: list[int]) -> bytes:
        return abi_encode(["address", "uint64", "uint256[]"], [vault.token, first, words])

    recipient = int(_recipient("bad", 0), 16)
    top = 2**64 - 1
    cases = [
        (encoded(1, []), "InvalidPaymentCount(0)"),
        (encoded(top, [recipient, recipient]), f"PayoutNumberOverflow({top}, 2)"),
        (encoded(top - 2, [recipient] * 4), f"PayoutNumberOverflow({top - 2}, 4)"),
    ]
    for data, reason in cases:
        with pytest.raises(TransactionReverted) as caught:
            send_transaction(w3, vault.operator_key, raw(data), abi=_vault_abi())
        assert caught.value.reason == reason
    # Solidity's own ABI decoding rejects a firstNumber word above uint64 and an array that
    # runs past the end of the calldata (no custom error: empty revert data).
    good = encoded(1, [(1 << 160) | recipient])
    too_big_first = good[:32] + (2**64 + 1).to_bytes(32, "big") + good[64:]
    for data in (too_big_first, good[:-32], good[:96] + (2).to_bytes(32, "big") + good[128:]):
        with pytest.raises(TransactionReverted):
            send_transaction(w3, vault.operator_key, raw(data), abi=_vault_abi())
    assert not is_paid(w3, vault.address, 1)
    assert _balance(w3, vault.token, _recipient("bad", 0)) == 0
    # The highest numbers still fit: the last one is 2**64 - 1.
    _, events = _pay(w3, vault, [Payment(top - 1 + i, _recipient("bad", i), 1) for i in range(2)])
    assert [(e.first_number, e.count, e.paid) for e in events.executed] == [(top - 1, 2, 2)]
    assert is_paid(w3, vault.address, top - 1) and is_paid(w3, vault.address, top)
    eoa = anvil.accounts[7].address
    with pytest.raises(TransactionReverted) as caught:
        send_payout(w3, vault.address, vault.operator_key, eoa, [Payment(1, eoa.lower(), 1)])
    assert caught.value.reason == f"TokenNotContract({eoa})"


@chain
def test_amount_and_recipient_share_one_word(w3: Web3, anvil: AnvilProcess, vault: Vault) -> None:
    """The largest amount (2**96 - 1) and an all-ones recipient are unpacked exactly."""
    key = anvil.accounts[0].private_key
    token = _deploy_test_token(w3, key, "FalseReturningToken")
    contract = _token_contract(w3, token, "FalseReturningToken")
    _transact(w3, key, contract.functions.mint(vault.address, 2**97))
    ones = "0x" + "ff" * 20
    payments = [
        Payment(60, ones, 2**96 - 1),
        Payment(61, _recipient("word", 1), 1),
        Payment(62, _recipient("word", 2), 0),
    ]
    receipt, events = _pay(w3, vault, payments, token)
    assert [(e.count, e.paid, e.total_amount) for e in events.executed] == [(3, 3, 2**96)]
    assert _balance(w3, token, ones) == 2**96 - 1
    assert _balance(w3, token, _recipient("word", 1)) == 1
    assert _balance(w3, token, vault.address) == 2**97 - 2**96
    transfers = [log for log in receipt["logs"] if log["topics"][0].to_0x_hex() == TRANSFER_TOPIC]
    assert [int.from_bytes(bytes(log["data"]), "big") for log in transfers] == [2**96 - 1, 1, 0]


@chain
def test_too_little_gas_reverts_the_payout_instead_of_failing_items(w3: Web3, vault: Vault) -> None:
    """A transfer that runs out of gas must not be reported as a failed payment: at every gas
    limit the payout either pays everything or reverts as a whole (so a low limit, or
    eth_estimateGas's search for the lowest limit that does not revert, never fakes a failure)."""
    payments = [Payment(3100 + i, _recipient("oog", i), ONE_USDC) for i in range(40)]
    data = HexStr("0x" + encode_payout(vault.token, payments).hex())
    estimate = w3.eth.estimate_gas({"from": vault.operator, "to": vault.address, "data": data})
    outcomes = set()
    for gas in range(estimate - 60_000, estimate + 1, 2_000):
        try:
            _, events = _pay_with_gas(w3, vault, payments, gas)
        except TransactionReverted as exc:
            assert exc.receipt is not None and exc.receipt["status"] == 0
            outcomes.add("reverted")
            continue
        assert events.failed == [], f"gas {gas}: {events.failed}"
        outcomes.add("paid")
        break
    assert outcomes == {"reverted", "paid"}
    assert all(is_paid(w3, vault.address, p.number) for p in payments)
    assert all(_balance(w3, vault.token, p.recipient) == ONE_USDC for p in payments)


def _pay_with_gas(
    w3: Web3, vault: Vault, payments: Sequence[Payment], gas: int
) -> tuple[TxReceipt, PayoutEvents]:
    receipt = send_payout(w3, vault.address, vault.operator_key, vault.token, payments, gas=gas)
    return receipt, decode_payout_events(receipt["logs"], vault.address)


def _vault_abi() -> Any:
    return load_artifact(PAYOUT_VAULT).abi


@chain
def test_event_topics_match_the_abi_and_decode_from_a_real_receipt(
    w3: Web3, anvil: AnvilProcess, vault: Vault
) -> None:
    events_abi = payout_vault_contract(w3, vault.address).events
    assert events_abi.PayoutExecuted().topic == PAYOUT_EXECUTED_TOPIC
    assert events_abi.PaymentSkipped().topic == PAYMENT_SKIPPED_TOPIC
    assert events_abi.PaymentFailed().topic == PAYMENT_FAILED_TOPIC

    top = 2**64 - 1
    _pay(w3, vault, [Payment(top - 2, _recipient("ev", 0), ONE_USDC)])
    owner_key = anvil.accounts[0].private_key
    _transact(w3, owner_key, stablecoin_contract(w3, vault.token).functions.mint(vault.address, 1))
    payments = [
        Payment(top - 2, _recipient("ev", 0), ONE_USDC),  # already paid: skipped
        Payment(top - 1, _recipient("ev", 1), 2 * ONE_USDC),
        Payment(top, _recipient("ev", 2), 2**96 - 1),  # more than the vault holds: reverts
    ]
    receipt, events = _pay(w3, vault, payments)
    assert events.skipped == [top - 2]
    assert [f.number for f in events.failed] == [top]
    insufficient = Web3.keccak(text="ERC20InsufficientBalance(address,uint256,uint256)")[:4]
    assert events.failed[0].reason.startswith(insufficient)
    (executed,) = events.executed
    assert (executed.first_number, executed.count, executed.paid) == (top - 2, 3, 1)
    assert executed.total_amount == 2 * ONE_USDC and executed.token == vault.token.lower()
    assert executed.log_index == receipt["logs"][-1]["logIndex"]

    # The same decoding from raw JSON-RPC logs (hex strings), as the monitor may hold them.
    raw = rpc(w3, "eth_getTransactionReceipt", [receipt["transactionHash"].to_0x_hex()])
    assert decode_payout_events(raw["logs"], vault.address.lower()) == events
    # Logs of another address are ignored; a vault log with a known topic but a bad shape is not.
    assert decode_payout_events(raw["logs"], vault.token) == decode_payout_events([], vault.token)
    broken = dict(raw["logs"][-1], data="0x00")
    with pytest.raises(EventDecodeError):
        decode_payout_events([broken], vault.address)


# -- the Python codec ------------------------------------------------------------------------

addresses = st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex())
items = st.lists(
    st.tuples(addresses, st.integers(0, 2**96 - 1)), min_size=1, max_size=40
)  # (recipient, amount)


@st.composite
def payouts(draw: st.DrawFn) -> list[Payment]:
    """Payments with consecutive numbers, the last one at most 2**64 - 1."""
    pairs = draw(items)
    first = draw(
        st.one_of(
            st.integers(0, 2**64 - len(pairs)),
            st.just(2**64 - len(pairs)),  # ends exactly at the highest number
        )
    )
    return [Payment(first + i, recipient, amount) for i, (recipient, amount) in enumerate(pairs)]


@given(token=addresses, payments=payouts())
def test_encode_decode_round_trip_matches_the_abi(token: str, payments: list[Payment]) -> None:
    mixed_case_token = Web3.to_checksum_address(token)
    data = encode_payout(mixed_case_token, payments)
    assert len(data) == payout_calldata_length(len(payments))
    words = [(p.amount << 160) | int(p.recipient, 16) for p in payments]
    expected = abi_encode(["address", "uint64", "uint256[]"], [token, payments[0].number, words])
    assert data == PAYOUT_SELECTOR + expected
    assert decode_payout(data) == (token, payments)


def test_selector_matches_the_abi() -> None:
    assert Web3.keccak(text="payout(address,uint64,uint256[])")[:4] == PAYOUT_SELECTOR
    (function,) = [item for item in _vault_abi() if item.get("name") == "payout"]
    assert [arg["type"] for arg in function["inputs"]] == ["address", "uint64", "uint256[]"]


def _words(data: bytes) -> list[bytes]:
    return [data[i : i + 32] for i in range(4, len(data), 32)]


def _join(words: list[bytes]) -> bytes:
    return PAYOUT_SELECTOR + b"".join(words)


def _int_word(value: int) -> bytes:
    return value.to_bytes(32, "big")


GOOD = encode_payout(
    "0x" + "ab" * 20,
    [Payment(1, "0x" + "11" * 20, 5), Payment(2, "0x" + "22" * 20, 6)],
)
W = _words(GOOD)  # token, firstNumber, offset, length, payment 0, payment 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty calldata"),
        (bytes.fromhex("a9059cbb") + GOOD[4:], "0xa9059cbb"),
        # The old two-words-per-payment layout is another function.
        (Web3.keccak(text="payout(address,uint256[])")[:4] + GOOD[4:], "selector"),
        (GOOD[:-1], "plus 32 per payment"),
        (GOOD + b"\0", "plus 32 per payment"),
        (GOOD + bytes(32), "claims 2 words but the calldata holds 3"),
        (GOOD[:-32], "claims 2 words but the calldata holds 1"),
        (GOOD[:68], "plus 32 per payment"),
        (PAYOUT_SELECTOR + GOOD[4:100], "plus 32 per payment"),
        (_join([*W[:3], _int_word(0)]), "array is empty"),
        (_join([*W[:3], _int_word(3), *W[4:]]), "claims 3 words"),
        (_join([*W[:3], _int_word(2**255), *W[4:]]), "claims"),
        (_join([b"\x01" + W[0][1:], *W[1:]]), "token word"),
        (_join([W[0], _int_word(2**64), *W[2:]]), "firstNumber 18446744073709551616 is not"),
        (_join([W[0], b"\x01" + W[1][1:], *W[2:]]), "is not a uint64"),
        (_join([W[0], _int_word(2**64 - 1), *W[2:]]), "overflows"),
        (_join([W[0], _int_word(2**64 - 2), W[2], _int_word(3), *W[4:], W[5]]), "overflows"),
        (_join([W[0], W[1], _int_word(0x80), *W[3:]]), "offset 0x60"),
        (_join([W[0], W[1], _int_word(0x40), *W[3:]]), "offset 0x60"),
        (_join([W[0], W[1], _int_word(0x20), *W[3:]]), "offset 0x60"),
    ],
)
def test_decode_rejects_malformed_calldata(data: bytes, message: str) -> None:
    with pytest.raises(CalldataError, match=message):
        decode_payout(data)


def test_decode_reconstructs_numbers_and_unpacks_words() -> None:
    top = 2**64 - 1
    words = [(2**96 - 1) << 160 | (2**160 - 1), 7 << 160, 0]
    data = PAYOUT_SELECTOR + abi_encode(
        ["address", "uint64", "uint256[]"], ["0x" + "cd" * 20, top - 2, words]
    )
    assert decode_payout(data) == (
        "0x" + "cd" * 20,
        [
            Payment(top - 2, "0x" + "ff" * 20, 2**96 - 1),
            Payment(top - 1, "0x" + "00" * 20, 7),
            Payment(top, "0x" + "00" * 20, 0),
        ],
    )


def test_decode_of_the_canonical_sample() -> None:
    token, payments = decode_payout(GOOD)
    assert token == "0x" + "ab" * 20
    assert payments == [Payment(1, "0x" + "11" * 20, 5), Payment(2, "0x" + "22" * 20, 6)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"number": -1}, "uint64"),
        ({"number": 2**64}, "uint64"),
        ({"amount": -1}, "uint256"),
        ({"amount": 2**256}, "uint256"),
        ({"recipient": "0x" + "AB" * 20}, "lowercase"),
        ({"recipient": "ab" * 20}, "lowercase"),
        ({"recipient": "0x" + "ab" * 19}, "lowercase"),
    ],
)
def test_payment_validation(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"number": 1, "recipient": "0x" + "ab" * 20, "amount": 1}
    with pytest.raises(CalldataError, match=message):
        Payment(**(fields | kwargs))


def test_encode_rejects_bad_token_and_empty_payouts() -> None:
    payment = Payment(1, "0x" + "ab" * 20, 1)
    with pytest.raises(CalldataError, match="at least one payment"):
        encode_payout("0x" + "ab" * 20, [])
    with pytest.raises(CalldataError, match="token"):
        encode_payout("0x" + "ab" * 19, [payment])
    with pytest.raises(CalldataError, match="token"):
        encode_payout("ab" * 20, [payment])


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ((5, 7), "payment 1 has number 7, not 6"),
        ((5, 4), "payment 1 has number 4, not 6"),
        ((5, 5), "payment 1 has number 5, not 6"),
        ((5, 6, 8), "payment 2 has number 8, not 7"),
    ],
)
def test_encode_requires_consecutive_ascending_numbers(
    numbers: tuple[int, ...], message: str
) -> None:
    payments = [Payment(n, "0x" + "ab" * 20, 1) for n in numbers]
    with pytest.raises(CalldataError, match=message):
        encode_payout("0x" + "ab" * 20, payments)


def test_encode_requires_amounts_below_2_96() -> None:
    recipient = "0x" + "ab" * 20
    top = encode_payout(recipient, [Payment(1, recipient, 2**96 - 1)])
    assert decode_payout(top)[1] == [Payment(1, recipient, 2**96 - 1)]
    for amount in (2**96, 2**256 - 1):
        with pytest.raises(CalldataError, match=r"payment 1: amount \d+ is not below 2\*\*96"):
            encode_payout(recipient, [Payment(1, recipient, 1), Payment(2, recipient, amount)])


def test_encode_rejects_non_payments() -> None:
    with pytest.raises(CalldataError, match="not a Payment"):
        encode_payout("0x" + "ab" * 20, [(1, "0x" + "ab" * 20, 1)])  # type: ignore[list-item]
