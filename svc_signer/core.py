"""The hot wallets' signer's policy and signing, transport-neutral: what SignTransaction and
ListWallets do (`SIGNER_ROLE=hot`, the default). An owner of the treasury Safe has a signer of
its own (`SIGNER_ROLE=safe_owner`, `svc_signer.safe_owner.SafeOwnerCore`); this one refuses
SignSafeTransaction with FAILED_PRECONDITION `UNKNOWN_WALLET` (metadata `signer_role` = `hot`:
it holds no owner key), and ListWallets reports its keys with `ROLE_HOT`.

`SignerCore.sign(request)` either returns `(raw signed bytes, 0x tx hash)` or raises an
`ApiError`. Bad input is INVALID_ARGUMENT with one BadRequest violation per field; a policy
refusal is FAILED_PRECONDITION or PERMISSION_DENIED with one of these ErrorInfo reasons
(`svc_signer.reasons`):

- WRONG_CHAIN (FAILED_PRECONDITION): `chain_id` is not the configured chain id.
- UNKNOWN_WALLET (FAILED_PRECONDITION): this signer holds no key for `wallet_address` (it
  may hold several hot wallets, each with its own key and nonce sequence; it signs with the
  key of the requested wallet).
- TARGET_NOT_ALLOWED (PERMISSION_DENIED): a payout calls something other than an enabled token
  contract of the configured chain.
- NONZERO_VALUE (PERMISSION_DENIED): a payout carries native value.
- UNSUPPORTED_CALLDATA (PERMISSION_DENIED): a payout's calldata is not exactly an ERC-20
  `transfer(address,uint256)`.
- CALLDATA_MISMATCH (PERMISSION_DENIED): the items are not exactly what the decoded calldata
  pays (one item; same recipient, amount and token).
- NOT_APPROVED (FAILED_PRECONDITION): an item's withdrawal is missing, differs from the item
  (recipient, amount, token, chain) or is not QUEUED, SIGNED, BROADCAST or ON_HOLD; ErrorInfo
  metadata `problem` says which (missing, chain, recipient, amount, token, state); or its
  withdrawal was held for approval and lacks approvals its rule required (`problem` =
  `approvals`, `svc_signer.screening`).
- RECIPIENT_BLOCKED (PERMISSION_DENIED): an item pays an address on the blocklist
  (`svc_signer.screening`).
- ALREADY_SIGNED_AT_OTHER_NONCE (FAILED_PRECONDITION): an item's withdrawal is already in the
  ledger at another (wallet, nonce) that may still pay it (see the double-payment rule).
- INVALID_NONCE_RELEASE (PERMISSION_DENIED): a nonce release is not a zero-value, empty
  self-transfer without items and with at most 21,000 gas, or its (wallet, nonce) is not
  held by a RESERVED payout (`check_release_reserved`).

- PAUSED (FAILED_PRECONDITION): the payout kill switch covers the chain or a token of the
  payout and this is not a replacement at the same (wallet, nonce) of a transaction already
  signed there for the same withdrawals; or an item's withdrawal is ON_HOLD `PAUSED`
  (`svc_signer/pauses.py`; metadata `scope` or `withdrawal_id`). Nonce releases are signed
  whatever is paused.

A signing backend failure is UNAVAILABLE (KEY_BACKEND_UNAVAILABLE): retry later. With TLS on,
a caller whose certificate name is not allowed for the method is PERMISSION_DENIED
(CALLER_NOT_ALLOWED, `svc_signer.servicer`).

PURPOSE_SAFE_EXECUTION (and a PURPOSE_REPLACEMENT whose calldata is `execTransaction`): the hot
wallet calls the chain's treasury Safe (else SAFE_NOT_TREASURY) with value 0 (NONZERO_VALUE) and
canonical `execTransaction` calldata (UNSUPPORTED_CALLDATA). The inner Safe transaction passes
the Safe's static rules an owner applies (SAFE_DELEGATECALL, SAFE_GAS_REFUND, SAFE_SELF_CALL,
TARGET_NOT_ALLOWED, NONZERO_VALUE; `svc_signer.safe_owner` documents them), and its
signatures, over its `safe_tx_hash` at `safe_nonce`, are ECDSA signatures of at least the
treasury's threshold of distinct current owners in ascending order
(OWNER_SIGNATURES_BELOW_THRESHOLD). Exactly one of:
- items: the inner call is the vault's payout of exactly the items, and the payout rules above
  apply (facts, approvals, blocklist, pauses, the double-payment rule), plus the Safe's
  threshold of distinct approvers per item (NOT_APPROVED, `problem` = `safe_approvals`);
- `change`: the inner call is exactly the call of that APPLIED treasury change
  (CHANGE_NOT_APPLIED, CHANGE_CALL_MISMATCH); the payout pause does not hold it (pausing the
  vault must stay possible).
It is recorded in the ledger like any other transaction (purpose SAFE_EXECUTION).

The double-payment rule: a withdrawal that appears in the ledger at one (wallet, nonce) is not
signed at another one, unless paying it again is provably safe:
- that other nonce is known to be consumed on chain by a transaction that did not pay it
  (`LedgerTransaction.consumed_without_paying`: settled by the monitor at the confirmation
  depth, REVERTED, or CONFIRMED without this withdrawal among its ledger items); or
- both are payouts through the payout vault under the same payout number
  (`_vault_paid_same_number`): the vault's bitmap pays a number at most once. A hot wallet's
  `vault.payout` and the treasury Safe's `execTransaction` of one count alike: the Safe path
  and the hot path under one payout number are the same number.

Key states and rotation (`svc_signer.key_states`): the signer records its keys in
`signer_keys`, ACTIVE or RETIRED, and ListWallets reports each key's state. CreateWallet
generates a new key in the backend (a keystore file beside the first, or a key pair with a new
label on the PKCS#11 token) and holds it from then on, also after a restart; on AWS KMS it is
refused with FAILED_PRECONDITION KEY_CREATION_UNSUPPORTED (keys are created in AWS).
RetireWallet marks a key RETIRED (it waits for signatures in progress with that key):
- WALLET_RETIRED (FAILED_PRECONDITION): the key is RETIRED, and the request is a payout or a
  Safe execution, or a replacement or nonce release at a nonce it never signed at (in-flight
  payouts still finish: their replacements and releases are at nonces it signed at).
PURPOSE_GAS_SWEEP, the one value transfer a hot wallet signs (ACTIVE or RETIRED): its
remaining native balance, less the fee, to the chain's treasury Safe (the processor computes
the value; the signer cannot send it anywhere else):
- INVALID_GAS_SWEEP (PERMISSION_DENIED; metadata `problem`): items given (`items`), calldata
  (`data`), zero value (`value`), more than `key_states.SWEEP_MAX_GAS` gas (`gas`), the
  chain has no treasury Safe (`treasury`), a destination other than it (`to`), or a nonce
  already signed for something other than a sweep (`nonce`).
- GAS_SWEEP_ALREADY_SIGNED (FAILED_PRECONDITION): the wallet's sweep was signed at another
  nonce already; a wallet is swept once (replacements of it go at its nonce).

Repeating a request is idempotent: when the ledger already holds a transaction at the same
(wallet, nonce) with the same fields (to, data, value, gas, fees) paying the same withdrawals,
its stored bytes are returned and nothing is signed (HSM signatures are randomised, a retried
RPC must get the same bytes). Otherwise the new transaction and its items are recorded in one
database transaction before its bytes are returned. Same (wallet, nonce) with other fees is a
replacement and is signed (only one transaction per nonce can ever be mined).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from eth_utils.address import to_checksum_address

from assetwithdrawal.signer.v1 import signer_pb2
from svc_signer import key_states, pauses, safe_rules, screening
from svc_signer.key_states import KeyState
from svc_signer.keys import KeyBackend, KeyBackendError, KeyRing
from svc_signer.keys.ring import add_to_ring
from svc_signer.ledger import (
    Ledger,
    LedgerClaim,
    LedgerEntry,
    LedgerTransaction,
    NewEntry,
    WithdrawalFacts,
)
from svc_signer.reasons import Reason, refusal
from svc_signer.transactions import (
    Eip1559Fields,
    InvalidTransactionError,
    decode_eip1559,
    sign_eip1559,
)
from withdrawal_shared import tracing
from withdrawal_shared.addresses import AddressError, parse_address
from withdrawal_shared.chain.erc20 import CalldataError, decode_transfer
from withdrawal_shared.chain.payout import PAYOUT_SELECTOR, decode_payout
from withdrawal_shared.chain.safe_tx import (
    EXEC_TRANSACTION_SELECTOR,
    SafeTx,
    decode_exec_transaction,
    safe_tx_hash,
)
from withdrawal_shared.crash_points import crash_point
from withdrawal_shared.db.pauses import PauseState
from withdrawal_shared.errors import ApiError, Code, FieldViolation, invalid_argument
from withdrawal_shared.ids import is_ulid
from withdrawal_shared.states import State

log = logging.getLogger(__name__)

_WALLET_STATES = {
    KeyState.ACTIVE: signer_pb2.Wallet.STATE_ACTIVE,
    KeyState.RETIRED: signer_pb2.Wallet.STATE_RETIRED,
}

# The states in which a withdrawal may be (re-)signed for.
PAYABLE_STATES = frozenset({State.QUEUED, State.SIGNED, State.BROADCAST, State.ON_HOLD})

_DECIMAL = re.compile(r"[0-9]{1,78}")
_UINT256_MAX = 2**256 - 1


class Purpose(enum.StrEnum):
    """Why a transaction is signed; stored in `signer_ledger.purpose`."""

    PAYOUT = "PAYOUT"
    REPLACEMENT = "REPLACEMENT"
    NONCE_RELEASE = "NONCE_RELEASE"
    SAFE_EXECUTION = "SAFE_EXECUTION"
    GAS_SWEEP = "GAS_SWEEP"


_PURPOSES = {
    signer_pb2.PURPOSE_PAYOUT: Purpose.PAYOUT,
    signer_pb2.PURPOSE_REPLACEMENT: Purpose.REPLACEMENT,
    signer_pb2.PURPOSE_NONCE_RELEASE: Purpose.NONCE_RELEASE,
    signer_pb2.PURPOSE_SAFE_EXECUTION: Purpose.SAFE_EXECUTION,
    signer_pb2.PURPOSE_GAS_SWEEP: Purpose.GAS_SWEEP,
}


@dataclass(frozen=True)
class PayoutItem:
    """One withdrawal a transaction claims to pay (addresses lowercase, amount in base units)."""

    withdrawal_id: str
    recipient: str
    amount: int
    token: str
    number: int = 0  # its payout number (batch payouts through the vault)


@dataclass(frozen=True)
class SignRequest:
    """A SignTransaction request after its fields were parsed and checked for form."""

    purpose: Purpose
    wallet: str  # lowercase
    tx: Eip1559Fields  # `to` lowercase
    items: tuple[PayoutItem, ...]
    change_id: str | None = None  # a Safe execution of a treasury operation: its change
    safe_nonce: int = 0  # a Safe execution: the Safe nonce it runs at

    @property
    def withdrawal_ids(self) -> frozenset[str]:
        return frozenset(item.withdrawal_id for item in self.items)

    @property
    def is_safe_execution(self) -> bool:
        """A call of the treasury Safe's `execTransaction` (PURPOSE_SAFE_EXECUTION, or a
        PURPOSE_REPLACEMENT of one at the same nonce)."""
        return self.purpose is Purpose.SAFE_EXECUTION or (
            self.purpose is Purpose.REPLACEMENT and self.tx.data[:4] == EXEC_TRANSACTION_SELECTOR
        )


# --- parsing (form only; no policy) -------------------------------------------------------


def _uint(text: str, name: str, problems: list[FieldViolation], *, empty: int | None) -> int:
    if text == "" and empty is not None:
        return empty
    if not _DECIMAL.fullmatch(text) or int(text) > _UINT256_MAX:
        problems.append(FieldViolation(name, "must be a non-negative decimal integer (uint256)"))
        return 0
    return int(text)


def _address(text: str, name: str, problems: list[FieldViolation]) -> str:
    try:
        return parse_address(text)
    except AddressError as exc:
        problems.append(FieldViolation(name, str(exc)))
        return ""


def parse_request(request: signer_pb2.SignTransactionRequest) -> SignRequest:
    """Check every field's form; raises INVALID_ARGUMENT naming each bad field."""
    problems: list[FieldViolation] = []
    purpose = _PURPOSES.get(request.purpose)
    if purpose is None:
        problems.append(
            FieldViolation(
                "purpose",
                "must be PURPOSE_PAYOUT, PURPOSE_REPLACEMENT, PURPOSE_NONCE_RELEASE, "
                "PURPOSE_SAFE_EXECUTION or PURPOSE_GAS_SWEEP",
            )
        )
    wallet = _address(request.wallet_address, "wallet_address", problems)
    if request.chain_id == 0:
        problems.append(FieldViolation("chain_id", "is required (137 for Polygon PoS)"))
    to = _address(request.to_address, "to_address", problems)
    value = _uint(request.value_wei, "value_wei", problems, empty=0)
    if request.gas_limit == 0:
        problems.append(FieldViolation("gas_limit", "must be positive"))
    max_fee = _uint(request.max_fee_per_gas_wei, "max_fee_per_gas_wei", problems, empty=None)
    tip = _uint(
        request.max_priority_fee_per_gas_wei,
        "max_priority_fee_per_gas_wei",
        problems,
        empty=None,
    )
    fees_parsed = not any(
        v.field in {"max_fee_per_gas_wei", "max_priority_fee_per_gas_wei"} for v in problems
    )
    if fees_parsed and tip > max_fee:
        problems.append(
            FieldViolation("max_priority_fee_per_gas_wei", "must not exceed max_fee_per_gas_wei")
        )
    items = parse_items(request.items, problems)
    change_id: str | None = None
    safe_purposes = (Purpose.SAFE_EXECUTION, Purpose.REPLACEMENT)
    if request.change:
        change_id = safe_rules.parse_change(request.change)
        if change_id is None:
            problems.append(FieldViolation("change", "must be a change name, changes/{id}"))
        elif purpose not in safe_purposes or (
            purpose is Purpose.REPLACEMENT and request.data[:4] != EXEC_TRANSACTION_SELECTOR
        ):
            problems.append(FieldViolation("change", "is only for PURPOSE_SAFE_EXECUTION"))
        elif request.items:
            problems.append(
                FieldViolation("change", "a Safe execution runs a change or pays items, not both")
            )
    elif purpose is Purpose.SAFE_EXECUTION and not request.items:
        problems.append(
            FieldViolation(
                "items", "a Safe execution pays items through the vault or runs a change"
            )
        )
    if problems or purpose is None:
        raise invalid_argument(problems)
    return SignRequest(
        purpose=purpose,
        wallet=wallet,
        tx=Eip1559Fields(
            chain_id=request.chain_id,
            nonce=request.nonce,
            to=to,
            data=bytes(request.data),
            value=value,
            gas=request.gas_limit,
            max_fee_per_gas=max_fee,
            max_priority_fee_per_gas=tip,
        ),
        items=tuple(items),
        change_id=change_id,
        safe_nonce=request.safe_nonce,
    )


def parse_items(
    given: Iterable[signer_pb2.PayoutItem], problems: list[FieldViolation]
) -> list[PayoutItem]:
    """The items of a request, each field's form checked (violations appended)."""
    items: list[PayoutItem] = []
    seen: set[str] = set()
    for index, item in enumerate(given):
        prefix = f"items[{index}]"
        if not is_ulid(item.withdrawal_id):
            problems.append(
                FieldViolation(f"{prefix}.withdrawal_id", "must be a withdrawal id (26 chars)")
            )
        elif item.withdrawal_id in seen:
            problems.append(
                FieldViolation(f"{prefix}.withdrawal_id", "appears more than once in items")
            )
        seen.add(item.withdrawal_id)
        items.append(
            PayoutItem(
                withdrawal_id=item.withdrawal_id,
                recipient=_address(item.recipient_address, f"{prefix}.recipient_address", problems),
                amount=_uint(
                    item.amount_base_units, f"{prefix}.amount_base_units", problems, empty=None
                ),
                token=_address(item.token_address, f"{prefix}.token_address", problems),
                number=item.payout_number,
            )
        )
    return items


# --- policy rules (each a small function raising the refusal) ------------------------------


def check_chain(request: SignRequest, chain_id: int) -> None:
    if request.tx.chain_id != chain_id:
        raise refusal(
            Code.FAILED_PRECONDITION,
            Reason.WRONG_CHAIN,
            f"This signer signs only for chain id {chain_id}, not {request.tx.chain_id}; "
            "send the request to the signer of that chain.",
            expected_chain_id=chain_id,
            chain_id=request.tx.chain_id,
        )


def check_wallet(request: SignRequest, keys: KeyRing | KeyBackend) -> KeyBackend:
    """The backend holding the key of the requested wallet; UNKNOWN_WALLET when none does."""
    backend = KeyRing.of(keys).get(request.wallet)
    if backend is None:
        raise refusal(
            Code.FAILED_PRECONDITION,
            Reason.UNKNOWN_WALLET,
            f"This signer holds no key for wallet {request.wallet}; ListWallets shows the "
            "wallets it holds.",
            wallet=request.wallet,
        )
    return backend


NONCE_RELEASE_GAS = 21_000
"""A plain transfer to an account without code costs exactly this; a release never needs more
(the cap bounds what a release can burn in fees)."""


def check_nonce_release(request: SignRequest) -> None:
    """A nonce release (a no-op that only consumes a nonce whose payload must not be paid) is
    a zero-value self-transfer with no calldata, no items and at most 21,000 gas: it can move
    nothing but its own fee."""
    wrong = []
    if request.tx.to != request.wallet:
        wrong.append("to_address must be the wallet itself")
    if request.tx.value != 0:
        wrong.append("value_wei must be 0")
    if request.tx.data:
        wrong.append("data must be empty")
    if request.items:
        wrong.append("items must be empty")
    if request.tx.gas > NONCE_RELEASE_GAS:
        wrong.append(f"gas_limit must be at most {NONCE_RELEASE_GAS}")
    if wrong:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.INVALID_NONCE_RELEASE,
            "A nonce release must be a zero-value, empty self-transfer: " + "; ".join(wrong) + ".",
        )


def check_release_reserved(request: SignRequest, reserved: bool) -> None:
    """A nonce is released only where the processor reserved it for a payout it has not yet
    stored signed bytes for (`payout_transactions` row RESERVED at this wallet and nonce).
    So a release never takes a nonce far ahead (it would later collide with a real payout),
    an already used one, or one whose payout may be on its way: a RESERVED payout was never
    broadcast (the processor stores signed bytes before sending them), so the release can
    only fill a nonce that would otherwise stay a gap, never cancel a payment in flight."""
    if not reserved:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.INVALID_NONCE_RELEASE,
            f"Nonce {request.tx.nonce} of wallet {request.wallet} is not held by a reserved, "
            "unsigned payout; only such a nonce can be released.",
            wallet=request.wallet,
            nonce=request.tx.nonce,
        )


def is_vault_payout(request: SignRequest) -> bool:
    return request.tx.data[:4] == PAYOUT_SELECTOR


def check_payout_calldata(request: SignRequest) -> None:
    """Value 0, and calldata that is either one ERC-20 transfer paying exactly its one item,
    or a PayoutVault payout paying exactly its items, in order, with their numbers."""
    if request.tx.value != 0:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.NONZERO_VALUE,
            "A token payout carries no native value: set value_wei to 0.",
        )
    if is_vault_payout(request):
        check_vault_calldata(request)
        return
    try:
        transfer = decode_transfer(request.tx.data)
    except CalldataError as exc:
        raise refusal(
            Code.PERMISSION_DENIED, Reason.UNSUPPORTED_CALLDATA, f"Refused to sign: {exc}."
        ) from None
    if len(request.items) != 1:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.CALLDATA_MISMATCH,
            f"The calldata is one ERC-20 transfer, so it pays exactly one item, not "
            f"{len(request.items)}.",
        )
    item = request.items[0]
    differing = [
        name
        for name, claimed, decoded in (
            ("recipient_address", item.recipient, transfer.recipient),
            ("amount_base_units", item.amount, transfer.amount),
            ("token_address", item.token, request.tx.to),
        )
        if claimed != decoded
    ]
    if differing:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.CALLDATA_MISMATCH,
            f"The item of withdrawal {item.withdrawal_id} does not match the decoded calldata "
            f"({', '.join(differing)} differ); rebuild the transaction from the withdrawal.",
            withdrawal_id=item.withdrawal_id,
            fields=",".join(differing),
        )


def check_vault_calldata(request: SignRequest) -> None:
    check_vault_payout(request.tx.data, request.items)


def check_vault_payout(data: bytes, items: Sequence[PayoutItem]) -> None:
    """`data` is `vault.payout(token, firstNumber, payments)` paying exactly `items`, in
    order, with their numbers."""
    try:
        token, payments = decode_payout(data)
    except CalldataError as exc:
        raise refusal(
            Code.PERMISSION_DENIED, Reason.UNSUPPORTED_CALLDATA, f"Refused to sign: {exc}."
        ) from None
    claimed = [(i.number, i.recipient, i.amount, i.token) for i in items]
    decoded = [(p.number, p.recipient, p.amount, token) for p in payments]
    if claimed != decoded:
        first = next(
            (
                index
                for index, pair in enumerate(zip(claimed, decoded, strict=False))
                if pair[0] != pair[1]
            ),
            min(len(claimed), len(decoded)),
        )
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.CALLDATA_MISMATCH,
            f"The payout calldata pays {len(decoded)} items but {len(claimed)} are claimed, or "
            f"they differ (first difference at item {first}); rebuild it from the withdrawals.",
            index=first,
        )


def check_vault_numbers(items: Iterable[PayoutItem], facts: dict[str, WithdrawalFacts]) -> None:
    """Each item carries the payout number the database gave its withdrawal: a withdrawal
    paid under another number would slip past the vault's paid bitmap."""
    for item in items:
        row = facts.get(item.withdrawal_id)
        if row is not None and row.payout_number != item.number:
            raise _not_approved(
                item,
                "payout_number",
                f"has payout number {row.payout_number}, not {item.number}",
            )


def check_target(to: str, allowed: frozenset[str]) -> None:
    """A payout may call only an allowed contract (today: an enabled token of the chain)."""
    if to not in allowed:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.TARGET_NOT_ALLOWED,
            f"{to} is not a contract this signer pays through (an enabled token of its chain).",
            to_address=to,
        )


def _not_approved(item: PayoutItem, problem: str, message: str) -> ApiError:
    return refusal(
        Code.FAILED_PRECONDITION,
        Reason.NOT_APPROVED,
        f"Withdrawal {item.withdrawal_id} {message}; it cannot be paid by this transaction.",
        withdrawal_id=item.withdrawal_id,
        problem=problem,
    )


def check_withdrawals(
    items: Iterable[PayoutItem], facts: dict[str, WithdrawalFacts], chain: str
) -> None:
    """Each item is an existing, payable withdrawal of this chain with the same payment."""
    for item in items:
        row = facts.get(item.withdrawal_id)
        if row is None:
            raise _not_approved(item, "missing", "does not exist")
        if row.chain != chain:
            raise _not_approved(item, "chain", f"is on chain {row.chain}, not {chain}")
        if row.recipient != item.recipient:
            raise _not_approved(item, "recipient", "has another recipient")
        if row.amount != item.amount:
            raise _not_approved(item, "amount", "has another amount")
        if row.token_address != item.token:
            raise _not_approved(item, "token", "is paid in another token")
        if row.state not in PAYABLE_STATES:
            raise refusal(
                Code.FAILED_PRECONDITION,
                Reason.NOT_APPROVED,
                f"Withdrawal {item.withdrawal_id} is {row.state}; only QUEUED, SIGNED, BROADCAST "
                "or ON_HOLD withdrawals are signed for.",
                withdrawal_id=item.withdrawal_id,
                problem="state",
                state=row.state,
            )


def check_ledger_claims(claims: list[LedgerClaim]) -> None:
    """No item may already be in the ledger at another (wallet, nonce)."""
    if claims:
        claim = claims[0]
        raise refusal(
            Code.FAILED_PRECONDITION,
            Reason.ALREADY_SIGNED_AT_OTHER_NONCE,
            f"Withdrawal {claim.withdrawal_id} was already signed at wallet {claim.wallet} "
            f"nonce {claim.nonce} (transaction {claim.tx_hash}); replace that transaction at "
            "its nonce instead of paying it again.",
            withdrawal_id=claim.withdrawal_id,
            wallet=claim.wallet,
            nonce=claim.nonce,
            tx_hash=claim.tx_hash,
        )


def check_not_paused_holds(held: Sequence[str]) -> None:
    """No item's withdrawal may be ON_HOLD `PAUSED`."""
    if held:
        raise refusal(
            Code.FAILED_PRECONDITION,
            Reason.PAUSED,
            f"Withdrawal {held[0]} is ON_HOLD PAUSED: it is signed for only once the pause is "
            "lifted and it is queued again.",
            withdrawal_id=held[0],
        )


def check_pause_allows(
    request: SignRequest, pause: PauseState, entries: Sequence[LedgerEntry]
) -> None:
    """While `pause` covers the payout, only a replacement at this (wallet, nonce) of a
    transaction already signed here for exactly the same withdrawals is signed."""
    ids = request.withdrawal_ids
    if ids and any(entry.withdrawal_ids == ids for entry in entries):
        return
    raise refusal(
        Code.FAILED_PRECONDITION,
        Reason.PAUSED,
        f"Payouts are paused ({pause.scope}"
        + (f": {pause.reason}" if pause.reason else "")
        + "); nothing new is signed in this scope until the pause is lifted. Replacements "
        "of transactions already signed and nonce releases are still signed.",
        scope=pause.scope,
    )


def _vault_paid_same_number(
    tx: LedgerTransaction,
    claim: LedgerClaim,
    vault: str | None,
    safe: str | None,
    numbers: dict[str, int],
) -> bool:
    """Whether an earlier signature for this withdrawal (at another nonce) was a payout
    through the same vault under the same payout number: a hot wallet's `vault.payout`, or
    the treasury Safe's `execTransaction` of one (`safe_rules.vault_payments`; the Safe path
    and the hot path under one payout number count as the same number). Signing it again at
    a new nonce is then safe whatever became of the earlier one: the vault's bitmap pays a
    number at most once. (This is how an item that failed inside a mined batch is retried.)
    Decided from the bytes this signer signed, not from anything the caller says."""
    entry = tx.entry(claim.tx_hash)
    if entry is None or vault is None:
        return False
    try:
        earlier = decode_eip1559(entry.raw_tx)
    except InvalidTransactionError:
        return False
    payments = safe_rules.vault_payments(earlier.to, earlier.data, vault, safe)
    number = numbers.get(claim.withdrawal_id)
    return any(p.number == number for p in payments)


def _same_transaction(raw: bytes, tx: Eip1559Fields) -> bool:
    try:
        return decode_eip1559(raw) == tx
    except InvalidTransactionError:
        return False


# --- the core -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signed:
    raw: bytes
    hash: str


@dataclass(frozen=True)
class _Outcome:
    raw: bytes
    tx_hash: str
    how: str  # signed | repeated | merged


class SignerCore:
    """Checks requests against the policy, signs with the requested wallet's key backend,
    records the ledger. `keys` is a `KeyRing`, or one backend (a single hot wallet)."""

    def __init__(
        self,
        keys: KeyRing | KeyBackend | Sequence[KeyBackend],
        ledger: Ledger,
        executor: Executor,
        *,
        chain_id: int,
        chain: str,
    ) -> None:
        self.keys = KeyRing.of(keys)
        self.ledger = ledger
        self.executor = executor
        self.chain_id = chain_id
        self.chain = chain

    @property
    def backend(self) -> KeyBackend:
        """The first hot wallet's backend (the only one of a single-wallet signer)."""
        return self.keys.first

    async def sign(self, request: signer_pb2.SignTransactionRequest) -> tuple[bytes, str]:
        """Sign `request` (or return what was signed for it before); raises ApiError."""
        context = {
            "wallet": request.wallet_address.lower(),
            "nonce": request.nonce,
            "purpose": signer_pb2.Purpose.Name(request.purpose)
            if request.purpose in signer_pb2.Purpose.values()
            else str(request.purpose),
        }
        try:
            checked = parse_request(request)
            check_chain(checked, self.chain_id)
            backend = check_wallet(checked, self.keys)
            if checked.purpose is Purpose.NONCE_RELEASE:
                check_nonce_release(checked)
            elif checked.purpose is Purpose.GAS_SWEEP:
                key_states.check_sweep_form(
                    to=checked.tx.to,
                    data=checked.tx.data,
                    value=checked.tx.value,
                    gas=checked.tx.gas,
                    items=len(checked.items),
                )
            elif not checked.is_safe_execution:
                check_payout_calldata(checked)
            loop = asyncio.get_running_loop()
            with tracing.span("signer check policy, sign and record ledger", context):
                outcome = await loop.run_in_executor(
                    self.executor, self._sign_and_record, checked, backend
                )
            crash_point("signer.after_ledger_before_reply")
        except ApiError as err:
            log.warning(
                "signing refused",
                extra={**context, "reason": err.reason, "code": err.code.name},
            )
            raise
        log.info(
            "transaction signed" if outcome.how != "repeated" else "signed transaction returned",
            extra={
                **context,
                "tx_hash": outcome.tx_hash,
                "outcome": outcome.how,
                "withdrawal_ids": sorted(checked.withdrawal_ids),
            },
        )
        return outcome.raw, outcome.tx_hash

    def list_wallets(self) -> signer_pb2.ListWalletsResponse:
        with self.ledger.sessions() as session:
            known = key_states.states(session, [b.address for b in self.keys])
        return signer_pb2.ListWalletsResponse(
            wallets=[
                signer_pb2.Wallet(
                    address=backend.address,
                    backend=backend.backend_name,
                    role=signer_pb2.Wallet.ROLE_HOT,
                    state=_WALLET_STATES[known.get(backend.address.lower(), KeyState.ACTIVE)],
                )
                for backend in self.keys
            ]
        )

    # --- key rotation (svc_signer.key_states) ---

    key_environ: Mapping[str, str] | None = None
    """Where CreateWallet creates keys (`SignerSettings.key_environ()`); None: it cannot."""

    async def create_wallet(self, request: signer_pb2.CreateWalletRequest) -> signer_pb2.Wallet:
        """Generate a new hot-wallet key and hold it (the same request id: the same key)."""
        request_id = key_states.parse_request_id(request.request_id)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._create_wallet, request_id)

    def _create_wallet(self, request_id: str) -> signer_pb2.Wallet:
        with self.ledger.sessions.begin() as session:
            known = key_states.by_request(session, request_id)
        if known is not None and self.keys.get(known.address) is not None:
            return self._wallet_message(known.address, known.backend, known.state)
        if self.key_environ is None:
            raise refusal(
                Code.FAILED_PRECONDITION,
                Reason.KEY_CREATION_UNSUPPORTED,
                "This signer was started with its keys given, not from its settings: it "
                "cannot create keys.",
            )
        try:
            if known is not None:  # recorded before a crash: open it again
                backend = key_states.open_created(self.key_environ, known)
            else:
                backend, locator = key_states.create_key(self.key_environ, request_id)
                with self.ledger.sessions.begin() as session:
                    known = key_states.record_created(
                        session, self.chain, backend, locator, request_id
                    )
        except KeyBackendError as exc:
            log.error("creating a key failed", extra={"error": str(exc)})
            raise ApiError(
                Code.UNAVAILABLE,
                Reason.KEY_BACKEND_UNAVAILABLE.value,
                "The signer's key backend cannot create a key right now; retry the same "
                "request later.",
            ) from None
        add_to_ring(self.keys, backend)
        log.info("hot-wallet key created", extra={"wallet": backend.address})
        return self._wallet_message(backend.address, backend.backend_name, known.state)

    async def retire_wallet(self, request: signer_pb2.RetireWalletRequest) -> signer_pb2.Wallet:
        """Retire a hot-wallet key: it signs no new payout from now on."""
        problems: list[FieldViolation] = []
        wallet = _address(request.address, "address", problems)
        if problems:
            raise invalid_argument(problems)
        backend = self.keys.get(wallet)
        if backend is None:
            raise refusal(
                Code.FAILED_PRECONDITION,
                Reason.UNKNOWN_WALLET,
                f"This signer holds no key for wallet {wallet}.",
                wallet=wallet,
            )
        loop = asyncio.get_running_loop()

        def retire() -> key_states.KeyRecord:
            with self.ledger.sessions.begin() as session:
                return key_states.retire(session, self.chain, wallet, backend.backend_name)

        record = await loop.run_in_executor(self.executor, retire)
        log.info("hot-wallet key retired", extra={"wallet": wallet})
        return self._wallet_message(backend.address, backend.backend_name, record.state)

    @staticmethod
    def _wallet_message(address: str, backend: str, state: KeyState) -> signer_pb2.Wallet:
        return signer_pb2.Wallet(
            address=to_checksum_address(address),
            backend=backend,
            role=signer_pb2.Wallet.ROLE_HOT,
            state=_WALLET_STATES[state],
        )

    async def sign_safe(
        self, request: signer_pb2.SignSafeTransactionRequest
    ) -> signer_pb2.SignSafeTransactionResponse:
        """Sign a treasury Safe transaction with an owner key: a hot wallets' signer holds
        none (`svc_signer.safe_owner.SafeOwnerCore` does)."""
        error = refusal(
            Code.FAILED_PRECONDITION,
            Reason.UNKNOWN_WALLET,
            f"This signer holds hot wallets' keys (SIGNER_ROLE=hot), no owner key of the "
            f"treasury Safe, so it cannot sign for {request.owner_address or '(no owner)'}; "
            "send SignSafeTransaction to that owner's own signer (SIGNER_ROLE=safe_owner).",
            wallet=request.owner_address,
            signer_role="hot",
        )
        log.warning(
            "signing refused",
            extra={"owner": request.owner_address.lower(), "reason": error.reason},
        )
        raise error

    def _check_payout(self, tx: LedgerTransaction, request: SignRequest) -> None:
        ids = request.withdrawal_ids
        if is_vault_payout(request):
            vault = tx.payout_vault(self.chain)
            check_target(request.tx.to, frozenset([vault]) if vault else frozenset())
            tokens = tx.payout_targets(self.chain)
            for item in request.items:
                check_target(item.token, tokens)
            facts = tx.lock_withdrawals(ids)
            check_withdrawals(request.items, facts, self.chain)
            check_vault_numbers(request.items, facts)
            claims = self._claims_not_covered_by_vault(tx, request, vault)
        else:
            check_target(request.tx.to, tx.payout_targets(self.chain))
            check_withdrawals(request.items, tx.lock_withdrawals(ids), self.chain)
            claims = tx.claims_elsewhere(ids, request.wallet, request.tx.nonce)
        # The withdrawals are locked now: approvals and the blocklist as of this transaction.
        screening.check_approvals(request.items, tx.approval_gaps(ids))
        screening.check_recipients(
            request.items, tx.blocked_among({item.recipient for item in request.items})
        )
        check_ledger_claims([c for c in claims if not tx.consumed_without_paying(self.chain, c)])

    def _claims_not_covered_by_vault(
        self, tx: LedgerTransaction, request: SignRequest, vault: str | None
    ) -> list[LedgerClaim]:
        """The items' ledger claims at other (wallet, nonce)s, less those the vault's bitmap
        covers (an earlier vault payout, direct or through the Safe, under the same number)."""
        claims = tx.claims_elsewhere(request.withdrawal_ids, request.wallet, request.tx.nonce)
        if not claims:
            return claims
        treasury = tx.treasury(self.chain)
        safe = treasury.address if treasury is not None else None
        numbers = {item.withdrawal_id: item.number for item in request.items}
        return [c for c in claims if not _vault_paid_same_number(tx, c, vault, safe, numbers)]

    def _check_safe_execution(self, tx: LedgerTransaction, request: SignRequest) -> None:
        """A call of the treasury Safe's `execTransaction`: value 0, canonical calldata whose
        inner Safe transaction passes the Safe's static rules and carries at least the
        threshold of distinct current owners' signatures over its hash at
        `request.safe_nonce`; then either a vault payout of exactly the items under every
        payout rule (facts, approvals including the Safe threshold, blocklist, the
        double-payment rule), or exactly the call of the applied change."""
        refs = safe_rules.load_refs(tx, self.chain)
        safe_rules.check_is_treasury(request.tx.to, refs)
        if request.tx.value != 0:
            raise refusal(
                Code.PERMISSION_DENIED,
                Reason.NONZERO_VALUE,
                "A Safe execution carries no native value (the Safe pays from its own "
                "balance): set value_wei to 0.",
            )
        try:
            inner, signatures = decode_exec_transaction(request.tx.data)
        except CalldataError as exc:
            raise refusal(
                Code.PERMISSION_DENIED, Reason.UNSUPPORTED_CALLDATA, f"Refused to sign: {exc}."
            ) from None
        inner = dataclasses.replace(inner, nonce=request.safe_nonce)
        safe_rules.check_static(inner, refs)
        digest = safe_tx_hash(request.tx.chain_id, refs.safe, inner)
        safe_rules.check_owner_signatures(digest, signatures, refs)
        if request.change_id is not None:
            safe_rules.check_treasury_change(
                request.change_id, tx.change(request.change_id), inner, refs
            )
            return
        self._check_safe_payout(tx, request, inner, refs)

    def _check_safe_payout(
        self, tx: LedgerTransaction, request: SignRequest, inner: SafeTx, refs: safe_rules.SafeRefs
    ) -> None:
        """The inner call is `vault.payout` of exactly the items, under the payout rules."""
        if not request.items:
            raise invalid_argument(
                [FieldViolation("items", "a Safe execution pays items or runs a change")]
            )
        safe_rules.check_vault_target(inner, refs)
        check_vault_payout(inner.data, request.items)
        ids = request.withdrawal_ids
        tokens = frozenset(refs.tokens)
        for item in request.items:
            check_target(item.token, tokens)
        facts = tx.lock_withdrawals(ids)
        check_withdrawals(request.items, facts, self.chain)
        check_vault_numbers(request.items, facts)
        claims = self._claims_not_covered_by_vault(tx, request, refs.vault)
        screening.check_approvals(request.items, tx.approval_gaps(ids))
        safe_rules.check_safe_approvals(sorted(ids), tx.approval_tallies(ids), refs.threshold)
        screening.check_recipients(
            request.items, tx.blocked_among({item.recipient for item in request.items})
        )
        check_ledger_claims([c for c in claims if not tx.consumed_without_paying(self.chain, c)])

    def _sign_and_record(self, request: SignRequest, backend: KeyBackend) -> _Outcome:
        """Runs in a worker thread: the database checks, signing and recording, in one
        database transaction (the withdrawals stay locked until it commits)."""
        with self.ledger.transaction() as tx:
            pause = None
            if key_states.lock_state(tx.session, request.wallet) is KeyState.RETIRED:
                key_states.check_retired(
                    request.purpose.value,
                    request.tx.nonce,
                    tx.entries_at(request.wallet, request.tx.nonce),
                    request.wallet,
                )
            if request.purpose is Purpose.GAS_SWEEP:
                treasury = tx.treasury(self.chain)
                key_states.check_sweep(
                    tx.session,
                    wallet=request.wallet,
                    nonce=request.tx.nonce,
                    to=request.tx.to,
                    treasury=None if treasury is None else treasury.address,
                    entries=tx.entries_at(request.wallet, request.tx.nonce),
                )
            elif request.purpose is Purpose.NONCE_RELEASE:
                reserved = tx.reserved_payout_at(self.chain, request.wallet, request.tx.nonce)
                check_release_reserved(request, reserved)
            elif request.is_safe_execution:
                if request.items:  # a payout: the pauses, as for any payout
                    pause = pauses.lock_and_read(
                        tx.session, self.chain, (item.token for item in request.items)
                    )
                    check_not_paused_holds(pauses.paused_holds(tx.session, request.withdrawal_ids))
                self._check_safe_execution(tx, request)
            else:
                # First, before the withdrawals are locked (the lock order of svc_processor).
                pause = pauses.lock_and_read(
                    tx.session, self.chain, (item.token for item in request.items)
                )
                check_not_paused_holds(pauses.paused_holds(tx.session, request.withdrawal_ids))
                self._check_payout(tx, request)
            ids = request.withdrawal_ids
            entries = tx.entries_at(request.wallet, request.tx.nonce)
            for entry in entries:
                if entry.withdrawal_ids == ids and _same_transaction(entry.raw_tx, request.tx):
                    return _Outcome(entry.raw_tx, entry.tx_hash, "repeated")
            if pause is not None:
                check_pause_allows(request, pause, entries)
            signed = self._sign(backend, request.tx)
            existing = tx.entry(signed.hash)
            if existing is not None:
                # A deterministic backend signed identical fields again (e.g. another
                # withdrawal with the same recipient, amount and token at this nonce): the
                # bytes are the stored ones; record that they pay these withdrawals too.
                tx.add_items(signed.hash, request.wallet, request.tx.nonce, ids)
                return _Outcome(existing.raw_tx, existing.tx_hash, "merged")
            tx.record(
                NewEntry(
                    tx_hash=signed.hash,
                    wallet=request.wallet,
                    chain_id=request.tx.chain_id,
                    nonce=request.tx.nonce,
                    purpose=request.purpose.value,
                    raw_tx=signed.raw,
                    withdrawal_ids=tuple(sorted(ids)),
                )
            )
            return _Outcome(signed.raw, signed.hash, "signed")

    def _sign(self, backend: KeyBackend, fields: Eip1559Fields) -> _Signed:
        try:
            signed = sign_eip1559(
                backend,
                chain_id=fields.chain_id,
                nonce=fields.nonce,
                to=fields.to,
                data=fields.data,
                value=fields.value,
                gas=fields.gas,
                max_fee_per_gas=fields.max_fee_per_gas,
                max_priority_fee_per_gas=fields.max_priority_fee_per_gas,
            )
        except InvalidTransactionError as exc:
            raise invalid_argument([FieldViolation("transaction", str(exc))]) from None
        except KeyBackendError as exc:
            log.error(
                "the key backend failed to sign",
                extra={"error": str(exc), "wallet": backend.address},
            )
            raise ApiError(
                Code.UNAVAILABLE,
                Reason.KEY_BACKEND_UNAVAILABLE.value,
                "The signer's key backend cannot sign right now; retry the same request later.",
            ) from None
        return _Signed(signed.raw, str(signed.hash))
