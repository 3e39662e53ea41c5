"""The payout contract (contracts/PayoutVault.sol): calldata, events and deployment helpers.

One payout transaction calls `payout(address token, uint64 firstNumber, uint256[] payments)` on
the vault from an operator (hot wallet). The payments carry consecutive payout numbers (unique
uint64 numbers per withdrawal): `payments[i]` has number `firstNumber + i` and is one word,
`amount << 160 | recipient` (so amounts are below 2**96). The vault skips numbers already paid
(`PaymentSkipped(number)`), isolates failing transfers (`PaymentFailed(number, reason)`, the
number stays unpaid) and emits one `PayoutExecuted(token, firstNumber, count, paid, totalAmount)`
per call.

- processor: `encode_payout(token, payments)` -> calldata (selector included); the payments'
  numbers must be consecutive and ascending.
- signer: `decode_payout(calldata)` -> `(token, payments)`, strict: anything but the canonical
  ABI encoding raises `CalldataError`.
- monitor: `decode_payout_events(receipt["logs"], vault)` -> `PayoutEvents`; paid items are the
  ones neither skipped nor failed (the token's `Transfer` logs carry recipient and amount).
- bootstrap and tests: `deploy_payout_vault`, `set_operator`, `fund_vault`, `send_payout`, ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from web3 import Web3
from web3.contract import Contract
from web3.types import TxParams, TxReceipt

from withdrawal_shared.chain.contracts import (
    DEFAULT_RECEIPT_TIMEOUT,
    balance_of,
    deploy_contract,
    load_artifact,
    mint,
    send_call,
    send_transaction,
    transfer,
)
from withdrawal_shared.chain.erc20 import CalldataError
from withdrawal_shared.chain.types import BaseUnits, ChecksumAddress, HexStr, PrivateKey

__all__ = [
    "MAX_PAYMENT_AMOUNT",
    "MAX_PAYOUT_NUMBER",
    "OUTFLOW_CAP_REASON",
    "PAYMENT_FAILED_TOPIC",
    "PAYMENT_SKIPPED_TOPIC",
    "PAYOUT_EXECUTED_TOPIC",
    "PAYOUT_SELECTOR",
    "PAYOUT_VAULT",
    "TRANSFER_RETURNED_FALSE_REASON",
    "EventDecodeError",
    "FailedPayment",
    "Payment",
    "PayoutEvents",
    "PayoutExecuted",
    "decode_payout",
    "decode_payout_events",
    "deploy_payout_vault",
    "encode_payout",
    "fund_vault",
    "is_paid",
    "pause_vault",
    "payout_calldata_length",
    "payout_vault_contract",
    "remaining_outflow",
    "send_payout",
    "set_operator",
    "set_outflow_cap",
    "sweep",
    "unpause_vault",
]

PAYOUT_VAULT = "PayoutVault"

PAYOUT_SELECTOR = bytes(Web3.keccak(text="payout(address,uint64,uint256[])")[:4])
PAYOUT_EXECUTED_TOPIC = (
    "0x" + Web3.keccak(text="PayoutExecuted(address,uint64,uint32,uint32,uint256)").hex()
)
PAYMENT_SKIPPED_TOPIC = "0x" + Web3.keccak(text="PaymentSkipped(uint64)").hex()
PAYMENT_FAILED_TOPIC = "0x" + Web3.keccak(text="PaymentFailed(uint64,bytes)").hex()

MAX_PAYOUT_NUMBER = 2**64 - 1
MAX_PAYMENT_AMOUNT = 2**96 - 1  # the amount shares its word with the recipient
MAX_PAYMENTS = 2**32 - 1  # PayoutExecuted.count is a uint32
OUTFLOW_CAP_REASON = b"OUTFLOW_CAP"
TRANSFER_RETURNED_FALSE_REASON = b"TRANSFER_RETURNED_FALSE"

_WORD = 32
_HEAD = 4 + 4 * _WORD  # selector, token, firstNumber, offset of the array, array length
_ARRAY_OFFSET = 3 * _WORD  # the array's data starts right after the three head words
_ADDRESS_MASK = 2**160 - 1
_LOWER_ADDRESS = re.compile(r"0x[0-9a-f]{40}")


@dataclass(frozen=True, slots=True)
class Payment:
    """One withdrawal in a payout transaction.

    `number` is the withdrawal's unique payout number (uint64), `recipient` a lowercase
    0x-address, `amount` token base units (uint256). Raises `CalldataError` otherwise.
    """

    number: int
    recipient: str
    amount: int

    def __post_init__(self) -> None:
        if isinstance(self.number, bool) or not 0 <= self.number <= MAX_PAYOUT_NUMBER:
            raise CalldataError(f"payout number {self.number!r} is not a uint64")
        if not isinstance(self.recipient, str) or not _LOWER_ADDRESS.fullmatch(self.recipient):
            raise CalldataError(
                f"recipient {self.recipient!r} is not a lowercase 0x-prefixed 20-byte address "
                "(pass address.lower())"
            )
        if isinstance(self.amount, bool) or not 0 <= self.amount < 2**256:
            raise CalldataError(f"amount {self.amount!r} is not a uint256")


def payout_calldata_length(payment_count: int) -> int:
    """Size in bytes of `payout` calldata carrying `payment_count` payments."""
    return _HEAD + _WORD * payment_count


def _address_bytes(address: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(address.removeprefix("0x"))
    except ValueError:
        raw = b""
    if not address.startswith("0x") or len(raw) != 20:
        raise CalldataError(f"{what} {address!r} is not a 0x-prefixed 20-byte address")
    return raw


def encode_payout(token: str, payments: Sequence[Payment]) -> bytes:
    """Calldata (selector included) of `payout(token, firstNumber, payments)` paying `payments`
    in order.

    The payments' numbers must be consecutive and ascending (the first one is `firstNumber`) and
    their amounts below 2**96; `CalldataError` otherwise.
    """
    token_raw = _address_bytes(token, "token")
    if not payments:
        raise CalldataError("a payout needs at least one payment")
    if len(payments) > MAX_PAYMENTS:
        raise CalldataError(f"a payout carries at most {MAX_PAYMENTS} payments")
    for payment in payments:
        if not isinstance(payment, Payment):
            raise CalldataError(f"not a Payment: {payment!r}")
    first = payments[0].number
    parts = [
        PAYOUT_SELECTOR,
        token_raw.rjust(_WORD, b"\0"),
        first.to_bytes(_WORD, "big"),
        _ARRAY_OFFSET.to_bytes(_WORD, "big"),
        len(payments).to_bytes(_WORD, "big"),
    ]
    for index, payment in enumerate(payments):
        if payment.number != first + index:
            raise CalldataError(
                f"payment {index} has number {payment.number}, not {first + index}: the numbers "
                "of one payout must be consecutive and ascending"
            )
        if payment.amount > MAX_PAYMENT_AMOUNT:
            raise CalldataError(f"payment {index}: amount {payment.amount} is not below 2**96")
        recipient = int(payment.recipient[2:], 16)
        parts.append(((payment.amount << 160) | recipient).to_bytes(_WORD, "big"))
    return b"".join(parts)


def decode_payout(data: bytes) -> tuple[str, list[Payment]]:
    """Decode canonically ABI-encoded `payout(address,uint64,uint256[])` calldata or raise
    CalldataError.

    Returns the token (lowercase 0x) and the payments in calldata order, payment i numbered
    `firstNumber + i`. Rejected: another selector, a token word with high bytes set, a
    firstNumber word above uint64, an array offset other than 0x60, an empty array, a length
    that does not match the calldata size exactly (no trailing bytes), a last number
    (`firstNumber + count - 1`) above uint64.
    """
    data = bytes(data)
    if len(data) < 4 or data[:4] != PAYOUT_SELECTOR:
        selector = "0x" + data[:4].hex() if data else "empty calldata"
        raise CalldataError(
            f"only payout(address,uint64,uint256[]) (selector 0x{PAYOUT_SELECTOR.hex()}) is "
            f"accepted, not {selector}"
        )
    if len(data) < _HEAD or (len(data) - _HEAD) % _WORD != 0:
        raise CalldataError(
            f"payout calldata is {_HEAD} bytes plus 32 per payment, not {len(data)} bytes"
        )
    words = [data[i : i + _WORD] for i in range(4, len(data), _WORD)]
    token_word, first_word, offset_word, length_word = words[:4]
    if any(token_word[:12]):
        raise CalldataError("the token word of the payout has non-zero high bytes")
    first = int.from_bytes(first_word, "big")
    if first > MAX_PAYOUT_NUMBER:
        raise CalldataError(f"firstNumber {first} is not a uint64")
    offset = int.from_bytes(offset_word, "big")
    if offset != _ARRAY_OFFSET:
        raise CalldataError(f"the payments array must start at offset 0x60, not {hex(offset)}")
    length = int.from_bytes(length_word, "big")
    if length == 0:
        raise CalldataError("the payments array is empty")
    if length != len(words) - 4:
        raise CalldataError(
            f"the payments array claims {length} words but the calldata holds {len(words) - 4}"
        )
    if first + length - 1 > MAX_PAYOUT_NUMBER:
        raise CalldataError(
            f"firstNumber {first} + {length} payments overflows the 64-bit payout numbers"
        )
    payments: list[Payment] = []
    for index, raw in enumerate(words[4:]):
        word = int.from_bytes(raw, "big")
        recipient = "0x" + (word & _ADDRESS_MASK).to_bytes(20, "big").hex()
        payments.append(Payment(number=first + index, recipient=recipient, amount=word >> 160))
    return "0x" + token_word[12:].hex(), payments


# -- events ----------------------------------------------------------------------------------


class EventDecodeError(ValueError):
    """A log from the vault does not have the shape its topic promises."""


@dataclass(frozen=True, slots=True)
class PayoutExecuted:
    """One `PayoutExecuted` event: `paid` of `count` payments paid, `total_amount` in all."""

    token: str  # lowercase 0x
    first_number: int
    count: int
    paid: int
    total_amount: int
    log_index: int | None = None


class FailedPayment(NamedTuple):
    """A `PaymentFailed` event: the number stays unpaid; `reason` is the token's revert data
    (possibly empty, at most 256 bytes), `TRANSFER_RETURNED_FALSE_REASON` or
    `OUTFLOW_CAP_REASON`."""

    number: int
    reason: bytes


@dataclass(slots=True)
class PayoutEvents:
    """The vault's events in one receipt, in log order."""

    executed: list[PayoutExecuted] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: list[FailedPayment] = field(default_factory=list)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    raise EventDecodeError(f"expected bytes or 0x-hex, got {type(value).__name__}")


def _uint(word: bytes, bits: int, what: str) -> int:
    value = int.from_bytes(word, "big")
    if value >> bits:
        raise EventDecodeError(f"{what} does not fit in uint{bits}")
    return value


def _log_index(log: Mapping[str, Any]) -> int | None:
    value = log.get("logIndex")
    if value is None:
        return None
    return int(value, 16) if isinstance(value, str) else int(value)


def decode_payout_events(
    receipt_logs: Sequence[Mapping[str, Any]], vault_address: str
) -> PayoutEvents:
    """Pick the vault's PayoutExecuted / PaymentSkipped / PaymentFailed events out of a receipt.

    `receipt_logs` is `receipt["logs"]` as web3 returns it (or raw JSON-RPC logs with hex
    strings). Logs of other addresses (the token's `Transfer`s) and other vault events are
    ignored; a vault log with one of these topics but the wrong shape raises `EventDecodeError`.
    """
    vault = _address_bytes(vault_address, "vault address")
    events = PayoutEvents()
    for log in receipt_logs:
        if _address_bytes(str(log["address"]).lower(), "log address") != vault:
            continue
        topics = [_as_bytes(topic) for topic in log["topics"]]
        if not topics:
            continue
        topic0 = "0x" + topics[0].hex()
        data = _as_bytes(log["data"])
        if topic0 == PAYOUT_EXECUTED_TOPIC:
            if len(topics) != 2 or len(data) != 4 * _WORD or any(topics[1][:12]):
                raise EventDecodeError("malformed PayoutExecuted log")
            events.executed.append(
                PayoutExecuted(
                    token="0x" + topics[1][12:].hex(),
                    first_number=_uint(data[0:32], 64, "firstNumber"),
                    count=_uint(data[32:64], 32, "count"),
                    paid=_uint(data[64:96], 32, "paid"),
                    total_amount=int.from_bytes(data[96:128], "big"),
                    log_index=_log_index(log),
                )
            )
        elif topic0 == PAYMENT_SKIPPED_TOPIC:
            if len(topics) != 2 or data:
                raise EventDecodeError("malformed PaymentSkipped log")
            events.skipped.append(_uint(topics[1], 64, "number"))
        elif topic0 == PAYMENT_FAILED_TOPIC:
            if len(topics) != 2 or len(data) < 2 * _WORD:
                raise EventDecodeError("malformed PaymentFailed log")
            number = _uint(topics[1], 64, "number")
            offset = int.from_bytes(data[0:32], "big")
            if offset != _WORD:
                raise EventDecodeError("malformed PaymentFailed log: bad reason offset")
            size = int.from_bytes(data[32:64], "big")
            padded = (size + _WORD - 1) // _WORD * _WORD
            if len(data) != 2 * _WORD + padded:
                raise EventDecodeError("malformed PaymentFailed log: bad reason length")
            events.failed.append(FailedPayment(number, data[64 : 64 + size]))
    return events


# -- deploying and driving the vault (bootstrap, tests) -------------------------------------


def payout_vault_contract(w3: Web3, vault: ChecksumAddress) -> Contract:
    """A web3 contract object for a deployed PayoutVault."""
    return w3.eth.contract(address=vault, abi=load_artifact(PAYOUT_VAULT).abi)


def deploy_payout_vault(
    w3: Web3,
    deployer_key: PrivateKey,
    owner: ChecksumAddress,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> ChecksumAddress:
    """Deploy a PayoutVault owned by `owner` (meant to be a Safe) and return its address."""
    return deploy_contract(w3, deployer_key, load_artifact(PAYOUT_VAULT), owner, timeout=timeout)


def set_operator(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    operator: ChecksumAddress,
    allowed: bool = True,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Allow (or with `allowed=False` disallow) `operator` to call `payout` (owner only)."""
    function = payout_vault_contract(w3, vault).functions.setOperator(operator, allowed)
    return send_call(w3, owner_key, function, timeout=timeout)


def fund_vault(
    w3: Web3,
    token: ChecksumAddress,
    funder_key: PrivateKey,
    vault: ChecksumAddress,
    amount: BaseUnits,
    *,
    mint_new: bool = False,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> BaseUnits:
    """Move `amount` of `token` into the vault and return the vault's new balance.

    `mint_new=True` mints it (the funder must own a TestStablecoin); otherwise it is an ERC-20
    transfer from the funder's own balance (the treasury).
    """
    if mint_new:
        mint(w3, token, funder_key, vault, amount, timeout=timeout)
    else:
        transfer(w3, token, funder_key, vault, amount, timeout=timeout)
    return balance_of(w3, token, vault)


def send_payout(
    w3: Web3,
    vault: ChecksumAddress,
    operator_key: PrivateKey,
    token: str,
    payments: Sequence[Payment],
    *,
    gas: int | None = None,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Sign and send one payout transaction from an operator and wait for its receipt.

    Pass `gas` to skip estimation (and get a revert on chain instead of before sending).
    """
    tx: TxParams = {"to": vault, "data": HexStr("0x" + encode_payout(token, payments).hex())}
    if gas is not None:
        tx["gas"] = gas
    abi = load_artifact(PAYOUT_VAULT).abi
    return send_transaction(w3, operator_key, tx, abi=abi, timeout=timeout)


def is_paid(w3: Web3, vault: ChecksumAddress, number: int) -> bool:
    """Whether the vault has paid payout number `number` (latest block)."""
    return bool(payout_vault_contract(w3, vault).functions.isPaid(number).call())


def pause_vault(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Stop all payouts (`EnforcedPause()`) until `unpause_vault` (owner only)."""
    function = payout_vault_contract(w3, vault).functions.pause()
    return send_call(w3, owner_key, function, timeout=timeout)


def unpause_vault(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    function = payout_vault_contract(w3, vault).functions.unpause()
    return send_call(w3, owner_key, function, timeout=timeout)


def set_outflow_cap(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    token: ChecksumAddress,
    cap_per_window: BaseUnits,
    window_seconds: int,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Cap `token` payouts at `cap_per_window` per fixed window (cap 0 = none; owner only)."""
    function = payout_vault_contract(w3, vault).functions.setOutflowCap(
        token, cap_per_window, window_seconds
    )
    return send_call(w3, owner_key, function, timeout=timeout)


def sweep(
    w3: Web3,
    vault: ChecksumAddress,
    owner_key: PrivateKey,
    token: ChecksumAddress,
    to: ChecksumAddress,
    amount: BaseUnits,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> TxReceipt:
    """Move `amount` of `token` out of the vault to `to` (owner only)."""
    function = payout_vault_contract(w3, vault).functions.sweep(token, to, amount)
    return send_call(w3, owner_key, function, timeout=timeout)


def remaining_outflow(w3: Web3, vault: ChecksumAddress, token: ChecksumAddress) -> int:
    """What `token` may still pay out in the current window (2**256 - 1 when uncapped)."""
    return int(cast(int, payout_vault_contract(w3, vault).functions.remainingOutflow(token).call()))
