"""A withdrawal signed by a key inside SoftHSM2 (PKCS#11) completes on anvil."""

from __future__ import annotations

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from tests.support.pipeline import Pipeline
from tests.support.requests import create_request, fresh_address


def test_hsm_signed_withdrawal_completes(hsm_pipeline: Pipeline) -> None:
    p = hsm_pipeline
    recipient = fresh_address()
    created = p.gateway.stub.CreateWithdrawal(
        create_request(amount="42.000001", recipient=recipient), metadata=p.partner.metadata
    )
    done = p.wait_for_state(created.name, withdrawal_pb2.STATE_COMPLETED, timeout=90)
    assert p.token_balance(recipient) == 42_000_001
    tx = p.w3.eth.get_transaction(done.transaction_hash)  # type: ignore[arg-type]
    assert tx["from"].lower() == p.hot_wallet.lower()  # signed inside the HSM
    assert tx["chainId"] == 137
