"""SignerService over gRPC: a real SignerServer (keystore key, and the SoftHSM2 key) on MariaDB
and on SQLite; policy refusals, the double-payment ledger, idempotent repeats."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from eth_account import Account
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.crypto import keccak
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hexbytes import HexBytes

from assetwithdrawal.signer.v1 import signer_pb2
from tests.signer.support import RunningSigner, SignerWorld, fresh_address, item_of
from tests.support.requests import rich_error
from withdrawal_shared.chain.erc20 import encode_transfer

Code = grpc.StatusCode


def refused(
    signer: RunningSigner, request: signer_pb2.SignTransactionRequest
) -> tuple[grpc.StatusCode, str, dict[str, str], list[str]]:
    """(code, ErrorInfo reason, ErrorInfo metadata, BadRequest fields) of a refused request."""
    with pytest.raises(grpc.RpcError) as caught:
        signer.stub.SignTransaction(request, timeout=30)
    code, info, fields = rich_error(caught.value)
    return code, info.reason, dict(info.metadata), fields


def test_payout_is_signed_recorded_and_decodes_to_the_request(
    signer: RunningSigner, world: SignerWorld
) -> None:
    withdrawal = world.add_withdrawal()
    nonce = world.nonce()
    request = world.payout(withdrawal, nonce=nonce)
    response = signer.stub.SignTransaction(request, timeout=30)

    raw = response.raw_transaction
    assert raw[0] == 2
    assert response.transaction_hash == "0x" + keccak(raw).hex()
    assert Account.recover_transaction(raw) == world.wallet
    fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
    assert fields["chainId"] == 137
    assert fields["nonce"] == nonce
    assert HexBytes(fields["to"]) == HexBytes(withdrawal.token)
    assert bytes(fields["data"]) == encode_transfer(withdrawal.recipient, withdrawal.amount)
    assert fields["value"] == 0
    assert fields["gas"] == 90_000
    assert fields["maxFeePerGas"] == 60_000_000_000
    assert fields["maxPriorityFeePerGas"] == 30_000_000_000

    # Recorded before it was returned: one ledger row and its item.
    (row,) = world.ledger_at(nonce)
    assert row.tx_hash == response.transaction_hash
    assert row.wallet == world.wallet.lower()
    assert (row.chain_id, row.nonce, row.purpose) == (137, nonce, "PAYOUT")
    assert bytes(row.raw_tx) == raw
    (item,) = world.items_of(withdrawal.id)
    assert (item.tx_hash, item.wallet, item.nonce) == (row.tx_hash, row.wallet, nonce)


def test_repeated_request_returns_the_stored_bytes(
    signer: RunningSigner, world: SignerWorld
) -> None:
    withdrawal = world.add_withdrawal()
    nonce = world.nonce()
    first = signer.stub.SignTransaction(world.payout(withdrawal, nonce=nonce), timeout=30)
    again = signer.stub.SignTransaction(world.payout(withdrawal, nonce=nonce), timeout=30)
    assert again.raw_transaction == first.raw_transaction
    assert again.transaction_hash == first.transaction_hash
    assert len(world.ledger_at(nonce)) == 1
    assert len(world.items_of(withdrawal.id)) == 1


def test_replacement_at_the_same_nonce_is_signed(signer: RunningSigner, world: SignerWorld) -> None:
    withdrawal = world.add_withdrawal()
    nonce = world.nonce()
    first = signer.stub.SignTransaction(world.payout(withdrawal, nonce=nonce), timeout=30)
    replacement = signer.stub.SignTransaction(
        world.payout(
            withdrawal,
            nonce=nonce,
            purpose=signer_pb2.PURPOSE_REPLACEMENT,
            max_fee=80_000_000_000,
            tip=40_000_000_000,
        ),
        timeout=30,
    )
    assert replacement.transaction_hash != first.transaction_hash
    fields = TypedTransaction.from_bytes(HexBytes(replacement.raw_transaction)).as_dict()
    assert (fields["nonce"], fields["maxFeePerGas"]) == (nonce, 80_000_000_000)
    rows = world.ledger_at(nonce)
    assert sorted(r.purpose for r in rows) == ["PAYOUT", "REPLACEMENT"]
    assert {i.nonce for i in world.items_of(withdrawal.id)} == {nonce}


def test_same_withdrawal_at_another_nonce_is_refused(
    signer: RunningSigner, world: SignerWorld
) -> None:
    withdrawal = world.add_withdrawal()
    nonce, other = world.nonce(), world.nonce()
    signer.stub.SignTransaction(world.payout(withdrawal, nonce=nonce), timeout=30)
    code, reason, metadata, _ = refused(signer, world.payout(withdrawal, nonce=other))
    assert (code, reason) == (Code.FAILED_PRECONDITION, "ALREADY_SIGNED_AT_OTHER_NONCE")
    assert metadata["withdrawal_id"] == withdrawal.id
    assert metadata["nonce"] == str(nonce)
    assert world.ledger_at(other) == []
    # Also as a "replacement" at the other nonce.
    code, reason, _, _ = refused(
        signer,
        world.payout(withdrawal, nonce=other, purpose=signer_pb2.PURPOSE_REPLACEMENT),
    )
    assert reason == "ALREADY_SIGNED_AT_OTHER_NONCE"


def test_concurrent_requests_at_different_nonces_sign_once(
    signer: RunningSigner, world: SignerWorld
) -> None:
    """Requests released together for one withdrawal at 8 nonces: exactly one is signed."""
    parallel = 8
    for _round in range(3):
        withdrawal = world.add_withdrawal()
        requests = [world.payout(withdrawal, nonce=world.nonce()) for _ in range(parallel)]
        start = threading.Barrier(parallel)

        def attempt(
            request: signer_pb2.SignTransactionRequest, start: threading.Barrier = start
        ) -> str:
            start.wait(10)
            try:
                signer.stub.SignTransaction(request, timeout=60)
            except grpc.RpcError as exc:
                return rich_error(exc)[1].reason
            return "OK"

        with ThreadPoolExecutor(parallel) as pool:
            outcomes = list(pool.map(attempt, requests))
        assert outcomes.count("OK") == 1, outcomes
        assert set(outcomes) == {"OK", "ALREADY_SIGNED_AT_OTHER_NONCE"}
        assert len(world.items_of(withdrawal.id)) == 1


def test_wrong_chain_id_is_refused(signer: RunningSigner, world: SignerWorld) -> None:
    withdrawal = world.add_withdrawal()
    nonce = world.nonce()
    code, reason, metadata, _ = refused(signer, world.payout(withdrawal, nonce=nonce, chain_id=1))
    assert (code, reason) == (Code.FAILED_PRECONDITION, "WRONG_CHAIN")
    assert metadata["expected_chain_id"] == "137"
    assert world.items_of(withdrawal.id) == []


def test_unknown_wallet_is_refused(signer: RunningSigner, world: SignerWorld) -> None:
    withdrawal = world.add_withdrawal()
    code, reason, _, _ = refused(
        signer, world.payout(withdrawal, nonce=world.nonce(), wallet=fresh_address())
    )
    assert (code, reason) == (Code.FAILED_PRECONDITION, "UNKNOWN_WALLET")


def test_target_must_be_an_enabled_token(signer: RunningSigner, world: SignerWorld) -> None:
    withdrawal = world.add_withdrawal()
    stranger = fresh_address()
    request = world.payout(
        withdrawal,
        nonce=world.nonce(),
        to=stranger,
        items=[item_of(withdrawal, token_address=stranger)],
    )
    code, reason, _, _ = refused(signer, request)
    assert (code, reason) == (Code.PERMISSION_DENIED, "TARGET_NOT_ALLOWED")
    # A disabled token's contract is not a target either.
    disabled = world.add_token(enabled=False)
    paid_in_disabled = world.add_withdrawal(token=disabled)
    code, reason, _, _ = refused(signer, world.payout(paid_in_disabled, nonce=world.nonce()))
    assert (code, reason) == (Code.PERMISSION_DENIED, "TARGET_NOT_ALLOWED")


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount_base_units", "12500001"), ("recipient_address", fresh_address())],
    ids=["amount_base_units", "recipient_address"],  # the same in every pytest-xdist worker
)
def test_item_must_match_the_decoded_calldata(
    signer: RunningSigner, world: SignerWorld, field: str, value: str
) -> None:
    withdrawal = world.add_withdrawal()
    request = world.payout(
        withdrawal, nonce=world.nonce(), items=[item_of(withdrawal, **{field: value})]
    )
    code, reason, metadata, _ = refused(signer, request)
    assert (code, reason) == (Code.PERMISSION_DENIED, "CALLDATA_MISMATCH")
    assert metadata["fields"] == field
    assert world.items_of(withdrawal.id) == []


def test_calldata_must_pay_what_the_withdrawal_says(
    signer: RunningSigner, world: SignerWorld
) -> None:
    # Item and calldata agree with each other, but not with the withdrawal row.
    withdrawal = world.add_withdrawal(amount=5_000_000)
    inflated = type(withdrawal)(withdrawal.id, withdrawal.recipient, 50_000_000, withdrawal.token)
    code, reason, metadata, _ = refused(signer, world.payout(inflated, nonce=world.nonce()))
    assert (code, reason) == (Code.FAILED_PRECONDITION, "NOT_APPROVED")
    assert metadata["problem"] == "amount"
    redirected = type(withdrawal)(
        withdrawal.id, fresh_address(), withdrawal.amount, withdrawal.token
    )
    code, reason, metadata, _ = refused(signer, world.payout(redirected, nonce=world.nonce()))
    assert (reason, metadata["problem"]) == ("NOT_APPROVED", "recipient")
    unknown = type(withdrawal)("0" * 26, withdrawal.recipient, withdrawal.amount, withdrawal.token)
    code, reason, metadata, _ = refused(signer, world.payout(unknown, nonce=world.nonce()))
    assert (reason, metadata["problem"]) == ("NOT_APPROVED", "missing")


def test_calldata_must_be_one_erc20_transfer(signer: RunningSigner, world: SignerWorld) -> None:
    withdrawal = world.add_withdrawal()
    transfer = encode_transfer(withdrawal.recipient, withdrawal.amount)
    approve = bytes.fromhex("095ea7b3") + transfer[4:]
    for data in (approve, transfer + b"\0" * 32, b""):
        code, reason, _, _ = refused(
            signer, world.payout(withdrawal, nonce=world.nonce(), data=data)
        )
        assert (code, reason) == (Code.PERMISSION_DENIED, "UNSUPPORTED_CALLDATA")
    code, reason, _, _ = refused(signer, world.payout(withdrawal, nonce=world.nonce(), items=[]))
    assert (code, reason) == (Code.PERMISSION_DENIED, "CALLDATA_MISMATCH")
    code, reason, _, _ = refused(signer, world.payout(withdrawal, nonce=world.nonce(), value="1"))
    assert (code, reason) == (Code.PERMISSION_DENIED, "NONZERO_VALUE")


@pytest.mark.parametrize("state", ["CANCELLED", "REJECTED", "COMPLETED", "RECEIVED"])
def test_withdrawal_not_payable_is_refused(
    signer: RunningSigner, world: SignerWorld, state: str
) -> None:
    withdrawal = world.add_withdrawal(state=state)
    code, reason, metadata, _ = refused(signer, world.payout(withdrawal, nonce=world.nonce()))
    assert (code, reason) == (Code.FAILED_PRECONDITION, "NOT_APPROVED")
    assert (metadata["problem"], metadata["state"]) == ("state", state)
    assert world.items_of(withdrawal.id) == []


@pytest.mark.parametrize("state", ["SIGNED", "BROADCAST", "ON_HOLD"])
def test_signed_broadcast_and_held_withdrawals_can_be_signed(
    signer: RunningSigner, world: SignerWorld, state: str
) -> None:
    withdrawal = world.add_withdrawal(state=state)
    signer.stub.SignTransaction(world.payout(withdrawal, nonce=world.nonce()), timeout=30)


def test_bad_fields_are_invalid_argument(signer: RunningSigner, world: SignerWorld) -> None:
    withdrawal = world.add_withdrawal()
    request = world.payout(withdrawal, nonce=world.nonce(), max_fee=10, tip=11)
    request.gas_limit = 0
    request.purpose = signer_pb2.PURPOSE_UNSPECIFIED
    request.items[0].amount_base_units = "1.5"
    code, reason, _, fields = refused(signer, request)
    assert (code, reason) == (Code.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert set(fields) == {
        "purpose",
        "gas_limit",
        "max_priority_fee_per_gas_wei",
        "items[0].amount_base_units",
    }
    request = world.payout(withdrawal, nonce=world.nonce())
    request.max_fee_per_gas_wei = "-1"
    assert refused(signer, request)[3] == ["max_fee_per_gas_wei"]


def test_nonce_release(signer: RunningSigner, world: SignerWorld) -> None:
    nonce = world.nonce()
    response = signer.stub.SignTransaction(world.nonce_release(nonce=nonce), timeout=30)
    assert Account.recover_transaction(response.raw_transaction) == world.wallet
    fields = TypedTransaction.from_bytes(HexBytes(response.raw_transaction)).as_dict()
    assert HexBytes(fields["to"]) == HexBytes(world.wallet)
    assert (fields["value"], bytes(fields["data"]), fields["nonce"]) == (0, b"", nonce)
    (row,) = world.ledger_at(nonce)
    assert row.purpose == "NONCE_RELEASE"
    again = signer.stub.SignTransaction(world.nonce_release(nonce=nonce), timeout=30)
    assert again.raw_transaction == response.raw_transaction

    code, reason, _, _ = refused(signer, world.nonce_release(nonce=world.nonce(), data=b"\x01"))
    assert (code, reason) == (Code.PERMISSION_DENIED, "INVALID_NONCE_RELEASE")
    elsewhere = world.nonce_release(nonce=world.nonce())
    elsewhere.to_address = fresh_address()
    assert refused(signer, elsewhere)[1] == "INVALID_NONCE_RELEASE"
    with_items = world.nonce_release(nonce=world.nonce())
    with_items.items.append(item_of(world.add_withdrawal()))
    assert refused(signer, with_items)[1] == "INVALID_NONCE_RELEASE"


def test_list_wallets_health_and_reflection(signer: RunningSigner, world: SignerWorld) -> None:
    listed = signer.stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=10)
    assert [(w.address, w.backend) for w in listed.wallets] == [(world.wallet, "keystore")]
    health = health_pb2_grpc.HealthStub(signer.channel)
    for service in ("", "assetwithdrawal.signer.v1.SignerService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(signer.channel)
    (answer,) = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for s in answer.list_services_response.service}
    assert "assetwithdrawal.signer.v1.SignerService" in names


@pytest.mark.hsm
def test_pkcs11_signer_signs_once_per_request(hsm_signer: RunningSigner) -> None:
    """The HSM's signatures are randomised: repeats must still get the stored bytes."""
    backend = hsm_signer.server.backend
    assert backend.backend_name == "pkcs11"
    world = SignerWorld(hsm_signer.sessions, backend.address)
    listed = hsm_signer.stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=10)
    assert [(w.address, w.backend) for w in listed.wallets] == [(backend.address, "pkcs11")]

    withdrawal = world.add_withdrawal()
    nonce = world.nonce()
    request = world.payout(withdrawal, nonce=nonce)
    with ThreadPoolExecutor(4) as pool:
        responses = list(
            pool.map(lambda _: hsm_signer.stub.SignTransaction(request, timeout=60), range(4))
        )
    assert len({r.raw_transaction for r in responses}) == 1
    assert Account.recover_transaction(responses[0].raw_transaction) == backend.address
    (row,) = world.ledger_at(nonce)
    assert bytes(row.raw_tx) == responses[0].raw_transaction
    code, reason, _, _ = refused(hsm_signer, world.payout(withdrawal, nonce=world.nonce()))
    assert (code, reason) == (Code.FAILED_PRECONDITION, "ALREADY_SIGNED_AT_OTHER_NONCE")


def test_identical_payment_for_two_withdrawals_at_one_nonce(
    signer: RunningSigner, world: SignerWorld
) -> None:
    """Two withdrawals with the same recipient, amount and token at one nonce: one transaction
    (the keystore's signatures are deterministic), recorded as paying both, never an error."""
    first = world.add_withdrawal()
    twin = world.add_withdrawal(recipient=first.recipient, amount=first.amount)
    nonce = world.nonce()
    a = signer.stub.SignTransaction(world.payout(first, nonce=nonce), timeout=30)
    b = signer.stub.SignTransaction(world.payout(twin, nonce=nonce), timeout=30)
    assert b.raw_transaction == a.raw_transaction
    assert len(world.ledger_at(nonce)) == 1
    assert [i.tx_hash for i in world.items_of(twin.id)] == [a.transaction_hash]
    # Both are now bound to that nonce.
    assert refused(signer, world.payout(twin, nonce=world.nonce()))[1] == (
        "ALREADY_SIGNED_AT_OTHER_NONCE"
    )
