"""An owner of the treasury Safe: the signer's `safe_owner` role, transport-neutral.

The treasury is a Safe multisig (M of N, 2 of 3 by default) that owns the payout vault. Each
owner key lives in its own signer process (`SIGNER_ROLE=safe_owner`, its own HSM token or
keystore), so no single process can make a quorum. Such a signer holds exactly one key (any
backend); it answers SignSafeTransaction and refuses SignTransaction (FAILED_PRECONDITION
`UNKNOWN_WALLET`, metadata `signer_role` = `safe_owner`: it holds no hot wallet), as a hot
wallets' signer refuses SignSafeTransaction. ListWallets reports its key with
`ROLE_SAFE_OWNER`.

`SafeOwnerCore.sign_safe(request)` returns the owner's signature or raises an `ApiError`. Bad
input is INVALID_ARGUMENT with one BadRequest violation per field (an `operation` other than
0 or 1, a purpose unspecified, SAFE_PURPOSE_PAYOUT without items or with a change,
SAFE_PURPOSE_TREASURY without `change` = `changes/{id}` or with items). The checks, in order,
and their ErrorInfo reasons:

- WRONG_CHAIN (FAILED_PRECONDITION): `chain_id` is not the configured chain id.
- UNKNOWN_WALLET (FAILED_PRECONDITION): `owner_address` is not this signer's owner key.
- SAFE_NOT_TREASURY (FAILED_PRECONDITION): the chain has no treasury Safe
  (`safe_treasuries`), its record is inconsistent (a threshold below 1 or above its number of
  `safe_owners`), or `safe_address` is not it.
- NOT_SAFE_OWNER (FAILED_PRECONDITION): the key is not among the treasury's `safe_owners`.
- SAFE_DELEGATECALL (PERMISSION_DENIED): `operation` is 1 (DELEGATECALL).
- SAFE_GAS_REFUND (PERMISSION_DENIED): a non-zero `safe_tx_gas`, `base_gas`,
  `gas_price_wei`, or a `gas_token_address` / `refund_receiver_address` other than the zero
  address (a gas refund that pays someone); metadata `fields`.
- SAFE_SELF_CALL (PERMISSION_DENIED): the transaction calls the Safe itself (owners,
  threshold, modules, guard, fallback handler); metadata `function` names the decoded
  function (addOwnerWithThreshold, removeOwner, swapOwner, changeThreshold, enableModule,
  disableModule, setGuard, setFallbackHandler, ...) when the selector is known.
- TARGET_NOT_ALLOWED (PERMISSION_DENIED): the target is not the chain's enabled payout vault,
  an enabled token, or one of its enabled hot wallets with empty data (value only).
- NONZERO_VALUE (PERMISSION_DENIED): a call of the vault or a token carries native value.

Then by purpose:

- SAFE_PURPOSE_PAYOUT: the calldata is `vault.payout(token, firstNumber, payments)` paying
  exactly the items, value 0 (TARGET_NOT_ALLOWED, NONZERO_VALUE, UNSUPPORTED_CALLDATA,
  CALLDATA_MISMATCH as for a hot payout), and the hot wallet's payout rules of
  `svc_signer.core` apply to the items: an enabled token (TARGET_NOT_ALLOWED), facts matching
  the database, a payable state and the payout number (NOT_APPROVED), no item ON_HOLD
  `PAUSED` and no pause covering the payout (PAUSED), the approvals the item's rule required
  (NOT_APPROVED, `problem` = `approvals`), no blocked recipient (RECIPIENT_BLOCKED). Besides:
  - BELOW_SAFE_THRESHOLD (FAILED_PRECONDITION): an item's amount is not above its token's
    `safe_threshold_base_units` (or the token has none): a hot wallet pays it.
  - NOT_APPROVED (FAILED_PRECONDITION, `problem` = `safe_approvals`): an item's approval
    request did not end APPROVED with at least the Safe's threshold of distinct approvers
    (operators other than the withdrawal's creator, as `withdrawal_shared.approvals` counts
    them; metadata `required`, `approved`).
- SAFE_PURPOSE_TREASURY: the operation a four-eyes change ordered.
  - CHANGE_NOT_APPLIED (FAILED_PRECONDITION): `change` does not exist, is not APPLIED, is not
    of a kind of `withdrawal_shared.treasury_ops.KINDS`, or cannot be built on the chain's
    setup; metadata `problem` (missing, state, kind, payload, setup).
  - CHANGE_CALL_MISMATCH (PERMISSION_DENIED): (to, value, data) is not exactly the call
    `treasury_ops.build(kind, payload, refs)` makes, with refs from the database (the
    treasury Safe, the enabled vault, the enabled tokens, the enabled hot wallets of
    `hot_wallets`); metadata `fields`.
  - A `hot_wallet.rotate` change (a step of a key rotation, `svc_processor.rotation`): the
    call must be one of the three the change orders, rebuilt from its payload and the new
    wallet of its rotation, and only when the hot signer recorded that key in `signer_keys`
    for that rotation (`request_id` = the rotation's id; only the signer writes the table):
    `vault.setOperator(new, true)`, a transfer of `gas_wei` to the new wallet (once it is an
    enabled hot wallet), `vault.setOperator(old, false)`; otherwise CHANGE_CALL_MISMATCH (and
    CHANGE_NOT_APPLIED when the change is not APPLIED or its payload is invalid). The gas
    funding is signed once per owner: again at another Safe nonce is CHANGE_CALL_MISMATCH
    (metadata `signed_at`).

Last, the owner's own record (`safe_owner_signatures`, one row per Safe, Safe nonce and owner):

- SAFE_NONCE_ALREADY_SIGNED (FAILED_PRECONDITION): this owner already signed another Safe
  transaction hash at this Safe nonce; an owner never authorises two transactions at one
  Safe nonce (metadata `safe_nonce`, `safe_tx_hash` of the one it signed).

A repeated request for the same hash returns the stored signature (idempotent; nothing is
signed again), after the checks above and before the check of an active pause (as a repeated
hot-wallet request; an item ON_HOLD `PAUSED` is refused even then). A treasury operation is
never held by the payout pause (pausing the vault must stay possible). A signing backend
failure is UNAVAILABLE (KEY_BACKEND_UNAVAILABLE): retry later.

The signer computes the EIP-712 `safe_tx_hash` from the fields itself (it never signs a hash it
is handed), signs the raw 32-byte hash with its key backend's `sign_digest`, checks that the
signature recovers to its key, and returns the Safe form (`r || s || v`, v 27 or 28). The
checks, the signature and its record are one database transaction: the pause row (payouts),
then the withdrawals, then the treasury row are locked (the hot signer's lock order, the
treasury last), so concurrent requests for one Safe are recorded one after the other.

An owner does not consult the hot wallet's ledger: its signature moves nothing by itself, the
vault pays each payout number (checked against the database) at most once, and the hot
wallet's signer applies the double-payment rule when it signs the execution.

The hot wallet's side, PURPOSE_SAFE_EXECUTION (`svc_signer.core`), shares these rules
(`svc_signer.safe_rules`) and adds one reason:

- OWNER_SIGNATURES_BELOW_THRESHOLD (FAILED_PRECONDITION): the `execTransaction` signatures
  are not all owners' ECDSA signatures (v 27 or 28) over the Safe transaction hash at
  `safe_nonce`, of distinct current owners in ascending address order, at least the
  treasury's threshold of them; metadata `threshold`, `valid`, `index`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from eth_utils.address import to_checksum_address
from sqlalchemy import select

from assetwithdrawal.signer.v1 import signer_pb2
from svc_signer import pauses, safe_rules, screening
from svc_signer.core import (
    PayoutItem,
    SignerCore,
    check_not_paused_holds,
    check_target,
    check_vault_numbers,
    check_vault_payout,
    check_withdrawals,
    parse_items,
)
from svc_signer.keys import KeyBackend, KeyBackendError, KeyRing
from svc_signer.keys.backend import recover_address
from svc_signer.ledger import Ledger, LedgerTransaction, SafeSignatureRecord
from svc_signer.reasons import Reason, refusal
from withdrawal_shared import tracing
from withdrawal_shared.addresses import AddressError, parse_address
from withdrawal_shared.chain.safe_tx import SafeTx, owner_signature, safe_tx_hash
from withdrawal_shared.chain.types import ChecksumAddress
from withdrawal_shared.db import rotation_changes
from withdrawal_shared.db.models import SafeOwnerSignature
from withdrawal_shared.db.pauses import PauseState
from withdrawal_shared.errors import ApiError, Code, FieldViolation, invalid_argument

log = logging.getLogger(__name__)

_UINT256_MAX = 2**256 - 1

PAYOUT = "PAYOUT"
TREASURY = "TREASURY"


@dataclass(frozen=True)
class SafeRequest:
    """A SignSafeTransaction request after its fields were parsed and checked for form."""

    owner: str  # lowercase
    chain_id: int
    safe: str  # lowercase
    tx: SafeTx
    purpose: str  # PAYOUT or TREASURY
    items: tuple[PayoutItem, ...]
    change_id: str | None

    @property
    def withdrawal_ids(self) -> frozenset[str]:
        return frozenset(item.withdrawal_id for item in self.items)


def _uint(text: str, name: str, problems: list[FieldViolation]) -> int:
    if text == "":
        return 0
    if not text.isascii() or not text.isdigit() or len(text) > 78 or int(text) > _UINT256_MAX:
        problems.append(FieldViolation(name, "must be a non-negative decimal integer (uint256)"))
        return 0
    return int(text)


def _address(text: str, name: str, problems: list[FieldViolation], *, empty: str = "") -> str:
    """A lowercase address; with `empty` (the zero address), "" and the zero address are it
    (`parse_address` refuses the zero address as a recipient)."""
    if empty and (text == "" or text.lower() == empty):
        return empty
    try:
        return parse_address(text)
    except AddressError as exc:
        problems.append(FieldViolation(name, str(exc)))
        return "0x" + "00" * 20


def parse_safe_request(request: signer_pb2.SignSafeTransactionRequest) -> SafeRequest:
    """Check every field's form; raises INVALID_ARGUMENT naming each bad field."""
    problems: list[FieldViolation] = []
    owner = _address(request.owner_address, "owner_address", problems)
    if request.chain_id == 0:
        problems.append(FieldViolation("chain_id", "is required (137 for Polygon PoS)"))
    safe = _address(request.safe_address, "safe_address", problems)
    if not request.HasField("transaction"):
        problems.append(FieldViolation("transaction", "is required"))
    given = request.transaction
    zero = "0x" + "00" * 20
    to = _address(given.to_address, "transaction.to_address", problems)
    if given.operation not in (0, 1):
        problems.append(
            FieldViolation("transaction.operation", "must be 0 (CALL) or 1 (DELEGATECALL)")
        )
    tx = SafeTx(
        to=ChecksumAddress(to_checksum_address(to)),
        value=_uint(given.value_wei, "transaction.value_wei", problems),
        data=bytes(given.data),
        operation=given.operation,
        safe_tx_gas=_uint(given.safe_tx_gas, "transaction.safe_tx_gas", problems),
        base_gas=_uint(given.base_gas, "transaction.base_gas", problems),
        gas_price=_uint(given.gas_price_wei, "transaction.gas_price_wei", problems),
        gas_token=ChecksumAddress(
            to_checksum_address(
                _address(
                    given.gas_token_address, "transaction.gas_token_address", problems, empty=zero
                )
            )
        ),
        refund_receiver=ChecksumAddress(
            to_checksum_address(
                _address(
                    given.refund_receiver_address,
                    "transaction.refund_receiver_address",
                    problems,
                    empty=zero,
                )
            )
        ),
        nonce=given.nonce,
    )
    items = parse_items(request.items, problems)
    change_id: str | None = None
    purpose = ""
    if request.purpose == signer_pb2.SAFE_PURPOSE_PAYOUT:
        purpose = PAYOUT
        if not request.items:
            problems.append(FieldViolation("items", "a Safe payout pays at least one item"))
        if request.change:
            problems.append(FieldViolation("change", "is only for SAFE_PURPOSE_TREASURY"))
    elif request.purpose == signer_pb2.SAFE_PURPOSE_TREASURY:
        purpose = TREASURY
        change_id = safe_rules.parse_change(request.change)
        if change_id is None:
            problems.append(
                FieldViolation("change", "must be the applied change's name, changes/{id}")
            )
        if request.items:
            problems.append(FieldViolation("items", "a treasury operation pays no items"))
    else:
        problems.append(
            FieldViolation("purpose", "must be SAFE_PURPOSE_PAYOUT or SAFE_PURPOSE_TREASURY")
        )
    if problems:
        raise invalid_argument(problems)
    return SafeRequest(
        owner=owner,
        chain_id=request.chain_id,
        safe=safe,
        tx=tx,
        purpose=purpose,
        items=tuple(items),
        change_id=change_id,
    )


def check_not_paused(pause: PauseState | None) -> None:
    """No pause covers a Safe payout (an owner has no replacement to let through)."""
    if pause is not None:
        raise refusal(
            Code.FAILED_PRECONDITION,
            Reason.PAUSED,
            f"Payouts are paused ({pause.scope}"
            + (f": {pause.reason}" if pause.reason else "")
            + "); no owner signature is given for a payout in this scope until the pause is "
            "lifted.",
            scope=pause.scope,
        )


@dataclass(frozen=True)
class _Given:
    hash: bytes
    signature: bytes
    how: str  # signed | repeated


class SafeOwnerCore(SignerCore):
    """A signer holding exactly one owner key of the treasury Safe (`SIGNER_ROLE=safe_owner`):
    signs Safe transactions under the policy above, refuses SignTransaction."""

    def __init__(
        self,
        keys: KeyRing | KeyBackend | Sequence[KeyBackend],
        ledger: Ledger,
        executor: Executor,
        *,
        chain_id: int,
        chain: str,
    ) -> None:
        super().__init__(keys, ledger, executor, chain_id=chain_id, chain=chain)
        if len(self.keys) != 1:
            raise KeyBackendError(
                f"a Safe owner's signer holds exactly one key, not {len(self.keys)}: give each "
                "owner key its own signer (SIGNER_KEYSTORE_COUNT=1, one SIGNER_PKCS11_KEY_LABEL)"
            )

    @property
    def owner(self) -> str:
        """The owner's checksummed address."""
        return self.keys.first.address

    async def sign(self, request: signer_pb2.SignTransactionRequest) -> tuple[bytes, str]:
        error = refusal(
            Code.FAILED_PRECONDITION,
            Reason.UNKNOWN_WALLET,
            f"This signer holds an owner key of the treasury Safe (SIGNER_ROLE=safe_owner), no "
            f"hot wallet, so it signs no transaction for {request.wallet_address or '(none)'}; "
            "send SignTransaction to the hot wallets' signer.",
            wallet=request.wallet_address,
            signer_role="safe_owner",
        )
        log.warning(
            "signing refused",
            extra={"wallet": request.wallet_address.lower(), "reason": error.reason},
        )
        raise error

    def list_wallets(self) -> signer_pb2.ListWalletsResponse:
        return signer_pb2.ListWalletsResponse(
            wallets=[
                signer_pb2.Wallet(
                    address=backend.address,
                    backend=backend.backend_name,
                    role=signer_pb2.Wallet.ROLE_SAFE_OWNER,
                    state=signer_pb2.Wallet.STATE_ACTIVE,
                )
                for backend in self.keys
            ]
        )

    async def create_wallet(self, request: signer_pb2.CreateWalletRequest) -> signer_pb2.Wallet:
        raise self._no_hot_wallets("CreateWallet")

    async def retire_wallet(self, request: signer_pb2.RetireWalletRequest) -> signer_pb2.Wallet:
        raise self._no_hot_wallets("RetireWallet")

    @staticmethod
    def _no_hot_wallets(method: str) -> ApiError:
        return refusal(
            Code.FAILED_PRECONDITION,
            Reason.UNKNOWN_WALLET,
            f"This signer holds an owner key of the treasury Safe (SIGNER_ROLE=safe_owner): "
            f"{method} is for the hot wallets' signer.",
            signer_role="safe_owner",
        )

    async def sign_safe(
        self, request: signer_pb2.SignSafeTransactionRequest
    ) -> signer_pb2.SignSafeTransactionResponse:
        """Sign `request` with the owner key (or return the signature given for it before);
        raises ApiError."""
        context = {
            "owner": request.owner_address.lower(),
            "safe": request.safe_address.lower(),
            "safe_nonce": request.transaction.nonce,
            "purpose": signer_pb2.SafePurpose.Name(request.purpose)
            if request.purpose in signer_pb2.SafePurpose.values()
            else str(request.purpose),
        }
        try:
            checked = parse_safe_request(request)
            if checked.chain_id != self.chain_id:
                raise refusal(
                    Code.FAILED_PRECONDITION,
                    Reason.WRONG_CHAIN,
                    f"This signer signs only for chain id {self.chain_id}, not "
                    f"{checked.chain_id}; send the request to the owner's signer of that chain.",
                    expected_chain_id=self.chain_id,
                    chain_id=checked.chain_id,
                )
            backend = self.keys.get(checked.owner)
            if backend is None:
                raise refusal(
                    Code.FAILED_PRECONDITION,
                    Reason.UNKNOWN_WALLET,
                    f"This signer holds the owner key {self.owner}, not {checked.owner}; ask "
                    "that owner's own signer (ListWallets shows the key a signer holds).",
                    wallet=checked.owner,
                )
            loop = asyncio.get_running_loop()
            with tracing.span("signer check Safe policy, sign and record", context):
                given = await loop.run_in_executor(
                    self.executor, self._sign_and_record_safe, checked, backend
                )
        except ApiError as err:
            log.warning(
                "signing refused",
                extra={**context, "reason": err.reason, "code": err.code.name},
            )
            raise
        log.info(
            "Safe transaction signed" if given.how == "signed" else "owner signature returned",
            extra={
                **context,
                "safe_tx_hash": "0x" + given.hash.hex(),
                "outcome": given.how,
                "change": checked.change_id or "",
                "withdrawal_ids": sorted(checked.withdrawal_ids),
            },
        )
        return signer_pb2.SignSafeTransactionResponse(
            safe_transaction_hash=given.hash,
            owner_address=backend.address,
            signature=given.signature,
        )

    def _check_safe_items(
        self, tx: LedgerTransaction, request: SafeRequest, refs: safe_rules.SafeRefs
    ) -> None:
        """A Safe payout: the vault's payout of exactly the items, under the payout rules,
        each above its token's Safe threshold and approved by the Safe's threshold."""
        safe_rules.check_vault_target(request.tx, refs)
        check_vault_payout(request.tx.data, request.items)
        tokens = frozenset(refs.tokens)
        for item in request.items:
            check_target(item.token, tokens)
        safe_rules.check_above_safe_threshold(
            ((item.withdrawal_id, item.amount, item.token) for item in request.items), refs.tokens
        )
        ids = request.withdrawal_ids
        facts = tx.lock_withdrawals(ids)
        check_withdrawals(request.items, facts, self.chain)
        check_vault_numbers(request.items, facts)
        screening.check_approvals(request.items, tx.approval_gaps(ids))
        safe_rules.check_safe_approvals(sorted(ids), tx.approval_tallies(ids), refs.threshold)
        screening.check_recipients(
            request.items, tx.blocked_among({item.recipient for item in request.items})
        )

    def _sign_and_record_safe(self, request: SafeRequest, backend: KeyBackend) -> _Given:
        """Runs in a worker thread: the database checks, the signature and its record, in one
        database transaction."""
        with self.ledger.transaction() as tx:
            refs = safe_rules.load_refs(tx, self.chain)  # plain reads, no lock taken
            safe_rules.check_is_treasury(request.safe, refs)
            if request.owner not in refs.owners:
                raise refusal(
                    Code.FAILED_PRECONDITION,
                    Reason.NOT_SAFE_OWNER,
                    f"{request.owner} is not an owner of the treasury Safe {refs.safe} "
                    "(safe_owners); this key signs nothing for it.",
                    owner=request.owner,
                    safe_address=refs.safe,
                )
            safe_rules.check_static(request.tx, refs)
            pause = None
            kind = ""
            if request.purpose == PAYOUT:
                # Before the withdrawals are locked (the lock order of svc_processor).
                pause = pauses.lock_and_read(
                    tx.session, self.chain, (item.token for item in request.items)
                )
                check_not_paused_holds(pauses.paused_holds(tx.session, request.withdrawal_ids))
                self._check_safe_items(tx, request, refs)
            else:
                assert request.change_id is not None
                kind = safe_rules.check_treasury_change(
                    request.change_id, tx.change(request.change_id), request.tx, refs
                )
            digest = safe_tx_hash(request.chain_id, refs.safe, request.tx)
            # Last (the treasury row locked): one signature per Safe nonce and owner.
            tx.treasury(self.chain, lock=True)
            given = tx.safe_signature(refs.safe, request.tx.nonce, request.owner)
            if given is not None:
                if given.safe_tx_hash == "0x" + digest.hex():
                    return _Given(digest, given.signature, "repeated")
                raise refusal(
                    Code.FAILED_PRECONDITION,
                    Reason.SAFE_NONCE_ALREADY_SIGNED,
                    f"Owner {request.owner} already signed Safe transaction {given.safe_tx_hash} "
                    f"at Safe nonce {request.tx.nonce}; an owner authorises one transaction per "
                    "Safe nonce: execute or replace that one, or use the next Safe nonce.",
                    safe_nonce=request.tx.nonce,
                    safe_tx_hash=given.safe_tx_hash,
                )
            if kind == rotation_changes.KIND and request.tx.value > 0:
                self._check_one_funding(tx, request, refs.safe)
            check_not_paused(pause)
            signature = self._owner_signature(backend, digest)
            tx.record_safe_signature(
                SafeSignatureRecord(
                    safe=refs.safe,
                    safe_nonce=request.tx.nonce,
                    owner=request.owner,
                    chain_id=request.chain_id,
                    safe_tx_hash="0x" + digest.hex(),
                    signature=signature,
                    purpose=request.purpose,
                    to=request.tx.to.lower(),
                    change_id=request.change_id,
                    withdrawal_ids=tuple(sorted(request.withdrawal_ids)),
                )
            )
            return _Given(digest, signature, "signed")

    @staticmethod
    def _check_one_funding(tx: LedgerTransaction, request: SafeRequest, safe: str) -> None:
        """A rotation funds its new wallet's gas once: this owner signed no transfer to it for
        the same change at another Safe nonce (read under the treasury row's lock)."""
        other = tx.session.scalar(
            select(SafeOwnerSignature.safe_nonce)
            .where(
                SafeOwnerSignature.safe_address == safe,
                SafeOwnerSignature.owner_address == request.owner,
                SafeOwnerSignature.change_id == request.change_id,
                SafeOwnerSignature.to_address == request.tx.to.lower(),
                SafeOwnerSignature.safe_nonce != request.tx.nonce,
            )
            .limit(1)
        )
        if other is not None:
            raise refusal(
                Code.PERMISSION_DENIED,
                Reason.CHANGE_CALL_MISMATCH,
                f"Owner {request.owner} already signed the gas funding of change "
                f"changes/{request.change_id} at Safe nonce {other}; a rotation funds its new "
                "wallet once.",
                change=f"changes/{request.change_id}",
                fields="value_wei",
                signed_at=other,
            )

    def _owner_signature(self, backend: KeyBackend, digest: bytes) -> bytes:
        """The backend's signature of the raw hash in the Safe's form, checked to recover to
        the owner; UNAVAILABLE `KEY_BACKEND_UNAVAILABLE` when the backend fails."""
        try:
            signed = backend.sign_digest(digest)
            if recover_address(digest, signed) != backend.address:
                raise KeyBackendError(
                    f"the {backend.backend_name} backend's signature does not recover to "
                    f"{backend.address}"
                )
        except KeyBackendError as exc:
            log.error(
                "the key backend failed to sign",
                extra={"error": str(exc), "owner": backend.address},
            )
            raise ApiError(
                Code.UNAVAILABLE,
                Reason.KEY_BACKEND_UNAVAILABLE.value,
                "The signer's key backend cannot sign right now; retry the same request later.",
            ) from None
        return owner_signature(backend.address, signed.r, signed.s, signed.v).signature
