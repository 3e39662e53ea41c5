"""The treasury Safe's owners' signers (`svc_signer.safe_owner`) and the hot wallet's
execution of Safe transactions (PURPOSE_SAFE_EXECUTION), on MariaDB and SQLite.

Each owner's key lives in its own SoftHSM2 token (`owner_tokens`), each owner's signer is its
own `SafeOwnerCore` over the same database, and the hot wallet's signer is a `SignerCore` with
a keystore key. A 2-of-3 quorum: two owners sign, their signatures recover to two distinct
owners, pack for `execTransaction`, and the hot signer signs the call; every refusal of the
owners' policy and the hot wallet's is provoked once, and the owners' record keeps one
signature per (Safe, Safe nonce, owner).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import json
import secrets
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from sqlalchemy import select, update

from assetwithdrawal.signer.v1 import signer_pb2
from svc_signer.core import SignerCore
from svc_signer.keys import KeyBackend, KeyBackendError
from svc_signer.keys.backend import Signature, recover_address
from svc_signer.keys.keystore import KeystoreBackend
from svc_signer.keys.pkcs11_hsm import Pkcs11Backend
from svc_signer.ledger import Ledger
from svc_signer.safe_owner import SafeOwnerCore
from svc_signer.settings import SignerSettings
from svc_signer.transactions import decode_eip1559
from tests.signer.support import CHAIN, PARTNER, RunningSigner, fresh_address
from tests.support.requests import rich_error
from withdrawal_shared.chain.erc20 import encode_transfer
from withdrawal_shared.chain.payout import (
    Payment,
    encode_pause,
    encode_payout,
    encode_set_operator,
    encode_unpause,
)
from withdrawal_shared.chain.safe_tx import (
    OwnerSignature,
    SafeTx,
    encode_exec_transaction,
    owner_signature,
    pack_signatures,
    safe_tx_hash,
)
from withdrawal_shared.chain.types import ChecksumAddress
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine
from withdrawal_shared.db.models import (
    AdminChange,
    ApprovalDecision,
    ApprovalRequest,
    BlockedAddress,
    HotWallet,
    HotWalletRotation,
    PayoutVault,
    SafeOwner,
    SafeOwnerSignature,
    SafeTreasury,
    SignerKey,
    SignerLedger,
    SignerLedgerItem,
    Token,
    Withdrawal,
)
from withdrawal_shared.db.pauses import PauseScope, pause, resume
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.errors import ApiError, Code
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.settings import SettingsError

CHAIN_ID = 137
THRESHOLD = 1_000_000  # the token's Safe threshold, base units
BIG = 5_000_000  # above it: paid by the Safe

_safe_nonces = itertools.count(1)
_hot_nonces = itertools.count(7000)
_numbers = itertools.count(1)


@dataclass(frozen=True)
class Item:
    """A withdrawal as inserted, with its payout number."""

    id: str
    recipient: str
    amount: int
    token: str
    number: int

    def proto(self) -> signer_pb2.PayoutItem:
        return signer_pb2.PayoutItem(
            withdrawal_id=self.id,
            recipient_address=self.recipient,
            amount_base_units=str(self.amount),
            token_address=self.token,
            payout_number=self.number,
        )


class Treasury:
    """The chain's treasury Safe (2 of 3, the owners' HSM keys), its vault, a token with a
    Safe threshold, the hot wallet, and a signer core per owner plus the hot wallet's."""

    def __init__(self, db_url: str, owners: Sequence[Pkcs11Backend], hot: KeystoreBackend):
        self.engine = make_engine(db_url, pool_size=4)
        self.ledger = Ledger(self.engine)
        self.sessions = self.ledger.sessions
        self.executor = ThreadPoolExecutor(4, thread_name_prefix="owner-test")
        self.owners = list(owners)
        self.hot = hot
        self.safe = fresh_address()
        self.vault = fresh_address()
        with self.sessions.begin() as session:
            ensure_partner(session, PARTNER)
            session.add(PayoutVault(chain=CHAIN, address=self.vault, next_number=1, enabled=True))
            session.add(
                SafeTreasury(chain=CHAIN, address=self.safe, threshold=2, create_time=utcnow())
            )
            session.flush()
            for index, backend in enumerate(self.owners):
                session.add(
                    SafeOwner(
                        chain=CHAIN, owner_address=backend.address.lower(), label=f"owner {index}"
                    )
                )
            session.add(
                HotWallet(address=hot.address.lower(), chain=CHAIN, next_nonce=0, enabled=True)
            )
        self.symbol, self.token = self.add_token(safe_threshold=THRESHOLD)
        self.cores = [
            SafeOwnerCore(backend, self.ledger, self.executor, chain_id=CHAIN_ID, chain=CHAIN)
            for backend in self.owners
        ]
        self.hot_core = SignerCore(hot, self.ledger, self.executor, chain_id=CHAIN_ID, chain=CHAIN)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.engine.dispose()

    def add_token(self, *, safe_threshold: int | None) -> tuple[str, str]:
        contract = fresh_address()
        symbol = f"S{secrets.token_hex(4).upper()}"
        with self.sessions.begin() as session:
            session.add(
                Token(
                    chain=CHAIN,
                    symbol=symbol,
                    contract_address=contract,
                    decimals=6,
                    max_amount_base_units=10**15,
                    enabled=True,
                    safe_threshold_base_units=safe_threshold,
                )
            )
        return symbol, contract

    def add_withdrawal(
        self,
        *,
        amount: int = BIG,
        approvers: Sequence[str] = ("alice", "bob"),
        required: int = 1,
        outcome: str | None = "APPROVED",
        created_by: str | None = None,
        state: str = "QUEUED",
        token: str | None = None,
        recipient: str | None = None,
    ) -> Item:
        """A withdrawal with a payout number; with `outcome` an approval request that ended
        so (rule requiring `required`) and an APPROVE decision per approver."""
        contract = token or self.token
        withdrawal_id = new_ulid()
        number = next(_numbers)
        recipient = (recipient or fresh_address()).lower()
        now = utcnow()
        with self.sessions.begin() as session:
            token_id = session.scalar(select(Token.id).where(Token.contract_address == contract))
            assert token_id is not None
            session.add(
                Withdrawal(
                    id=withdrawal_id,
                    partner_id=PARTNER,
                    request_id=withdrawal_id,
                    request_fingerprint="0" * 64,
                    client_reference="",
                    chain=CHAIN,
                    token_id=token_id,
                    recipient=recipient,
                    amount=amount,
                    priority="STANDARD",
                    state=state,
                    state_reason="",
                    state_message="",
                    confirmations=0,
                    version=1,
                    audit_head="",
                    create_time=now,
                    update_time=now,
                    payout_number=number,
                    created_by=created_by,
                )
            )
            session.flush()
            if outcome is not None:
                session.add(
                    ApprovalRequest(
                        withdrawal_id=withdrawal_id,
                        rule_id=None,
                        rule_name="test rule",
                        approvals_required=required,
                        create_time=now,
                        outcome=outcome,
                        decide_time=now,
                    )
                )
                for operator in approvers:
                    session.add(
                        ApprovalDecision(
                            withdrawal_id=withdrawal_id,
                            operator_id=operator,
                            decision="APPROVE",
                            reason="",
                            create_time=now,
                        )
                    )
        return Item(withdrawal_id, recipient, amount, contract, number)

    def payout_tx(self, items: Sequence[Item], nonce: int | None = None) -> SafeTx:
        """The Safe's CALL of `vault.payout` paying `items` (consecutive numbers)."""
        ordered = sorted(items, key=lambda item: item.number)
        data = encode_payout(
            ordered[0].token, [Payment(i.number, i.recipient, i.amount) for i in ordered]
        )
        return SafeTx.call(self.vault, data, next(_safe_nonces) if nonce is None else nonce)

    def add_change(self, kind: str, payload: dict[str, object], state: str = "APPLIED") -> str:
        change_id = new_ulid()
        now = utcnow()
        with self.sessions.begin() as session:
            session.add(
                AdminChange(
                    id=change_id,
                    kind=kind,
                    payload=json.dumps(payload, sort_keys=True),
                    target=f"chains/{CHAIN}/vault",
                    state=state,
                    proposed_by="admin-1",
                    request_id=None,
                    request_fingerprint="0" * 64,
                    decided_by="admin-2" if state == "APPLIED" else None,
                    reject_reason="",
                    create_time=now,
                    expire_time=now + dt.timedelta(days=1),
                    decide_time=now if state == "APPLIED" else None,
                )
            )
        return f"changes/{change_id}"

    def request(
        self,
        owner: int,
        tx: SafeTx,
        items: Sequence[Item] = (),
        *,
        change: str = "",
        purpose: int | None = None,
        safe: str | None = None,
        chain_id: int = CHAIN_ID,
        owner_address: str | None = None,
    ) -> signer_pb2.SignSafeTransactionRequest:
        if purpose is None:
            purpose = signer_pb2.SAFE_PURPOSE_TREASURY if change else signer_pb2.SAFE_PURPOSE_PAYOUT
        return signer_pb2.SignSafeTransactionRequest(
            owner_address=owner_address or self.owners[owner].address,
            chain_id=chain_id,
            safe_address=safe or self.safe,
            transaction=signer_pb2.SafeTransaction(
                to_address=tx.to,
                value_wei=str(tx.value),
                data=tx.data,
                operation=tx.operation,
                safe_tx_gas=str(tx.safe_tx_gas),
                base_gas=str(tx.base_gas),
                gas_price_wei=str(tx.gas_price),
                gas_token_address=tx.gas_token,
                refund_receiver_address=tx.refund_receiver,
                nonce=tx.nonce,
            ),
            purpose=purpose,  # type: ignore[arg-type]
            items=[item.proto() for item in items],
            change=change,
        )

    def sign(
        self, owner: int, request: signer_pb2.SignSafeTransactionRequest
    ) -> signer_pb2.SignSafeTransactionResponse:
        return asyncio.run(self.cores[owner].sign_safe(request))

    def refused(
        self, owner: int, request: signer_pb2.SignSafeTransactionRequest, reason: str
    ) -> ApiError:
        with pytest.raises(ApiError) as refused:
            self.sign(owner, request)
        assert refused.value.reason == reason, refused.value
        return refused.value

    def signatures(self, tx: SafeTx, owners: Sequence[int], **kwargs: object) -> list[bytes]:
        """Owner signatures of `tx` from these owners' signers (PAYOUT needs `items`)."""
        return [
            self.sign(index, self.request(index, tx, **kwargs)).signature  # type: ignore[arg-type]
            for index in owners
        ]

    def execution(
        self,
        tx: SafeTx,
        signatures: bytes,
        items: Sequence[Item] = (),
        *,
        change: str = "",
        nonce: int | None = None,
        safe_nonce: int | None = None,
        max_fee: int = 60_000_000_000,
        purpose: int = signer_pb2.PURPOSE_SAFE_EXECUTION,
        to: str | None = None,
    ) -> signer_pb2.SignTransactionRequest:
        """The hot wallet's call of the Safe's execTransaction running `tx`."""
        return signer_pb2.SignTransactionRequest(
            wallet_address=self.hot.address,
            chain_id=CHAIN_ID,
            nonce=next(_hot_nonces) if nonce is None else nonce,
            to_address=to or self.safe,
            data=encode_exec_transaction(tx, signatures),
            value_wei="0",
            gas_limit=400_000,
            max_fee_per_gas_wei=str(max_fee),
            max_priority_fee_per_gas_wei="30000000000",
            purpose=purpose,  # type: ignore[arg-type]
            items=[item.proto() for item in items],
            change=change,
            safe_nonce=tx.nonce if safe_nonce is None else safe_nonce,
        )

    def ledger_rows(self, item: Item) -> int:
        """How many signed transactions of the hot wallet's ledger pay `item`."""
        with self.sessions() as session:
            return len(
                session.scalars(
                    select(SignerLedgerItem.tx_hash).where(
                        SignerLedgerItem.withdrawal_id == item.id
                    )
                ).all()
            )

    def execute(self, request: signer_pb2.SignTransactionRequest) -> tuple[bytes, str]:
        return asyncio.run(self.hot_core.sign(request))

    def execute_refused(self, request: signer_pb2.SignTransactionRequest, reason: str) -> ApiError:
        with pytest.raises(ApiError) as refused:
            self.execute(request)
        assert refused.value.reason == reason, refused.value
        return refused.value


@pytest.fixture(scope="module")
def world(
    db_url: str, owner_backends: list[Pkcs11Backend], keystore_backend: KeystoreBackend
) -> Iterator[Treasury]:
    treasury = Treasury(db_url, owner_backends, keystore_backend)
    yield treasury
    treasury.close()


def recovered(digest: bytes, signature: bytes) -> str:
    """The address a Safe-form owner signature (v 27/28) over `digest` recovers to."""
    assert len(signature) == 65 and signature[64] in (27, 28)
    return recover_address(
        digest,
        Signature(
            v=signature[64] - 27,
            r=int.from_bytes(signature[:32], "big"),
            s=int.from_bytes(signature[32:64], "big"),
        ),
    )


def packed(
    world: Treasury, tx: SafeTx, owners: Sequence[int], signatures: Sequence[bytes]
) -> bytes:
    return pack_signatures(
        [
            OwnerSignature(ChecksumAddress(world.owners[index].address), signature)
            for index, signature in zip(owners, signatures, strict=True)
        ]
    )


def raw_owner_signature(backend: KeyBackend, digest: bytes) -> bytes:
    """A signature of `digest` straight from a key (no policy): what a rogue process could
    produce with a key it holds."""
    signed = backend.sign_digest(digest)
    return owner_signature(backend.address, signed.r, signed.s, signed.v).signature


def safe_call(function: str, *args: tuple[str, object]) -> bytes:
    types = [kind for kind, _ in args]
    return keccak(text=function)[:4] + abi_encode(types, [value for _, value in args])


# -- the quorum ------------------------------------------------------------------------------


def test_two_owners_sign_a_payout_and_the_hot_wallet_executes_it(world: Treasury) -> None:
    items = [world.add_withdrawal(), world.add_withdrawal()]
    tx = world.payout_tx(items)
    digest = safe_tx_hash(CHAIN_ID, world.safe, tx)
    first = world.sign(0, world.request(0, tx, items))
    second = world.sign(2, world.request(2, tx, items))
    for response, owner in ((first, world.owners[0]), (second, world.owners[2])):
        assert response.safe_transaction_hash == digest
        assert response.owner_address == owner.address
        assert recovered(digest, response.signature) == owner.address
    signatures = packed(world, tx, [0, 2], [first.signature, second.signature])
    owners = {recovered(digest, signatures[i : i + 65]) for i in (0, 65)}
    assert owners == {world.owners[0].address, world.owners[2].address}
    # Idempotent: the HSM's signatures are randomised, the stored one comes back.
    again = world.sign(0, world.request(0, tx, items))
    assert again.signature == first.signature
    with world.sessions() as session:
        rows = session.scalars(
            select(SafeOwnerSignature).where(
                SafeOwnerSignature.safe_address == world.safe,
                SafeOwnerSignature.safe_nonce == tx.nonce,
            )
        ).all()
    assert {(r.owner_address, r.safe_tx_hash, r.purpose) for r in rows} == {
        (world.owners[0].address.lower(), "0x" + digest.hex(), "PAYOUT"),
        (world.owners[2].address.lower(), "0x" + digest.hex(), "PAYOUT"),
    }
    assert rows[0].withdrawal_ids == ",".join(sorted(item.id for item in items))

    request = world.execution(tx, signatures, items)
    raw, tx_hash = world.execute(request)
    fields = decode_eip1559(raw)
    assert (fields.to, fields.value, fields.data) == (world.safe, 0, request.data)
    assert world.execute(request) == (raw, tx_hash)  # repeated: the stored bytes
    bumped = world.execution(tx, signatures, items, nonce=request.nonce, max_fee=90_000_000_000)
    _, replaced_hash = world.execute(bumped)
    assert replaced_hash != tx_hash
    # A replacement (PURPOSE_REPLACEMENT of the same execTransaction) is checked the same way.
    again = world.execution(
        tx,
        signatures,
        items,
        nonce=request.nonce,
        max_fee=120_000_000_000,
        purpose=signer_pb2.PURPOSE_REPLACEMENT,
    )
    world.execute(again)
    world.execute_refused(
        world.execution(
            tx,
            signatures[:65],
            items,
            nonce=request.nonce,
            max_fee=150_000_000_000,
            purpose=signer_pb2.PURPOSE_REPLACEMENT,
        ),
        "OWNER_SIGNATURES_BELOW_THRESHOLD",
    )
    with world.sessions() as session:
        purposes = session.scalars(
            select(SignerLedger.purpose).where(SignerLedger.nonce == request.nonce)
        ).all()
    assert sorted(purposes) == ["REPLACEMENT", "SAFE_EXECUTION", "SAFE_EXECUTION"]


def test_an_owner_signs_one_transaction_per_safe_nonce(world: Treasury) -> None:
    first, other = world.add_withdrawal(), world.add_withdrawal()
    tx = world.payout_tx([first])
    world.sign(1, world.request(1, tx, [first]))
    rival = world.payout_tx([other], nonce=tx.nonce)
    error = world.refused(1, world.request(1, rival, [other]), "SAFE_NONCE_ALREADY_SIGNED")
    assert error.code is Code.FAILED_PRECONDITION
    assert error.metadata["safe_nonce"] == str(tx.nonce)
    assert error.metadata["safe_tx_hash"] == "0x" + safe_tx_hash(CHAIN_ID, world.safe, tx).hex()
    # Another owner's record is its own: it may still sign the rival (no quorum for both).
    world.sign(0, world.request(0, rival, [other]))


def test_concurrent_rival_requests_at_one_safe_nonce_get_one_signature(world: Treasury) -> None:
    first, other = world.add_withdrawal(), world.add_withdrawal()
    tx = world.payout_tx([first])
    rival = world.payout_tx([other], nonce=tx.nonce)

    async def both() -> list[object]:
        core = world.cores[2]
        return await asyncio.gather(
            core.sign_safe(world.request(2, tx, [first])),
            core.sign_safe(world.request(2, rival, [other])),
            return_exceptions=True,
        )

    outcomes = asyncio.run(both())
    refused = [o for o in outcomes if isinstance(o, ApiError)]
    assert len(refused) == 1 and refused[0].reason == "SAFE_NONCE_ALREADY_SIGNED", outcomes
    with world.sessions() as session:
        rows = session.scalars(
            select(SafeOwnerSignature.safe_tx_hash).where(
                SafeOwnerSignature.safe_nonce == tx.nonce,
                SafeOwnerSignature.owner_address == world.owners[2].address.lower(),
            )
        ).all()
    assert len(rows) == 1


# -- the owners' static rules, refused by every owner ---------------------------------------


def test_a_delegatecall_is_refused_by_every_owner(world: Treasury) -> None:
    item = world.add_withdrawal()
    tx = dataclasses.replace(world.payout_tx([item]), operation=1)
    for owner in range(3):
        error = world.refused(owner, world.request(owner, tx, [item]), "SAFE_DELEGATECALL")
        assert error.code is Code.PERMISSION_DENIED


def test_a_refund_receiver_is_refused_by_every_owner(world: Treasury) -> None:
    item = world.add_withdrawal()
    tx = dataclasses.replace(
        world.payout_tx([item]), refund_receiver=ChecksumAddress(world.owners[0].address)
    )
    for owner in range(3):
        error = world.refused(owner, world.request(owner, tx, [item]), "SAFE_GAS_REFUND")
        assert error.metadata["fields"] == "refund_receiver_address"


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("safe_tx_gas", 100_000, "safe_tx_gas"),
        ("base_gas", 21_000, "base_gas"),
        ("gas_price", 1, "gas_price_wei"),
        ("gas_token", "0x" + "11" * 20, "gas_token_address"),
    ],
)
def test_any_gas_refund_field_is_refused(
    world: Treasury, field: str, value: object, name: str
) -> None:
    item = world.add_withdrawal()
    if isinstance(value, str):
        value = ChecksumAddress(value)
    tx = dataclasses.replace(world.payout_tx([item]), **{field: value})
    error = world.refused(0, world.request(0, tx, [item]), "SAFE_GAS_REFUND")
    assert error.metadata["fields"] == name


def test_an_owner_change_is_refused_by_every_owner(world: Treasury) -> None:
    new_owner = fresh_address()
    data = safe_call(
        "addOwnerWithThreshold(address,uint256)", ("address", new_owner), ("uint256", 1)
    )
    tx = SafeTx.call(world.safe, data, next(_safe_nonces))
    change = world.add_change("treasury.pause_vault", {"chain": CHAIN})
    for owner in range(3):
        error = world.refused(owner, world.request(owner, tx, change=change), "SAFE_SELF_CALL")
        assert error.code is Code.PERMISSION_DENIED
        assert error.metadata["function"] == "addOwnerWithThreshold"
        assert "addOwnerWithThreshold" in error.message


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("removeOwner(address,address,uint256)", (("address", "0x" + "01" * 20),) * 2),
        ("swapOwner(address,address,address)", (("address", "0x" + "01" * 20),) * 3),
        ("changeThreshold(uint256)", (("uint256", 1),)),
        ("enableModule(address)", (("address", "0x" + "02" * 20),)),
        ("disableModule(address,address)", (("address", "0x" + "02" * 20),) * 2),
        ("setGuard(address)", (("address", "0x" + "03" * 20),)),
        ("setFallbackHandler(address)", (("address", "0x" + "04" * 20),)),
    ],
)
def test_every_safe_management_call_is_named_and_refused(
    world: Treasury, function: str, args: tuple[tuple[str, object], ...]
) -> None:
    if function.startswith("removeOwner"):
        args = (*args, ("uint256", 1))
    tx = SafeTx.call(world.safe, safe_call(function, *args), next(_safe_nonces))
    change = world.add_change("treasury.pause_vault", {"chain": CHAIN})
    error = world.refused(1, world.request(1, tx, change=change), "SAFE_SELF_CALL")
    assert error.metadata["function"] == function.split("(", maxsplit=1)[0]


def test_targets_other_than_vault_tokens_and_hot_wallets_are_refused(world: Treasury) -> None:
    change = world.add_change("treasury.pause_vault", {"chain": CHAIN})
    stranger = SafeTx.call(fresh_address(), encode_pause(), next(_safe_nonces))
    error = world.refused(0, world.request(0, stranger, change=change), "TARGET_NOT_ALLOWED")
    assert error.metadata["to_address"] == stranger.to.lower()
    calling_hot = SafeTx.call(world.hot.address, b"\x01", next(_safe_nonces))
    world.refused(0, world.request(0, calling_hot, change=change), "TARGET_NOT_ALLOWED")
    valued = dataclasses.replace(SafeTx.call(world.vault, encode_pause(), 0), value=1)
    world.refused(0, world.request(0, valued, change=change), "NONZERO_VALUE")


def test_chain_owner_key_safe_and_ownership_are_checked(
    world: Treasury, keystore_backend: KeystoreBackend
) -> None:
    item = world.add_withdrawal()
    tx = world.payout_tx([item])
    world.refused(0, world.request(0, tx, [item], chain_id=1), "WRONG_CHAIN")
    error = world.refused(0, world.request(1, tx, [item]), "UNKNOWN_WALLET")
    assert error.metadata["wallet"] == world.owners[1].address.lower()
    world.refused(0, world.request(0, tx, [item], safe=fresh_address()), "SAFE_NOT_TREASURY")
    outsider = SafeOwnerCore(
        keystore_backend, world.ledger, world.executor, chain_id=CHAIN_ID, chain=CHAIN
    )
    request = world.request(0, tx, [item], owner_address=keystore_backend.address)
    with pytest.raises(ApiError) as refused:
        asyncio.run(outsider.sign_safe(request))
    assert refused.value.reason == "NOT_SAFE_OWNER"


@pytest.mark.parametrize("threshold", [0, 4])
def test_an_inconsistent_treasury_record_signs_nothing(world: Treasury, threshold: int) -> None:
    item = world.add_withdrawal()
    tx = world.payout_tx([item])
    with world.sessions.begin() as session:
        session.execute(update(SafeTreasury).values(threshold=threshold))
    try:
        error = world.refused(0, world.request(0, tx, [item]), "SAFE_NOT_TREASURY")
        assert error.metadata["threshold"] == str(threshold)
        # A threshold of 0 would make any signatures (none) enough: the hot signer refuses too.
        world.execute_refused(world.execution(tx, b"", [item]), "SAFE_NOT_TREASURY")
    finally:
        with world.sessions.begin() as session:
            session.execute(update(SafeTreasury).values(threshold=2))


def test_bad_fields_are_invalid_argument(world: Treasury) -> None:
    item = world.add_withdrawal()
    tx = world.payout_tx([item])
    for request in (
        world.request(0, tx, []),  # a payout without items
        world.request(0, tx, [item], purpose=signer_pb2.SAFE_PURPOSE_UNSPECIFIED),
        world.request(0, tx, change="changes/nope"),
        world.request(0, dataclasses.replace(tx, operation=2), [item]),
    ):
        error = world.refused(0, request, "INVALID_ARGUMENT")
        assert error.field_violations


# -- payouts ---------------------------------------------------------------------------------


def test_one_approval_of_a_two_of_three_safe_is_not_enough(world: Treasury) -> None:
    once = world.add_withdrawal(approvers=["alice"])  # its rule wanted one: it is APPROVED
    tx = world.payout_tx([once])
    for owner in range(3):
        error = world.refused(owner, world.request(owner, tx, [once]), "NOT_APPROVED")
        assert error.metadata["problem"] == "safe_approvals"
        assert (error.metadata["required"], error.metadata["approved"]) == ("2", "1")
    # The creator's own approval does not count.
    own = world.add_withdrawal(approvers=["alice", "carol"], created_by="carol")
    world.refused(0, world.request(0, world.payout_tx([own]), [own]), "NOT_APPROVED")
    # Never held for approval: no decisions recorded at all.
    unreviewed = world.add_withdrawal(outcome=None)
    error = world.refused(
        0, world.request(0, world.payout_tx([unreviewed]), [unreviewed]), "NOT_APPROVED"
    )
    assert error.metadata["approved"] == "0"
    # Approved by two, but the request ended otherwise.
    expired = world.add_withdrawal(outcome="EXPIRED")
    world.refused(0, world.request(0, world.payout_tx([expired]), [expired]), "NOT_APPROVED")


def test_amounts_not_above_the_safe_threshold_are_refused(world: Treasury) -> None:
    small = world.add_withdrawal(amount=THRESHOLD)
    error = world.refused(
        0, world.request(0, world.payout_tx([small]), [small]), "BELOW_SAFE_THRESHOLD"
    )
    assert error.metadata["withdrawal_id"] == small.id
    _, unthresholded = world.add_token(safe_threshold=None)
    other = world.add_withdrawal(token=unthresholded)
    world.refused(0, world.request(0, world.payout_tx([other]), [other]), "BELOW_SAFE_THRESHOLD")


def test_the_payout_must_be_exactly_the_items(world: Treasury) -> None:
    item = world.add_withdrawal()
    tx = world.payout_tx([item])
    lying = dataclasses.replace(item, amount=item.amount + 1)
    world.refused(0, world.request(0, tx, [lying]), "CALLDATA_MISMATCH")
    not_a_payout = SafeTx.call(world.vault, encode_unpause(), next(_safe_nonces))
    world.refused(0, world.request(0, not_a_payout, [item]), "UNSUPPORTED_CALLDATA")
    to_token = SafeTx.call(
        world.token, encode_transfer(item.recipient, item.amount), next(_safe_nonces)
    )
    world.refused(0, world.request(0, to_token, [item]), "TARGET_NOT_ALLOWED")
    renumbered = dataclasses.replace(item, number=item.number + 10_000)
    world.refused(0, world.request(0, world.payout_tx([renumbered]), [renumbered]), "NOT_APPROVED")


def test_withdrawal_state_blocklist_and_pauses_apply(world: Treasury) -> None:
    done = world.add_withdrawal(state="COMPLETED")
    error = world.refused(0, world.request(0, world.payout_tx([done]), [done]), "NOT_APPROVED")
    assert error.metadata["problem"] == "state"
    blocked = world.add_withdrawal()
    with world.sessions.begin() as session:
        session.add(
            BlockedAddress(
                address=blocked.recipient, reason="test", added_by="test", create_time=utcnow()
            )
        )
    world.refused(0, world.request(0, world.payout_tx([blocked]), [blocked]), "RECIPIENT_BLOCKED")
    paused = world.add_withdrawal()
    signed_before = world.add_withdrawal()
    before_tx = world.payout_tx([signed_before])
    first = world.sign(0, world.request(0, before_tx, [signed_before]))
    scope = PauseScope(CHAIN, world.symbol)
    with world.sessions.begin() as session:
        pause(session, scope, reason="test pause", actor="test")
    try:
        error = world.refused(0, world.request(0, world.payout_tx([paused]), [paused]), "PAUSED")
        assert error.metadata["scope"] == scope.key
        # What was signed before the pause is returned again, nothing new is signed.
        assert world.sign(0, world.request(0, before_tx, [signed_before])) == first
        # A treasury operation (e.g. pausing the vault) is never held by the payout pause.
        change = world.add_change("treasury.pause_vault", {"chain": CHAIN})
        pausing = SafeTx.call(world.vault, encode_pause(), next(_safe_nonces))
        world.sign(0, world.request(0, pausing, change=change))
    finally:
        with world.sessions.begin() as session:
            resume(session, scope, actor="test")


# -- treasury operations ---------------------------------------------------------------------


def test_an_applied_treasury_change_is_signed_as_built(world: Treasury) -> None:
    change = world.add_change("treasury.pause_vault", {"chain": CHAIN})
    tx = SafeTx.call(world.vault, encode_pause(), next(_safe_nonces))
    response = world.sign(1, world.request(1, tx, change=change))
    assert recovered(response.safe_transaction_hash, response.signature) == world.owners[1].address
    gas = world.add_change(
        "treasury.fund_gas",
        {"chain": CHAIN, "wallet": world.hot.address.lower(), "amount_wei": "1000000"},
    )
    funding = dataclasses.replace(
        SafeTx.call(world.hot.address, b"", next(_safe_nonces)), value=10**6
    )
    world.sign(2, world.request(2, funding, change=gas))
    more = dataclasses.replace(funding, value=10**7, nonce=next(_safe_nonces))
    error = world.refused(2, world.request(2, more, change=gas), "CHANGE_CALL_MISMATCH")
    assert error.metadata["fields"] == "value_wei"
    unpausing = SafeTx.call(world.vault, encode_unpause(), next(_safe_nonces))
    world.refused(1, world.request(1, unpausing, change=change), "CHANGE_CALL_MISMATCH")


def test_a_treasury_change_not_applied_is_refused(world: Treasury) -> None:
    tx = SafeTx.call(world.vault, encode_pause(), next(_safe_nonces))
    proposed = world.add_change("treasury.pause_vault", {"chain": CHAIN}, state="PROPOSED")
    for owner in range(3):
        error = world.refused(
            owner, world.request(owner, tx, change=proposed), "CHANGE_NOT_APPLIED"
        )
        assert (error.metadata["problem"], error.metadata["state"]) == ("state", "PROPOSED")
    rejected = world.add_change("treasury.pause_vault", {"chain": CHAIN}, state="REJECTED")
    world.refused(0, world.request(0, tx, change=rejected), "CHANGE_NOT_APPLIED")
    missing = f"changes/{new_ulid()}"
    error = world.refused(0, world.request(0, tx, change=missing), "CHANGE_NOT_APPLIED")
    assert error.metadata["problem"] == "missing"
    other_kind = world.add_change("operator.create", {"operator": "eve"})
    error = world.refused(0, world.request(0, tx, change=other_kind), "CHANGE_NOT_APPLIED")
    assert error.metadata["problem"] == "kind"
    unknown_token = world.add_change(
        "treasury.sweep", {"chain": CHAIN, "token": "NOPE", "amount_base_units": "1"}
    )
    error = world.refused(0, world.request(0, tx, change=unknown_token), "CHANGE_NOT_APPLIED")
    assert error.metadata["problem"] == "setup"


def test_a_rotation_step_is_signed_only_as_the_rotation_orders(world: Treasury) -> None:
    """A `hot_wallet.rotate` change orders exactly three Safe calls, rebuilt by the owner from
    the change and the key the hot signer created for its rotation (`signer_keys`, which only
    the signer writes): nothing before that key exists, then the new wallet made operator
    and funded with `gas_wei`, and the old wallet's operator role removed; nothing else."""
    old, new = world.hot.address.lower(), fresh_address()
    change = world.add_change(
        "hot_wallet.rotate", {"chain": CHAIN, "wallet": old, "gas_wei": "5000"}
    )
    rotation_id = new_ulid()
    now = utcnow()
    with world.sessions.begin() as session:
        session.add(
            HotWalletRotation(
                id=rotation_id,
                change_id=change.removeprefix("changes/"),
                chain=CHAIN,
                old_wallet=old,
                new_wallet=new,  # as a processor records it
                gas_wei="5000",
                step="ENABLE_OPERATOR",
                state="RUNNING",
                failure_reason="",
                create_time=now,
                update_time=now,
            )
        )
    enable = SafeTx.call(world.vault, encode_set_operator(new, True), next(_safe_nonces))
    # The processor named a new wallet, but the hot signer created no such key: refused.
    world.refused(0, world.request(0, enable, change=change), "CHANGE_CALL_MISMATCH")
    with world.sessions.begin() as session:
        session.add(
            SignerKey(
                address=new,
                chain=CHAIN,
                backend="keystore",
                locator="/var/signer/keystore-rotated.json",
                state="ACTIVE",
                request_id=rotation_id,
                create_time=now,
                update_time=now,
            )
        )
        session.add(
            HotWallet(address=new, chain=CHAIN, next_nonce=0, enabled=True, state="PENDING")
        )
    enable = dataclasses.replace(enable, nonce=next(_safe_nonces))
    world.sign(0, world.request(0, enable, change=change))
    funding = dataclasses.replace(SafeTx.call(new, b"", next(_safe_nonces)), value=5000)
    world.sign(1, world.request(1, funding, change=change))
    remove = SafeTx.call(world.vault, encode_set_operator(old, False), next(_safe_nonces))
    world.sign(2, world.request(2, remove, change=change))
    # The gas funding once per owner: again at another Safe nonce, refused.
    twice = dataclasses.replace(funding, nonce=next(_safe_nonces))
    error = world.refused(1, world.request(1, twice, change=change), "CHANGE_CALL_MISMATCH")
    assert error.metadata["signed_at"] == str(funding.nonce)
    world.sign(0, world.request(0, twice, change=change))  # another owner's first
    for wrong in (
        dataclasses.replace(funding, value=5001, nonce=next(_safe_nonces)),
        dataclasses.replace(SafeTx.call(old, b"", next(_safe_nonces)), value=5000),
        SafeTx.call(world.vault, encode_set_operator(fresh_address(), True), next(_safe_nonces)),
        SafeTx.call(world.vault, encode_set_operator(new, False), next(_safe_nonces)),
        SafeTx.call(world.vault, encode_pause(), next(_safe_nonces)),
    ):
        world.refused(0, world.request(0, wrong, change=change), "CHANGE_CALL_MISMATCH")
    proposed = world.add_change(
        "hot_wallet.rotate", {"chain": CHAIN, "wallet": old, "gas_wei": "5000"}, state="PROPOSED"
    )
    tx = SafeTx.call(world.vault, encode_set_operator(new, True), next(_safe_nonces))
    error = world.refused(0, world.request(0, tx, change=proposed), "CHANGE_NOT_APPLIED")
    assert error.metadata["problem"] == "state"


# -- the hot wallet's execution --------------------------------------------------------------


def test_execution_with_one_owner_signature_is_refused(world: Treasury) -> None:
    item = world.add_withdrawal()
    tx = world.payout_tx([item])
    [one] = world.signatures(tx, [0], items=[item])
    error = world.execute_refused(
        world.execution(tx, packed(world, tx, [0], [one]), [item]),
        "OWNER_SIGNATURES_BELOW_THRESHOLD",
    )
    assert (error.metadata["threshold"], error.metadata["valid"]) == ("2", "1")
    # The same signature twice is still one owner.
    world.execute_refused(
        world.execution(tx, one + one, [item]), "OWNER_SIGNATURES_BELOW_THRESHOLD"
    )
    # A key that is not an owner's does not count.
    digest = safe_tx_hash(CHAIN_ID, world.safe, tx)
    stranger = raw_owner_signature(world.hot, digest)
    world.execute_refused(
        world.execution(
            tx,
            pack_signatures(
                [
                    OwnerSignature(ChecksumAddress(world.owners[0].address), one),
                    OwnerSignature(ChecksumAddress(world.hot.address), stranger),
                ]
            ),
            [item],
        ),
        "OWNER_SIGNATURES_BELOW_THRESHOLD",
    )
    assert world.ledger_rows(item) == 0


def test_execution_checks_the_hash_at_the_safe_nonce_and_the_order(world: Treasury) -> None:
    item = world.add_withdrawal()
    tx = world.payout_tx([item])
    two = world.signatures(tx, [0, 1], items=[item])
    good = packed(world, tx, [0, 1], two)
    world.execute_refused(
        world.execution(tx, good, [item], safe_nonce=tx.nonce + 1),
        "OWNER_SIGNATURES_BELOW_THRESHOLD",
    )
    world.execute_refused(
        world.execution(tx, good[65:] + good[:65], [item]), "OWNER_SIGNATURES_BELOW_THRESHOLD"
    )
    world.execute(world.execution(tx, good, [item]))


def test_execution_applies_the_static_rules_and_the_payout_rules(world: Treasury) -> None:
    item = world.add_withdrawal()
    rogue = dataclasses.replace(world.payout_tx([item]), operation=1)
    digest = safe_tx_hash(CHAIN_ID, world.safe, rogue)
    # Signatures straight from two owner keys, without their signers' policy.
    signatures = pack_signatures(
        [
            OwnerSignature(ChecksumAddress(b.address), raw_owner_signature(b, digest))
            for b in world.owners[:2]
        ]
    )
    world.execute_refused(world.execution(rogue, signatures, [item]), "SAFE_DELEGATECALL")
    data = safe_call(
        "addOwnerWithThreshold(address,uint256)", ("address", fresh_address()), ("uint256", 1)
    )
    grab = SafeTx.call(world.safe, data, next(_safe_nonces))
    digest = safe_tx_hash(CHAIN_ID, world.safe, grab)
    signatures = pack_signatures(
        [
            OwnerSignature(ChecksumAddress(b.address), raw_owner_signature(b, digest))
            for b in world.owners[:2]
        ]
    )
    change = world.add_change("treasury.pause_vault", {"chain": CHAIN})
    world.execute_refused(world.execution(grab, signatures, change=change), "SAFE_SELF_CALL")
    # An item approved once only: quorum signatures straight from the keys do not help.
    once = world.add_withdrawal(approvers=["alice"])
    tx = world.payout_tx([once])
    digest = safe_tx_hash(CHAIN_ID, world.safe, tx)
    signatures = pack_signatures(
        [
            OwnerSignature(ChecksumAddress(b.address), raw_owner_signature(b, digest))
            for b in world.owners[:2]
        ]
    )
    error = world.execute_refused(world.execution(tx, signatures, [once]), "NOT_APPROVED")
    assert error.metadata["problem"] == "safe_approvals"
    world.execute_refused(
        world.execution(tx, signatures, [once], to=fresh_address()), "SAFE_NOT_TREASURY"
    )


def test_execution_of_a_treasury_change(world: Treasury) -> None:
    change = world.add_change("treasury.pause_vault", {"chain": CHAIN})
    tx = SafeTx.call(world.vault, encode_pause(), next(_safe_nonces))
    signatures = world.signatures(tx, [1, 2], change=change)
    good = packed(world, tx, [1, 2], signatures)
    world.execute(world.execution(tx, good, change=change))
    with world.sessions.begin() as session:
        session.execute(
            update(AdminChange)
            .where(AdminChange.id == change.removeprefix("changes/"))
            .values(state="REJECTED")
        )
    world.execute_refused(world.execution(tx, good, change=change), "CHANGE_NOT_APPLIED")


def test_the_safe_and_hot_paths_under_one_payout_number_are_one_number(world: Treasury) -> None:
    item = world.add_withdrawal()
    tx = world.payout_tx([item])
    signatures = packed(world, tx, [0, 1], world.signatures(tx, [0, 1], items=[item]))
    world.execute(world.execution(tx, signatures, [item]))
    # The hot wallet's own vault payout under the same number at another nonce: the vault's
    # bitmap pays the number once, so it is signed.
    direct = signer_pb2.SignTransactionRequest(
        wallet_address=world.hot.address,
        chain_id=CHAIN_ID,
        nonce=next(_hot_nonces),
        to_address=world.vault,
        data=tx.data,
        value_wei="0",
        gas_limit=200_000,
        max_fee_per_gas_wei="60000000000",
        max_priority_fee_per_gas_wei="30000000000",
        purpose=signer_pb2.PURPOSE_PAYOUT,
        items=[item.proto()],
    )
    world.execute(direct)
    # And the Safe path again at another hot nonce (e.g. at the next Safe nonce).
    again = world.payout_tx([item])
    signatures = packed(world, again, [1, 2], world.signatures(again, [1, 2], items=[item]))
    world.execute(world.execution(again, signatures, [item]))
    # A plain ERC-20 transfer has no payout number: it would pay twice, refused.
    transfer = signer_pb2.SignTransactionRequest()
    transfer.CopyFrom(direct)
    transfer.nonce = next(_hot_nonces)
    transfer.to_address = item.token
    transfer.data = encode_transfer(item.recipient, item.amount)
    transfer.items[0].payout_number = 0
    world.execute_refused(transfer, "ALREADY_SIGNED_AT_OTHER_NONCE")


def test_execution_fields_are_checked_for_form(world: Treasury) -> None:
    item = world.add_withdrawal()
    tx = world.payout_tx([item])
    for request in (
        world.execution(tx, b""),  # neither items nor a change
        world.execution(tx, b"", [item], change=f"changes/{new_ulid()}"),  # both
    ):
        world.execute_refused(request, "INVALID_ARGUMENT")


# -- roles -----------------------------------------------------------------------------------


def test_a_hot_signer_refuses_owner_signatures_and_an_owner_signer_transactions(
    world: Treasury,
) -> None:
    item = world.add_withdrawal()
    tx = world.payout_tx([item])
    with pytest.raises(ApiError) as refused:
        asyncio.run(world.hot_core.sign_safe(world.request(0, tx, [item])))
    assert (refused.value.code, refused.value.reason) == (
        Code.FAILED_PRECONDITION,
        "UNKNOWN_WALLET",
    )
    assert refused.value.metadata["signer_role"] == "hot"
    hot_payout = world.execution(tx, b"", [item])
    with pytest.raises(ApiError) as refused:
        asyncio.run(world.cores[0].sign(hot_payout))
    assert (refused.value.code, refused.value.reason) == (
        Code.FAILED_PRECONDITION,
        "UNKNOWN_WALLET",
    )
    assert refused.value.metadata["signer_role"] == "safe_owner"
    assert [w.role for w in world.cores[0].list_wallets().wallets] == [
        signer_pb2.Wallet.ROLE_SAFE_OWNER
    ]
    assert [w.role for w in world.hot_core.list_wallets().wallets] == [signer_pb2.Wallet.ROLE_HOT]


def test_an_owner_signer_holds_exactly_one_key(
    world: Treasury, owner_backends: list[Pkcs11Backend]
) -> None:
    with pytest.raises(KeyBackendError, match="exactly one key"):
        SafeOwnerCore(
            owner_backends[:2], world.ledger, world.executor, chain_id=CHAIN_ID, chain=CHAIN
        )


def test_signer_role_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SignerSettings.from_env().role == "hot"
    monkeypatch.setenv("SIGNER_ROLE", "safe_owner")
    assert SignerSettings.from_env().role == "safe_owner"
    monkeypatch.setenv("SIGNER_KEYSTORE_COUNT", "2")
    with pytest.raises(SettingsError, match="exactly one owner key"):
        SignerSettings.from_env()
    monkeypatch.setenv("SIGNER_ROLE", "treasurer")
    with pytest.raises(SettingsError, match="not a signer role"):
        SignerSettings.from_env()


def test_an_owner_signer_over_grpc(
    db_url: str, world: Treasury, owner_backends: list[Pkcs11Backend]
) -> None:
    settings = SignerSettings(
        database_url=db_url, grpc_port=0, shutdown_grace_seconds=1.0, role="safe_owner"
    )
    running = RunningSigner(settings, owner_backends[2])
    try:
        wallets = running.stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=30).wallets
        assert [(w.address, w.backend, w.role) for w in wallets] == [
            (owner_backends[2].address, "pkcs11", signer_pb2.Wallet.ROLE_SAFE_OWNER)
        ]
        item = world.add_withdrawal()
        tx = world.payout_tx([item])
        response = running.stub.SignSafeTransaction(world.request(2, tx, [item]), timeout=30)
        assert recovered(response.safe_transaction_hash, response.signature) == (
            owner_backends[2].address
        )
        with pytest.raises(grpc.RpcError) as refused:
            running.stub.SignTransaction(world.execution(tx, b"", [item]), timeout=30)
        code, info, _ = rich_error(refused.value)
        assert (code, info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "UNKNOWN_WALLET")
        delegate = dataclasses.replace(world.payout_tx([item]), operation=1)
        with pytest.raises(grpc.RpcError) as refused:
            running.stub.SignSafeTransaction(world.request(2, delegate, [item]), timeout=30)
        code, info, _ = rich_error(refused.value)
        assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SAFE_DELEGATECALL")
    finally:
        running.close()
