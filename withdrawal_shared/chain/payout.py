"""The payout contract (contracts/PayoutVault.sol): calldata, events and read calls.

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
- the owner (a Safe): `encode_set_operator`, `encode_pause`, `encode_unpause`,
  `encode_set_outflow_cap`, `encode_sweep` -> calldata of the vault's onlyOwner functions.
- reads: `is_paid(number)`, `remaining_outflow(token)` (what the outflow cap still allows).

Deploying the vault and sending these calls from a local key is development tooling
(`devstack.vault`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from web3 import Web3
from web3.contract import Contract

from withdrawal_shared.chain.contracts import load_artifact
from withdrawal_shared.chain.erc20 import CalldataError
from withdrawal_shared.chain.types import ChecksumAddress

__all__ = [
    "MAX_PAYMENT_AMOUNT",
    "MAX_PAYOUT_NUMBER",
    "OUTFLOW_CAP_REASON",
    "PAUSE_SELECTOR",
    "PAYMENT_FAILED_TOPIC",
    "PAYMENT_SKIPPED_TOPIC",
    "PAYOUT_EXECUTED_TOPIC",
    "PAYOUT_SELECTOR",
    "PAYOUT_VAULT",
    "SET_OPERATOR_SELECTOR",
    "SET_OUTFLOW_CAP_SELECTOR",
    "SWEEP_SELECTOR",
    "TRANSFER_RETURNED_FALSE_REASON",
    "UNPAUSE_SELECTOR",
    "EventDecodeError",
    "FailedPayment",
    "Payment",
    "PayoutEvents",
    "PayoutExecuted",
    "decode_payout",
    "decode_payout_events",
    "encode_pause",
    "encode_payout",
    "encode_set_operator",
    "encode_set_outflow_cap",
    "encode_sweep",
    "encode_unpause",
    "is_paid",
    "payout_calldata_length",
    "payout_vault_contract",
    "remaining_outflow",
]

PAYOUT_VAULT = "PayoutVault"

PAYOUT_SELECTOR = bytes(Web3.keccak(text="payout(address,uint64,uint256[])")[:4])
PAYOUT_EXECUTED_TOPIC = (
    "0x" + Web3.keccak(text="PayoutExecuted(address,uint64,uint32,uint32,uint256)").hex()
)
PAYMENT_SKIPPED_TOPIC = "0x" + Web3.keccak(text="PaymentSkipped(uint64)").hex()
PAYMENT_FAILED_TOPIC = "0x" + Web3.keccak(text="PaymentFailed(uint64,bytes)").hex()
SET_OPERATOR_SELECTOR = bytes(Web3.keccak(text="setOperator(address,bool)")[:4])
PAUSE_SELECTOR = bytes(Web3.keccak(text="pause()")[:4])
UNPAUSE_SELECTOR = bytes(Web3.keccak(text="unpause()")[:4])
SET_OUTFLOW_CAP_SELECTOR = bytes(Web3.keccak(text="setOutflowCap(address,uint256,uint64)")[:4])
SWEEP_SELECTOR = bytes(Web3.keccak(text="sweep(address,address,uint256)")[:4])

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


# -- the owner's calls -------------------------------------------------------------------------
#
# Calldata of the vault's onlyOwner functions. The owner (a Safe in production) signs and sends
# it; these builders only produce the bytes (selector included), each argument checked against
# its ABI type. `devstack.vault` sends them from a local key for development and tests.


def _address_word(address: str, what: str) -> bytes:
    return _address_bytes(address, what).rjust(_WORD, b"\0")


def _uint_word(value: int, bits: int, what: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise CalldataError(f"{what} {value!r} is not a uint{bits}")
    return value.to_bytes(_WORD, "big")


def encode_set_operator(operator: str, allowed: bool = True) -> bytes:
    """`setOperator(operator, allowed)`: allow (or disallow) `operator` to call `payout`."""
    if not isinstance(allowed, bool):
        raise CalldataError(f"allowed {allowed!r} is not a bool")
    return (
        SET_OPERATOR_SELECTOR
        + _address_word(operator, "operator")
        + int(allowed).to_bytes(_WORD, "big")
    )


def encode_pause() -> bytes:
    """`pause()`: every payout then reverts with `EnforcedPause()` until `unpause()`."""
    return PAUSE_SELECTOR


def encode_unpause() -> bytes:
    """`unpause()`: payouts go through again."""
    return UNPAUSE_SELECTOR


def encode_set_outflow_cap(token: str, cap_per_window: int, window_seconds: int) -> bytes:
    """`setOutflowCap(token, capPerWindow, windowSeconds)`: cap `token` payouts at
    `cap_per_window` base units per fixed window of `window_seconds` (cap 0 = none)."""
    return (
        SET_OUTFLOW_CAP_SELECTOR
        + _address_word(token, "token")
        + _uint_word(cap_per_window, 256, "cap per window")
        + _uint_word(window_seconds, 64, "window seconds")
    )


def encode_sweep(token: str, to: str, amount: int) -> bytes:
    """`sweep(token, to, amount)`: move `amount` base units of `token` out of the vault."""
    return (
        SWEEP_SELECTOR
        + _address_word(token, "token")
        + _address_word(to, "recipient")
        + _uint_word(amount, 256, "amount")
    )


# -- reading the vault ---------------------------------------------------------------------------


def payout_vault_contract(w3: Web3, vault: ChecksumAddress) -> Contract:
    """A web3 contract object for a deployed PayoutVault."""
    return w3.eth.contract(address=vault, abi=load_artifact(PAYOUT_VAULT).abi)


def is_paid(w3: Web3, vault: ChecksumAddress, number: int) -> bool:
    """Whether the vault has paid payout number `number` (latest block)."""
    return bool(payout_vault_contract(w3, vault).functions.isPaid(number).call())


def remaining_outflow(w3: Web3, vault: ChecksumAddress, token: ChecksumAddress) -> int:
    """What `token` may still pay out in the current window (2**256 - 1 when uncapped)."""
    return int(cast(int, payout_vault_contract(w3, vault).functions.remainingOutflow(token).call()))
