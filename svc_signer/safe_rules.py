"""The treasury Safe's rules shared by an owner's signer (`svc_signer.safe_owner`, before it
signs a Safe transaction) and the hot wallet's signer (`svc_signer.core`, before it signs the
`execTransaction` call that runs one): each rule a small function raising the refusal. The
reasons are documented in `svc_signer.safe_owner`.

Everything is decided from the fields and the database (`SafeRefs`, read in the signing
transaction), never from what the caller says it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from svc_signer.keys.backend import Signature, recover_address
from svc_signer.ledger import ChangeFacts, LedgerTransaction, TokenFacts
from svc_signer.reasons import Reason, refusal
from withdrawal_shared import treasury_ops
from withdrawal_shared.approvals.core import APPROVED, ApprovalTally
from withdrawal_shared.chain.erc20 import CalldataError
from withdrawal_shared.chain.payout import Payment, decode_payout
from withdrawal_shared.chain.safe_tx import (
    SIGNATURE_SIZE,
    Operation,
    SafeTx,
    decode_exec_transaction,
)
from withdrawal_shared.chain.types import ChecksumAddress
from withdrawal_shared.db import rotation_changes
from withdrawal_shared.errors import ApiError, Code
from withdrawal_shared.ids import is_ulid

CHANGE_PREFIX = "changes/"

SAFE_FUNCTIONS: dict[bytes, str] = {
    keccak(text=signature)[:4]: signature.split("(", 1)[0]
    for signature in (
        "addOwnerWithThreshold(address,uint256)",
        "removeOwner(address,address,uint256)",
        "swapOwner(address,address,address)",
        "changeThreshold(uint256)",
        "enableModule(address)",
        "disableModule(address,address)",
        "setGuard(address)",
        "setModuleGuard(address)",
        "setFallbackHandler(address)",
        "approveHash(bytes32)",
        "execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)",
        "execTransactionFromModule(address,uint256,bytes,uint8)",
        "setup(address[],uint256,address,bytes,address,address,uint256,address)",
    )
}
"""Functions of the Safe itself, by selector: named in the SAFE_SELF_CALL refusal."""


@dataclass(frozen=True)
class SafeRefs:
    """The chain's treasury setup as the database records it (addresses lowercase)."""

    chain: str
    safe: str
    threshold: int
    owners: frozenset[str]
    vault: str | None  # the enabled PayoutVault
    tokens: Mapping[str, TokenFacts]  # enabled tokens, by contract
    hot_wallets: frozenset[str]  # enabled hot wallets

    def treasury_refs(self) -> treasury_ops.TreasuryRefs:
        """The references `treasury_ops.build` takes; TreasuryOperationError without a vault."""
        if self.vault is None:
            raise treasury_ops.TreasuryOperationError(
                f"{self.chain} has no enabled payout vault (payout_vaults)"
            )
        return treasury_ops.TreasuryRefs(
            chain=self.chain,
            safe=ChecksumAddress(to_checksum_address(self.safe)),
            vault=ChecksumAddress(to_checksum_address(self.vault)),
            tokens={
                token.symbol.upper(): ChecksumAddress(to_checksum_address(token.contract))
                for token in self.tokens.values()
            },
            hot_wallets=self.hot_wallets,
        )


def load_refs(tx: LedgerTransaction, chain: str, *, lock: bool = False) -> SafeRefs:
    """The chain's treasury setup; SAFE_NOT_TREASURY when the chain has no treasury Safe."""
    treasury = tx.treasury(chain, lock=lock)
    if treasury is None:
        raise refusal(
            Code.FAILED_PRECONDITION,
            Reason.SAFE_NOT_TREASURY,
            f"Chain {chain} has no treasury Safe (safe_treasuries); nothing is signed for a Safe "
            "until the bootstrap records it.",
            chain=chain,
        )
    if not 1 <= treasury.threshold <= len(treasury.owners):
        raise refusal(
            Code.FAILED_PRECONDITION,
            Reason.SAFE_NOT_TREASURY,
            f"The treasury Safe of {chain} is recorded with threshold {treasury.threshold} and "
            f"{len(treasury.owners)} owner(s); nothing is signed for it until safe_treasuries "
            "and safe_owners agree with the Safe (a threshold of at least 1, at most the "
            "owners).",
            chain=chain,
            threshold=treasury.threshold,
            owners=len(treasury.owners),
        )
    return SafeRefs(
        chain=chain,
        safe=treasury.address,
        threshold=treasury.threshold,
        owners=treasury.owners,
        vault=tx.payout_vault(chain),
        tokens=tx.enabled_tokens(chain),
        hot_wallets=tx.hot_wallets(chain),
    )


def check_is_treasury(safe: str, refs: SafeRefs) -> None:
    """`safe` (lowercase) is the chain's treasury Safe."""
    if safe != refs.safe:
        raise refusal(
            Code.FAILED_PRECONDITION,
            Reason.SAFE_NOT_TREASURY,
            f"{safe} is not the treasury Safe of {refs.chain} ({refs.safe}); this signer signs "
            "only for that Safe.",
            safe_address=safe,
            treasury=refs.safe,
        )


def check_static(tx: SafeTx, refs: SafeRefs) -> None:
    """What every treasury Safe transaction must be, whatever its purpose: a CALL without a
    gas refund, of the vault or an enabled token without value, or a plain value transfer to
    a hot wallet; never a call of the Safe itself."""
    if tx.operation != Operation.CALL:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.SAFE_DELEGATECALL,
            "A DELEGATECALL runs foreign code with the Safe's own storage and funds; only "
            "CALL (operation 0) is signed.",
            operation=tx.operation,
        )
    refund = [
        name
        for name, bad in (
            ("safe_tx_gas", tx.safe_tx_gas != 0),
            ("base_gas", tx.base_gas != 0),
            ("gas_price_wei", tx.gas_price != 0),
            ("gas_token_address", int(tx.gas_token, 16) != 0),
            ("refund_receiver_address", int(tx.refund_receiver, 16) != 0),
        )
        if bad
    ]
    if refund:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.SAFE_GAS_REFUND,
            f"A treasury Safe transaction refunds no gas to anyone: set {', '.join(refund)} to "
            "0 (the zero address for addresses).",
            fields=",".join(refund),
        )
    to = tx.to.lower()
    if to == refs.safe:
        name = SAFE_FUNCTIONS.get(tx.data[:4])
        what = f"{name}" if name else f"selector 0x{tx.data[:4].hex() or '(none)'}"
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.SAFE_SELF_CALL,
            f"The Safe transaction calls the Safe itself ({what}): owners, threshold, modules, "
            "guards and the fallback handler are never changed through this signer; an owner "
            "change is a ceremony of the owners' own keys.",
            function=name or "",
        )
    if to == refs.vault or to in refs.tokens:
        if tx.value != 0:
            raise refusal(
                Code.PERMISSION_DENIED,
                Reason.NONZERO_VALUE,
                f"A call of the vault or a token carries no native value: set value_wei to 0 "
                f"(not {tx.value}).",
                to_address=to,
            )
        return
    if to in refs.hot_wallets:
        if tx.data:
            raise refusal(
                Code.PERMISSION_DENIED,
                Reason.TARGET_NOT_ALLOWED,
                f"{to} is a hot wallet: the treasury only sends it native value, with empty data.",
                to_address=to,
            )
        return
    raise refusal(
        Code.PERMISSION_DENIED,
        Reason.TARGET_NOT_ALLOWED,
        f"{to} is not a target of the treasury Safe: only the payout vault, an enabled token "
        f"of {refs.chain} or (value only) one of its hot wallets.",
        to_address=to,
    )


def check_vault_target(tx: SafeTx, refs: SafeRefs) -> None:
    """A Safe payout calls the chain's enabled vault with no value."""
    if refs.vault is None or tx.to.lower() != refs.vault:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.TARGET_NOT_ALLOWED,
            f"A Safe payout calls the payout vault of {refs.chain} "
            f"({refs.vault or 'none enabled'}), not {tx.to.lower()}.",
            to_address=tx.to.lower(),
        )
    if tx.value != 0:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.NONZERO_VALUE,
            "A token payout carries no native value: set value_wei to 0.",
        )


def check_above_safe_threshold(
    items: Iterable[tuple[str, int, str]], tokens: Mapping[str, TokenFacts]
) -> None:
    """Each (withdrawal id, amount, token contract) is above its token's Safe threshold:
    anything else is paid by a hot wallet."""
    for withdrawal_id, amount, token in items:
        facts = tokens.get(token)
        threshold = facts.safe_threshold if facts is not None else None
        if threshold is None or amount <= threshold:
            raise refusal(
                Code.FAILED_PRECONDITION,
                Reason.BELOW_SAFE_THRESHOLD,
                f"Withdrawal {withdrawal_id} pays {amount} base units, not above its token's "
                f"Safe threshold ({'none set' if threshold is None else threshold}): a hot "
                "wallet pays it, not the treasury Safe.",
                withdrawal_id=withdrawal_id,
                safe_threshold_base_units="" if threshold is None else threshold,
            )


def check_safe_approvals(
    withdrawal_ids: Iterable[str], tallies: Mapping[str, ApprovalTally], threshold: int
) -> None:
    """Each withdrawal's approval request ended APPROVED with at least the Safe's threshold
    of distinct approvers (operators other than its creator): as many people approved it
    as keys sign it."""
    for withdrawal_id in withdrawal_ids:
        tally = tallies.get(withdrawal_id)
        approved = tally.approved if tally is not None else 0
        outcome = tally.outcome if tally is not None else "none"
        if tally is None or tally.outcome != APPROVED or approved < threshold:
            raise refusal(
                Code.FAILED_PRECONDITION,
                Reason.NOT_APPROVED,
                f"Withdrawal {withdrawal_id} is paid by the treasury Safe, so it needs an "
                f"approval request that ended APPROVED with at least {threshold} distinct "
                f"approvers; it has {approved} (request outcome: {outcome or 'undecided'}).",
                withdrawal_id=withdrawal_id,
                problem="safe_approvals",
                required=threshold,
                approved=approved,
            )


def parse_change(name: str) -> str | None:
    """The change id of `changes/{id}`, or None when `name` is not of that form."""
    change_id = name.removeprefix(CHANGE_PREFIX)
    if not name.startswith(CHANGE_PREFIX) or not is_ulid(change_id):
        return None
    return change_id


def _change_refusal(change_id: str, problem: str, message: str, **metadata: object) -> ApiError:
    return refusal(
        Code.FAILED_PRECONDITION,
        Reason.CHANGE_NOT_APPLIED,
        message,
        change=CHANGE_PREFIX + change_id,
        problem=problem,
        **metadata,
    )


def rotation_calls(change: ChangeFacts, refs: SafeRefs) -> list[treasury_ops.TreasuryCall]:
    """The only calls a `hot_wallet.rotate` change orders the Safe to make, rebuilt from the
    change's payload and the key the hot signer created for its rotation: make the new wallet
    an operator, send it `gas_wei`, remove the old wallet's operator role. None without a new
    key the signer created for the rotation."""
    payload = json.loads(change.payload)
    if not isinstance(payload, dict):
        raise ValueError("the payload is not an object")
    rotation_changes.validate(payload)
    new = change.rotation_wallet
    if new is None:
        return []
    treasury = refs.treasury_refs()
    chain, old = str(payload["chain"]), str(payload["wallet"]).lower()
    operations = [
        (treasury_ops.SET_VAULT_OPERATOR, {"chain": chain, "operator": new, "allowed": True}),
        (treasury_ops.SET_VAULT_OPERATOR, {"chain": chain, "operator": old, "allowed": False}),
    ]
    calls = [treasury_ops.build(kind, body, treasury) for kind, body in operations]
    if new in refs.hot_wallets:  # fund_gas builds for a registered, enabled hot wallet only
        body = {"chain": chain, "wallet": new, "amount_wei": str(payload["gas_wei"])}
        calls.append(treasury_ops.build(treasury_ops.FUND_GAS, body, treasury))
    return calls


def check_rotation_step(change_id: str, change: ChangeFacts, tx: SafeTx, refs: SafeRefs) -> str:
    """A step of the rotation an APPLIED `hot_wallet.rotate` change ordered: exactly one of
    `rotation_calls`."""
    if change.state != "APPLIED":
        raise _change_refusal(
            change_id,
            "state",
            f"Change {CHANGE_PREFIX}{change_id} is {change.state}: a rotation's step is signed "
            "only once another admin confirmed it (APPLIED).",
            state=change.state,
        )
    try:
        calls = rotation_calls(change, refs)
    except treasury_ops.TreasuryOperationError as exc:
        raise _change_refusal(
            change_id,
            "setup",
            f"Change {CHANGE_PREFIX}{change_id} cannot be run on this chain's setup: {exc}.",
        ) from None
    except (ValueError, ApiError) as exc:
        raise _change_refusal(
            change_id,
            "payload",
            f"Change {CHANGE_PREFIX}{change_id} has no valid {change.kind} payload ({exc}).",
        ) from None
    given = (tx.to.lower(), tx.value, tx.data)
    if not any((c.to.lower(), c.value, c.data) == given for c in calls):
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.CHANGE_CALL_MISMATCH,
            f"The Safe transaction is none of the calls of the rotation change "
            f"{CHANGE_PREFIX}{change_id} orders (the new wallet the hot signer created for it "
            "made an operator and funded with its gas_wei, the old wallet's operator role "
            "removed).",
            change=CHANGE_PREFIX + change_id,
            fields="to_address,value_wei,data",
        )
    return change.kind


def check_treasury_change(
    change_id: str, change: ChangeFacts | None, tx: SafeTx, refs: SafeRefs
) -> str:
    """The change exists, is APPLIED, is a treasury operation, and the Safe transaction is
    exactly (to, value, data) of the call `treasury_ops.build` makes for it; its kind."""
    if change is None:
        raise _change_refusal(
            change_id, "missing", f"Change {CHANGE_PREFIX}{change_id} does not exist."
        )
    if change.kind == rotation_changes.KIND:
        return check_rotation_step(change_id, change, tx, refs)
    if change.kind not in treasury_ops.KINDS:
        raise _change_refusal(
            change_id,
            "kind",
            f"Change {CHANGE_PREFIX}{change_id} is a {change.kind} change, not a treasury "
            f"operation ({', '.join(treasury_ops.KINDS)}).",
            kind=change.kind,
        )
    if change.state != "APPLIED":
        raise _change_refusal(
            change_id,
            "state",
            f"Change {CHANGE_PREFIX}{change_id} is {change.state}: a treasury operation is "
            "signed only once another admin confirmed it (APPLIED).",
            state=change.state,
        )
    try:
        payload = json.loads(change.payload)
        if not isinstance(payload, dict):
            raise ValueError("the payload is not an object")
        call = treasury_ops.build(change.kind, payload, refs.treasury_refs())
    except treasury_ops.TreasuryOperationError as exc:
        raise _change_refusal(
            change_id,
            "setup",
            f"Change {CHANGE_PREFIX}{change_id} cannot be run on this chain's setup: {exc}.",
        ) from None
    except ValueError as exc:
        raise _change_refusal(
            change_id,
            "payload",
            f"Change {CHANGE_PREFIX}{change_id} has no valid {change.kind} payload ({exc}).",
        ) from None
    differing = [
        name
        for name, wanted, given in (
            ("to_address", call.to.lower(), tx.to.lower()),
            ("value_wei", call.value, tx.value),
            ("data", call.data, tx.data),
        )
        if wanted != given
    ]
    if differing:
        raise refusal(
            Code.PERMISSION_DENIED,
            Reason.CHANGE_CALL_MISMATCH,
            f"The Safe transaction is not the call change {CHANGE_PREFIX}{change_id} "
            f"({change.kind}) makes: {', '.join(differing)} differ; rebuild it with "
            "withdrawal_shared.treasury_ops.build.",
            change=CHANGE_PREFIX + change_id,
            fields=",".join(differing),
        )
    return change.kind


def _signature_refusal(message: str, refs: SafeRefs, valid: int, **metadata: object) -> ApiError:
    return refusal(
        Code.FAILED_PRECONDITION,
        Reason.OWNER_SIGNATURES_BELOW_THRESHOLD,
        message + " Collect the owners' signatures again (SignSafeTransaction) over the hash "
        "at this Safe nonce.",
        threshold=refs.threshold,
        valid=valid,
        **metadata,
    )


def check_owner_signatures(digest: bytes, signatures: bytes, refs: SafeRefs) -> list[str]:
    """The packed signatures of `execTransaction` are ECDSA signatures (`v` 27 or 28) over
    `digest`, each of a distinct current owner in ascending address order (as the Safe
    requires), at least the threshold of them; the owners (lowercase)."""
    if len(signatures) % SIGNATURE_SIZE != 0:
        raise _signature_refusal(
            f"The signatures are {len(signatures)} bytes, not a multiple of {SIGNATURE_SIZE}: "
            "only owners' ECDSA signatures are accepted.",
            refs,
            0,
        )
    owners: list[str] = []
    for index in range(len(signatures) // SIGNATURE_SIZE):
        chunk = signatures[index * SIGNATURE_SIZE : (index + 1) * SIGNATURE_SIZE]
        v = chunk[64]
        recovered = ""
        if v in (27, 28):
            try:
                recovered = recover_address(
                    digest,
                    Signature(
                        v=v - 27,
                        r=int.from_bytes(chunk[:32], "big"),
                        s=int.from_bytes(chunk[32:64], "big"),
                    ),
                ).lower()
            except Exception:  # coincurve raises several types for a malformed signature
                recovered = ""
        if recovered not in refs.owners:
            raise _signature_refusal(
                f"Signature {index} is not an owner's ECDSA signature (v 27 or 28) over the "
                f"Safe transaction hash 0x{digest.hex()}.",
                refs,
                len(owners),
                index=index,
            )
        if owners and int(recovered, 16) <= int(owners[-1], 16):
            raise _signature_refusal(
                f"Signature {index} is of owner {recovered}, not after {owners[-1]}: the "
                "signatures must be of distinct owners in ascending address order.",
                refs,
                len(owners),
                index=index,
            )
        owners.append(recovered)
    if len(owners) < refs.threshold:
        raise _signature_refusal(
            f"{len(owners)} owner signature(s) over 0x{digest.hex()}; the treasury Safe needs "
            f"{refs.threshold}.",
            refs,
            len(owners),
        )
    return owners


def vault_payments(to: str, data: bytes, vault: str | None, safe: str | None) -> list[Payment]:
    """The payments of a transaction to `to` with `data` that pays through the vault: a
    direct `vault.payout`, or the Safe's `execTransaction` of a CALL of `vault.payout`;
    [] for anything else."""
    if vault is None:
        return []
    try:
        if to == vault:
            return decode_payout(data)[1]
        if safe is not None and to == safe:
            inner, _ = decode_exec_transaction(data)
            if inner.operation == Operation.CALL and inner.to.lower() == vault:
                return decode_payout(inner.data)[1]
    except (CalldataError, ValueError):
        return []
    return []
