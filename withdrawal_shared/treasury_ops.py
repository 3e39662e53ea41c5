"""Treasury operations: what the treasury Safe may be asked to do besides paying withdrawals,
as four-eyes change kinds of the admin API, and the one Safe call each of them makes.

Every operation is a change (`withdrawal_shared.db.changes`) proposed by one admin and
confirmed by another; `validate(kind, payload)` checks its payload when it is proposed, and
`build(kind, payload, refs)` turns it into the call the Safe makes. The processor builds the
Safe transaction with `build`; each owner's signer rebuilds the call from the recorded change
with the same function and signs only when the request is exactly that call, so a treasury
call can never be anything a confirmed change did not name.

Kinds and payloads (amounts are decimal integer strings, as JSON numbers would lose digits):

- `treasury.set_vault_operator` (`chain`, `operator` address, `allowed` bool):
  `vault.setOperator(operator, allowed)`;
- `treasury.pause_vault` / `treasury.unpause_vault` (`chain`): `vault.pause()` / `unpause()`;
- `treasury.set_outflow_cap` (`chain`, `token` symbol, `cap_per_window_base_units`,
  `window_seconds`): `vault.setOutflowCap(token, cap, window)`;
- `treasury.sweep` (`chain`, `token`, `amount_base_units`): `vault.sweep(token, safe, amount)`,
  back to the treasury only;
- `treasury.fund_vault` (`chain`, `token`, `amount_base_units`): `token.transfer(vault, amount)`;
- `treasury.fund_gas` (`chain`, `wallet` a hot wallet, `amount_wei`): a plain transfer of
  `amount_wei` to the wallet.

Owners, threshold, modules, guards and the fallback handler are never changed by a treasury
operation: the owners' signers refuse any call of the Safe itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address

from withdrawal_shared.chain import payout
from withdrawal_shared.chain.erc20 import encode_transfer
from withdrawal_shared.chain.types import ChecksumAddress
from withdrawal_shared.errors import FieldViolation, WithdrawalSystemError, invalid_argument

__all__ = [
    "KINDS",
    "TreasuryCall",
    "TreasuryOperationError",
    "TreasuryRefs",
    "build",
    "target",
    "validate",
]

SET_VAULT_OPERATOR = "treasury.set_vault_operator"
PAUSE_VAULT = "treasury.pause_vault"
UNPAUSE_VAULT = "treasury.unpause_vault"
SET_OUTFLOW_CAP = "treasury.set_outflow_cap"
SWEEP = "treasury.sweep"
FUND_VAULT = "treasury.fund_vault"
FUND_GAS = "treasury.fund_gas"

_FIELDS: dict[str, frozenset[str]] = {
    SET_VAULT_OPERATOR: frozenset({"chain", "operator", "allowed"}),
    PAUSE_VAULT: frozenset({"chain"}),
    UNPAUSE_VAULT: frozenset({"chain"}),
    SET_OUTFLOW_CAP: frozenset({"chain", "token", "cap_per_window_base_units", "window_seconds"}),
    SWEEP: frozenset({"chain", "token", "amount_base_units"}),
    FUND_VAULT: frozenset({"chain", "token", "amount_base_units"}),
    FUND_GAS: frozenset({"chain", "wallet", "amount_wei"}),
}
KINDS: tuple[str, ...] = tuple(_FIELDS)
"""Every treasury operation kind."""

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_INTEGER = re.compile(r"^(0|[1-9][0-9]{0,77})$")
_CHAIN = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_SYMBOL = re.compile(r"^[A-Za-z0-9.]{1,16}$")
_UINT64_MAX = 2**64 - 1
_UINT192_MAX = 2**192 - 1


class TreasuryOperationError(WithdrawalSystemError):
    """A valid treasury operation cannot be built on this chain's setup (e.g. the token it
    names is not configured, the wallet is not a hot wallet); the message says which."""


@dataclass(frozen=True)
class TreasuryRefs:
    """The chain's own addresses an operation refers to."""

    chain: str
    safe: ChecksumAddress
    vault: ChecksumAddress
    tokens: Mapping[str, ChecksumAddress]
    """Token contract by upper-case symbol."""
    hot_wallets: frozenset[str]
    """The chain's hot wallets, lower-case."""


@dataclass(frozen=True)
class TreasuryCall:
    """The one call the Safe makes for an operation (always a CALL, never a DELEGATECALL)."""

    to: ChecksumAddress
    value: int
    data: bytes


def _field(name: str) -> str:
    return f"change.payload.{name}"


def _chain(value: object) -> str | None:
    ok = isinstance(value, str) and _CHAIN.match(value)
    return None if ok else "must be a chain name such as `polygon`"


def _address(value: object) -> str | None:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        return "must be a 0x-prefixed 20-byte hex address"
    return "must not be the zero address" if int(value, 16) == 0 else None


def _bool(value: object) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _symbol(value: object) -> str | None:
    ok = isinstance(value, str) and _SYMBOL.match(value)
    return None if ok else "must be a token symbol such as `USDC`"


def _positive(value: object) -> str | None:
    if not isinstance(value, str) or not _INTEGER.match(value) or int(value) == 0:
        return 'must be a positive decimal integer string, e.g. "1000000"'
    return None


def _below(limit: int, what: str) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if not isinstance(value, str) or not _INTEGER.match(value):
            return f"must be a decimal integer string ({what})"
        return None if int(value) <= limit else f"must be at most {limit}"

    return check


_CHECKS: dict[str, Callable[[object], str | None]] = {
    "chain": _chain,
    "operator": _address,
    "wallet": _address,
    "allowed": _bool,
    "token": _symbol,
    "amount_base_units": _positive,
    "amount_wei": _positive,
    "cap_per_window_base_units": _below(_UINT192_MAX, '"0" removes the cap'),
    "window_seconds": _below(_UINT64_MAX, "seconds"),
}


def _check(kind: str, payload: Mapping[str, Any]) -> list[FieldViolation]:
    fields = _FIELDS[kind]
    violations = [
        FieldViolation(_field(name), f"is not a field of {kind}")
        for name in sorted(set(payload) - fields)
    ]
    violations += [
        FieldViolation(_field(name), "is required") for name in sorted(fields - set(payload))
    ]
    for name in sorted(fields & set(payload)):
        problem = _CHECKS[name](payload[name])
        if problem is not None:
            violations.append(FieldViolation(_field(name), problem))
    if (
        kind == SET_OUTFLOW_CAP
        and not violations
        and int(payload["cap_per_window_base_units"]) > 0
        and int(payload["window_seconds"]) == 0
    ):
        violations.append(
            FieldViolation(_field("window_seconds"), "must be positive when a cap is set")
        )
    return violations


def target(kind: str, payload: Mapping[str, Any]) -> str:
    """The resource an operation acts on: `chains/{chain}/vault`, or the wallet it funds."""
    chain = str(payload["chain"])
    if kind == FUND_GAS:
        return f"chains/{chain}/wallets/{str(payload['wallet']).lower()}"
    return f"chains/{chain}/vault"


def validate(kind: str, payload: Mapping[str, Any]) -> str:
    """Check an operation's payload (INVALID_ARGUMENT with one violation per field) and
    return its target."""
    if kind not in _FIELDS:
        raise invalid_argument(
            [FieldViolation("change.kind", f"is not a treasury kind; known: {', '.join(KINDS)}")]
        )
    violations = _check(kind, payload)
    if violations:
        raise invalid_argument(violations)
    return target(kind, payload)


def _token(refs: TreasuryRefs, payload: Mapping[str, Any]) -> ChecksumAddress:
    symbol = str(payload["token"]).upper()
    address = refs.tokens.get(symbol)
    if address is None:
        raise TreasuryOperationError(
            f"token {symbol} is not configured on {refs.chain}; known: "
            f"{', '.join(sorted(refs.tokens)) or 'none'}"
        )
    return address


def build(kind: str, payload: Mapping[str, Any], refs: TreasuryRefs) -> TreasuryCall:
    """The call the Safe makes for a valid operation on the chain of `refs`.

    Raises ValueError for an invalid payload (run `validate` first) and TreasuryOperationError
    when the chain's setup does not have what the operation names.
    """
    if kind not in _FIELDS or _check(kind, payload):
        raise ValueError(f"not a valid {kind} payload")
    if str(payload["chain"]) != refs.chain:
        raise TreasuryOperationError(
            f"the operation is for chain {payload['chain']}, these references are for {refs.chain}"
        )
    if kind == SET_VAULT_OPERATOR:
        operator = to_checksum_address(str(payload["operator"]))
        data = payout.encode_set_operator(operator, bool(payload["allowed"]))
        return TreasuryCall(refs.vault, 0, data)
    if kind == PAUSE_VAULT:
        return TreasuryCall(refs.vault, 0, payout.encode_pause())
    if kind == UNPAUSE_VAULT:
        return TreasuryCall(refs.vault, 0, payout.encode_unpause())
    if kind == SET_OUTFLOW_CAP:
        data = payout.encode_set_outflow_cap(
            _token(refs, payload),
            int(payload["cap_per_window_base_units"]),
            int(payload["window_seconds"]),
        )
        return TreasuryCall(refs.vault, 0, data)
    if kind == SWEEP:
        data = payout.encode_sweep(
            _token(refs, payload), refs.safe, int(payload["amount_base_units"])
        )
        return TreasuryCall(refs.vault, 0, data)
    if kind == FUND_VAULT:
        data = encode_transfer(refs.vault, int(payload["amount_base_units"]))
        return TreasuryCall(_token(refs, payload), 0, data)
    # FUND_GAS
    wallet = str(payload["wallet"]).lower()
    if wallet not in refs.hot_wallets:
        raise TreasuryOperationError(
            f"{payload['wallet']} is not a hot wallet of {refs.chain}; only hot wallets are "
            "funded with gas by the treasury"
        )
    return TreasuryCall(
        ChecksumAddress(to_checksum_address(wallet)), int(payload["amount_wei"]), b""
    )
