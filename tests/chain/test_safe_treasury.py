"""The treasury Safe (Safe v1.4.1, the package's own build) on a real anvil: our EIP-712 hash
against the contract's, owner signatures, the threshold, payouts through the vault by the Safe
and by a hot wallet, and a failing inner call. Every check reads the chain."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from eth_account import Account
from web3 import Web3
from web3.types import TxReceipt

from devstack.anvil import AnvilProcess, DevAccount, revert, snapshot
from devstack.safe import (
    CANONICAL,
    SINGLETON,
    SafeDeployment,
    create_safe,
    deploy_safe_contracts,
    exec_transaction_params,
    execute_safe_tx,
    load_safe_artifact,
    predict_safe_address,
    setup_calldata,
    sign_safe_tx,
)
from devstack.stablecoin import deploy_test_stablecoin
from devstack.transactions import TransactionReverted, send_transaction
from devstack.vault import (
    deploy_payout_vault,
    fund_vault,
    send_payout,
    set_operator,
    transfer_vault_ownership,
)
from withdrawal_shared.chain.contracts import balance_of
from withdrawal_shared.chain.payout import (
    Payment,
    decode_payout_events,
    encode_payout,
    encode_set_operator,
    encode_sweep,
    is_paid,
    payout_vault_contract,
)
from withdrawal_shared.chain.safe import (
    contract_transaction_hash,
    execution_result,
    safe_nonce,
    safe_owners,
    safe_threshold,
)
from withdrawal_shared.chain.safe_tx import (
    EXECUTION_SUCCESS_TOPIC,
    ZERO_ADDRESS,
    Operation,
    SafeTx,
    decode_exec_transaction,
    encode_exec_transaction,
    owner_signature,
    pack_signatures,
    safe_tx_hash,
)
from withdrawal_shared.chain.types import BaseUnits, ChecksumAddress, HexStr, PrivateKey

pytestmark = pytest.mark.chain

ONE_USDC = 1_000_000
LARGE = 250_000 * ONE_USDC  # a withdrawal large enough to go through the treasury Safe
SALT = 20261207
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True)
class Treasury:
    deployment: SafeDeployment
    safe: ChecksumAddress
    vault: ChecksumAddress
    token: ChecksumAddress
    owners: tuple[DevAccount, DevAccount, DevAccount]
    deployer: DevAccount
    hot: DevAccount  # a vault operator (hot wallet); also sends execTransaction

    def keys(self, *indexes: int) -> list[PrivateKey]:
        return [self.owners[index].private_key for index in indexes]


@pytest.fixture(scope="module")
def treasury(anvil: AnvilProcess) -> Iterator[Treasury]:
    """Safe contracts, a 2-of-3 Safe owning a funded vault with one hot-wallet operator; made
    once for the module on the session anvil and reverted after it."""
    w3 = anvil.web3()
    module_snapshot = snapshot(w3)
    deployer, hot = anvil.accounts[0], anvil.accounts[4]
    owners = (anvil.accounts[1], anvil.accounts[2], anvil.accounts[3])
    token = deploy_test_stablecoin(w3, deployer.private_key)
    vault = deploy_payout_vault(w3, deployer.private_key, deployer.address)
    set_operator(w3, vault, deployer.private_key, hot.address)
    fund_vault(
        w3, token, deployer.private_key, vault, BaseUnits(2_000_000 * ONE_USDC), mint_new=True
    )
    deployment = deploy_safe_contracts(w3, deployer.private_key)
    safe = create_safe(w3, deployer.private_key, deployment, [o.address for o in owners], 2, SALT)
    set_operator(w3, vault, deployer.private_key, safe)
    transfer_vault_ownership(w3, vault, deployer.private_key, safe)
    yield Treasury(deployment, safe, vault, token, owners, deployer, hot)
    assert revert(w3, module_snapshot)


def _recipient(tag: str) -> str:
    return "0x" + Web3.keccak(text=f"safe-treasury-test/{tag}")[-20:].hex()


def _exec(
    w3: Web3, t: Treasury, tx: SafeTx, owner_indexes: tuple[int, ...], *, gas: int | None = None
) -> tuple[bytes, TxReceipt]:
    return execute_safe_tx(w3, t.safe, tx, t.keys(*owner_indexes), t.hot.private_key, gas=gas)


# -- the deployment ----------------------------------------------------------------------------


def test_contracts_are_safe_v141_and_the_safe_owns_the_vault(w3: Web3, treasury: Treasury) -> None:
    t = treasury
    assert t.deployment.singleton == CANONICAL[SINGLETON][0]
    assert t.deployment.proxy_factory == CANONICAL["SafeProxyFactory"][0]
    assert t.deployment.fallback_handler == CANONICAL["CompatibilityFallbackHandler"][0]
    for name, (address, code_hash) in CANONICAL.items():
        if name in (SINGLETON, "SafeProxyFactory", "CompatibilityFallbackHandler"):
            assert Web3.keccak(w3.eth.get_code(address)).to_0x_hex() == code_hash
    assert load_safe_artifact(SINGLETON).compiler_version.startswith("0.7.6")
    # A re-run deploys nothing and finds the same Safe.
    block = w3.eth.block_number
    assert deploy_safe_contracts(w3, t.deployer.private_key) == t.deployment
    owners = [o.address for o in t.owners]
    assert create_safe(w3, t.deployer.private_key, t.deployment, owners, 2, SALT) == t.safe
    assert w3.eth.block_number == block
    initializer = setup_calldata(owners, 2, t.deployment.fallback_handler)
    assert predict_safe_address(w3, t.deployment, initializer, SALT + 1) != t.safe

    assert sorted(safe_owners(w3, t.safe)) == sorted(owners)
    assert safe_threshold(w3, t.safe) == 2
    assert safe_nonce(w3, t.safe) == 0
    vault = payout_vault_contract(w3, t.vault)
    assert vault.functions.owner().call() == t.safe
    assert vault.functions.operators(t.safe).call() is True
    with pytest.raises(TransactionReverted, match="OwnableUnauthorizedAccount"):
        set_operator(w3, t.vault, t.deployer.private_key, t.deployer.address)


# -- the hash ----------------------------------------------------------------------------------


def _txs(t: Treasury) -> list[SafeTx]:
    other = Web3.to_checksum_address(_recipient("other-target"))
    return [
        SafeTx.call(t.vault, encode_set_operator(_recipient("new-wallet"), True), 0),
        SafeTx.call(t.vault, b"", 0),
        SafeTx(
            to=other,
            value=10**18 + 1,
            data=bytes(range(70)),
            operation=Operation.CALL,
            safe_tx_gas=0,
            base_gas=0,
            gas_price=0,
            gas_token=ZERO_ADDRESS,
            refund_receiver=ZERO_ADDRESS,
            nonce=0,
        ),
        SafeTx.call(t.vault, encode_payout(t.token, [Payment(7, _recipient("h"), 5)]), 41),
        SafeTx(
            to=t.vault,
            value=3,
            data=b"\x01\x02\x03",
            operation=Operation.DELEGATECALL,
            safe_tx_gas=123_456,
            base_gas=21_000,
            gas_price=30 * 10**9,
            gas_token=t.token,
            refund_receiver=other,
            nonce=2**64 + 5,
        ),
    ]


def test_safe_tx_hash_equals_the_contracts_get_transaction_hash(
    w3: Web3, treasury: Treasury
) -> None:
    hashes = set()
    for tx in _txs(treasury):
        ours = safe_tx_hash(w3.eth.chain_id, treasury.safe, tx)
        assert ours == contract_transaction_hash(w3, treasury.safe, tx), tx
        hashes.add(ours)
    assert len(hashes) == len(_txs(treasury))
    # The domain binds chain and Safe: another chain id gives another hash.
    tx = _txs(treasury)[0]
    assert safe_tx_hash(1, treasury.safe, tx) != contract_transaction_hash(w3, treasury.safe, tx)


def test_owner_signature_is_a_raw_hash_signature_with_v_27_or_28(
    w3: Web3, treasury: Treasury
) -> None:
    tx = _txs(treasury)[0]
    digest = safe_tx_hash(w3.eth.chain_id, treasury.safe, tx)
    for owner in treasury.owners:
        ours = sign_safe_tx(w3.eth.chain_id, treasury.safe, tx, owner.private_key)
        raw = Account.unsafe_sign_hash(digest, owner.private_key)  # no message prefix
        assert ours.owner == owner.address
        assert ours.signature == bytes(raw.signature)
        assert ours.signature[64] in (27, 28)
        assert Account._recover_hash(digest, signature=ours.signature) == owner.address


# -- the threshold -----------------------------------------------------------------------------


def test_two_of_three_set_operator_runs_and_emits_execution_success(
    w3: Web3, treasury: Treasury
) -> None:
    t = treasury
    wallet = Web3.to_checksum_address(_recipient("new-hot-wallet"))
    vault = payout_vault_contract(w3, t.vault)
    assert vault.functions.operators(wallet).call() is False
    tx = SafeTx.call(t.vault, encode_set_operator(wallet, True), safe_nonce(w3, t.safe))

    digest, receipt = _exec(w3, t, tx, (0, 2))  # the second owner never signs

    assert vault.functions.operators(wallet).call() is True
    assert safe_nonce(w3, t.safe) == tx.nonce + 1
    result = execution_result(receipt["logs"], t.safe, digest)
    assert result is not None and result.success and result.payment == 0
    assert result.safe_tx_hash == digest == contract_transaction_hash(w3, t.safe, tx)
    success = [
        log
        for log in receipt["logs"]
        if log["address"] == t.safe and log["topics"][0].to_0x_hex() == EXECUTION_SUCCESS_TOPIC
    ]
    assert len(success) == 1 and bytes(success[0]["topics"][1]) == digest
    # What the hot wallet's signer decodes from the mined calldata is the transaction signed.
    sent = bytes(w3.eth.get_transaction(receipt["transactionHash"])["input"])
    decoded, packed = decode_exec_transaction(sent)
    assert replace(decoded, nonce=tx.nonce) == tx and len(packed) == 2 * 65
    # Another hash, or another Safe's address, finds nothing in the same receipt.
    assert execution_result(receipt["logs"], t.safe, bytes(32)) is None
    assert execution_result(receipt["logs"], t.vault, digest) is None


def test_any_two_owners_suffice_in_any_order(w3: Web3, treasury: Treasury) -> None:
    t = treasury
    vault = payout_vault_contract(w3, t.vault)
    for index, pair in enumerate([(0, 1), (2, 1), (1, 2), (2, 0)]):
        wallet = Web3.to_checksum_address(_recipient(f"pair-{index}"))
        tx = SafeTx.call(t.vault, encode_set_operator(wallet, True), safe_nonce(w3, t.safe))
        _exec(w3, t, tx, pair)
        assert vault.functions.operators(wallet).call() is True
    assert safe_nonce(w3, t.safe) == 4


def test_one_signature_reverts_gs020_and_keeps_the_nonce(w3: Web3, treasury: Treasury) -> None:
    t = treasury
    wallet = Web3.to_checksum_address(_recipient("one-signature"))
    tx = SafeTx.call(t.vault, encode_set_operator(wallet, True), safe_nonce(w3, t.safe))

    with pytest.raises(TransactionReverted, match="GS020"):  # refused at estimation
        _exec(w3, t, tx, (1,))
    with pytest.raises(TransactionReverted) as mined:  # and on chain
        _exec(w3, t, tx, (1,), gas=300_000)
    assert mined.value.receipt is not None and mined.value.receipt["status"] == 0

    assert safe_nonce(w3, t.safe) == tx.nonce
    assert payout_vault_contract(w3, t.vault).functions.operators(wallet).call() is False
    # The same transaction with a second owner's signature then runs at that nonce.
    _exec(w3, t, tx, (1, 0))
    assert payout_vault_contract(w3, t.vault).functions.operators(wallet).call() is True


def test_signatures_out_of_owner_order_revert_gs026(w3: Web3, treasury: Treasury) -> None:
    t = treasury
    tx = SafeTx.call(t.vault, encode_set_operator(_recipient("order"), True), 0)
    signatures = sorted(
        (sign_safe_tx(w3.eth.chain_id, t.safe, tx, key) for key in t.keys(0, 1)),
        key=lambda item: int(item.owner, 16),
        reverse=True,
    )
    calldata = encode_exec_transaction(tx, b"".join(s.signature for s in signatures))
    with pytest.raises(TransactionReverted, match="GS026"):
        send_transaction(
            w3, t.hot.private_key, {"to": t.safe, "data": HexStr("0x" + calldata.hex())}
        )
    assert safe_nonce(w3, t.safe) == 0


def test_a_non_owner_signature_does_not_count(w3: Web3, treasury: Treasury) -> None:
    t = treasury
    tx = SafeTx.call(t.vault, encode_set_operator(_recipient("stranger"), True), 0)
    stranger = Account.create().key.to_0x_hex()
    with pytest.raises(TransactionReverted, match="GS026"):
        execute_safe_tx(w3, t.safe, tx, [*t.keys(0), PrivateKey(stranger)], t.hot.private_key)
    assert safe_nonce(w3, t.safe) == 0


# -- payouts: one bitmap for both paths ----------------------------------------------------------


def _safe_payout(w3: Web3, t: Treasury, payment: Payment) -> TxReceipt:
    tx = SafeTx.call(t.vault, encode_payout(t.token, [payment]), safe_nonce(w3, t.safe))
    digest, receipt = _exec(w3, t, tx, (0, 1))
    result = execution_result(receipt["logs"], t.safe, digest)
    assert result is not None and result.success
    return receipt


def test_safe_payout_then_hot_wallet_payout_of_the_same_number_is_skipped(
    w3: Web3, treasury: Treasury
) -> None:
    t = treasury
    payment = Payment(9_001, _recipient("large-1"), LARGE)
    vault_before = balance_of(w3, t.token, t.vault)

    receipt = _safe_payout(w3, t, payment)
    events = decode_payout_events(receipt["logs"], t.vault)
    assert events.skipped == [] and events.failed == []
    assert [(e.first_number, e.count, e.paid, e.total_amount) for e in events.executed] == [
        (9_001, 1, 1, LARGE)
    ]
    recipient = Web3.to_checksum_address(payment.recipient)
    assert balance_of(w3, t.token, recipient) == LARGE
    assert balance_of(w3, t.token, t.vault) == vault_before - LARGE
    assert is_paid(w3, t.vault, 9_001)

    again = send_payout(w3, t.vault, t.hot.private_key, t.token, [payment])
    events = decode_payout_events(again["logs"], t.vault)
    assert events.skipped == [9_001]
    assert [(e.paid, e.total_amount) for e in events.executed] == [(0, 0)]
    assert balance_of(w3, t.token, recipient) == LARGE
    assert balance_of(w3, t.token, t.vault) == vault_before - LARGE


def test_hot_wallet_payout_then_safe_payout_of_the_same_number_is_skipped(
    w3: Web3, treasury: Treasury
) -> None:
    t = treasury
    payment = Payment(9_002, _recipient("large-2"), LARGE)
    vault_before = balance_of(w3, t.token, t.vault)

    first = send_payout(w3, t.vault, t.hot.private_key, t.token, [payment])
    assert decode_payout_events(first["logs"], t.vault).executed[0].paid == 1

    receipt = _safe_payout(w3, t, payment)  # the Safe's execution succeeds, paying nothing
    events = decode_payout_events(receipt["logs"], t.vault)
    assert events.skipped == [9_002]
    assert [(e.paid, e.total_amount) for e in events.executed] == [(0, 0)]
    recipient = Web3.to_checksum_address(payment.recipient)
    assert balance_of(w3, t.token, recipient) == LARGE
    assert balance_of(w3, t.token, t.vault) == vault_before - LARGE


# -- a failing inner call ------------------------------------------------------------------------


def test_failing_inner_call_reverts_gs013_and_keeps_the_nonce(w3: Web3, treasury: Treasury) -> None:
    t = treasury
    held = balance_of(w3, t.token, t.vault)
    # sweep() of more than the vault holds: the token reverts, so the vault call fails.
    failing = encode_sweep(t.token, t.deployer.address, held + 1)
    nonce = safe_nonce(w3, t.safe)
    tx = SafeTx.call(t.vault, failing, nonce)
    assert tx.safe_tx_gas == 0 and tx.gas_price == 0

    with pytest.raises(TransactionReverted, match="GS013"):
        _exec(w3, t, tx, (0, 1))
    with pytest.raises(TransactionReverted) as mined:
        _exec(w3, t, tx, (0, 1), gas=500_000)
    receipt = mined.value.receipt
    assert receipt is not None and receipt["status"] == 0 and receipt["logs"] == []
    assert safe_nonce(w3, t.safe) == nonce
    assert balance_of(w3, t.token, t.vault) == held

    # The nonce is still free: a good transaction signed for it runs.
    wallet = Web3.to_checksum_address(_recipient("after-gs013"))
    _exec(w3, t, SafeTx.call(t.vault, encode_set_operator(wallet, True), nonce), (0, 1))
    assert safe_nonce(w3, t.safe) == nonce + 1


def test_with_safe_tx_gas_a_failing_inner_call_consumes_the_nonce(
    w3: Web3, treasury: Treasury
) -> None:
    """Why the builders keep safeTxGas at 0: with it set, the Safe accepts a failed inner call,
    emits ExecutionFailure and uses the nonce up."""
    t = treasury
    held = balance_of(w3, t.token, t.vault)
    nonce = safe_nonce(w3, t.safe)
    base = SafeTx.call(t.vault, encode_sweep(t.token, t.deployer.address, held + 1), nonce)
    tx = replace(base, safe_tx_gas=200_000)
    digest, params = exec_transaction_params(w3, t.safe, tx, t.keys(0, 2))
    params["gas"] = 600_000
    receipt = send_transaction(w3, t.hot.private_key, params)
    result = execution_result(receipt["logs"], t.safe, digest)
    assert result is not None and not result.success
    assert safe_nonce(w3, t.safe) == nonce + 1
    assert balance_of(w3, t.token, t.vault) == held


def test_a_high_s_owner_signature_is_accepted(w3: Web3, treasury: Treasury) -> None:
    """An HSM returns (r, s) as its ECDSA made them, s not folded into the lower half; the
    signer only finds the recovery id. The Safe's ecrecover takes either form."""
    t = treasury
    wallet = Web3.to_checksum_address(_recipient("high-s"))
    tx = SafeTx.call(t.vault, encode_set_operator(wallet, True), safe_nonce(w3, t.safe))
    signatures = []
    for key in t.keys(0, 1):
        low = sign_safe_tx(w3.eth.chain_id, t.safe, tx, key)
        r = int.from_bytes(low.signature[:32], "big")
        s = int.from_bytes(low.signature[32:64], "big")
        assert s <= SECP256K1_N // 2  # eth_keys signs low-s
        recovery_id = low.signature[64] - 27
        signatures.append(owner_signature(low.owner, r, SECP256K1_N - s, 1 - recovery_id))
    calldata = encode_exec_transaction(tx, pack_signatures(signatures))
    receipt = send_transaction(
        w3, t.hot.private_key, {"to": t.safe, "data": HexStr("0x" + calldata.hex())}
    )
    digest = safe_tx_hash(w3.eth.chain_id, t.safe, tx)
    result = execution_result(receipt["logs"], t.safe, digest)
    assert result is not None and result.success
    assert payout_vault_contract(w3, t.vault).functions.operators(wallet).call() is True
