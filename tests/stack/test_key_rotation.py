"""A hot wallet's key rotated under load, end to end, on real components
(`tests.support.treasury`): MariaDB, Redis, anvil with the Safe v1.4.1 contracts, the gateway,
processor and monitor, a hot signer that creates its keys itself (keystore), three owners'
signers (one stopped), a 2-of-3 treasury Safe owning the PayoutVault.

Withdrawals are created through the gateway continuously (LOAD_PER_SECOND) from before the
`hot_wallet.rotate` change is confirmed until after the rotation is DONE. Then, judged from the
chain: every withdrawal COMPLETED and paid exactly once (each recipient's balance is its one
amount, each payout number paid in the vault's bitmap), the old key retired (the signer refuses
a new payout with it, its operator role is removed on chain, its gas was swept to the Safe and
its balance is ~0), and the new wallet paying (withdrawals after the switch were sent by it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from sqlalchemy import select
from web3 import Web3

from assetwithdrawal.admin.v1 import admin_pb2
from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.anvil import rpc
from tests.support.pipeline import wait_until
from tests.support.requests import create_request, fresh_address, rich_error
from tests.support.treasury import CHAIN, TreasuryStack, treasury_stack
from withdrawal_shared.chain.erc20 import encode_transfer
from withdrawal_shared.chain.payout import payout_vault_contract
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import HotWallet, PayoutTransaction, Withdrawal
from withdrawal_shared.ids import new_ulid

pytestmark = pytest.mark.chain

LOAD_PER_SECOND = 20
LOAD_SECONDS = 60
AMOUNT = "0.01"  # USDC
AMOUNT_BASE_UNITS = 10_000
GAS_WEI = 10**18
Rotation = admin_pb2.HotWalletRotation


@pytest.fixture(scope="module")
def stack(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TreasuryStack]:
    with treasury_stack(
        redis_url, module_redis_prefix, tmp_path_factory, hot_owns_keys=True
    ) as running:
        # The Safe pays the new wallet's gas from its own native balance.
        rpc(running.pipeline.w3, "anvil_setBalance", [running.safe, hex(100 * 10**18)])
        yield running


@dataclass
class Load:
    """Creates withdrawals through the gateway at a steady rate until stopped."""

    stack: TreasuryStack
    created: list[tuple[str, str, float]] = field(default_factory=list)  # name, recipient, t
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        pipeline = self.stack.pipeline
        start = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            recipient = fresh_address()
            try:
                made = pipeline.gateway.stub.CreateWithdrawal(
                    create_request(amount=AMOUNT, recipient=recipient),
                    metadata=pipeline.partner.metadata,
                    timeout=10,
                )
                self.created.append((made.name, recipient, time.time()))
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code()}: {exc.details()}")
            sent += 1
            pause = start + sent / LOAD_PER_SECOND - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def stop(self) -> None:
        self._stop.set()


def test_a_hot_wallet_key_is_rotated_under_load(stack: TreasuryStack) -> None:
    pipeline = stack.pipeline
    w3 = pipeline.w3
    sessions = make_sessionmaker(make_engine(pipeline.database_url))
    old = pipeline.hot_wallet.lower()
    vault_address = pipeline.boot.payout_vault
    assert vault_address is not None
    vault = payout_vault_contract(w3, vault_address)
    load = Load(stack)
    loader = threading.Thread(target=load.run, daemon=True)
    loader.start()
    try:
        time.sleep(3)
        proposed = stack.propose(
            "hot_wallet.rotate", {"chain": CHAIN, "wallet": old, "gas_wei": str(GAS_WEI)}
        )
        assert not proposed.HasField("hot_wallet_rotation")  # nothing before a confirmation
        applied = stack.confirm(proposed.name)
        assert applied.hot_wallet_rotation.state == Rotation.STATE_RUNNING
        assert applied.hot_wallet_rotation.name.startswith("rotations/")
        switched_at: float | None = None

        def done() -> admin_pb2.Change | None:
            nonlocal switched_at
            current = stack.get(proposed.name)
            rotation = current.hot_wallet_rotation
            assert rotation.state != Rotation.STATE_FAILED, rotation
            if switched_at is None and rotation.step >= Rotation.STEP_DRAIN:
                switched_at = time.time()
            return current if rotation.state == Rotation.STATE_DONE else None

        finished = wait_until(
            done, 150, lambda: f"the rotation did not finish: {stack.get(proposed.name)}"
        )
        # More withdrawals, all for the new wallet: the load runs for LOAD_SECONDS at least.
        time.sleep(max(3.0, LOAD_SECONDS - (time.time() - load.created[0][2])))
    finally:
        load.stop()
        loader.join(15)
    rotation = finished.hot_wallet_rotation
    started = load.created[0][2] if load.created else 0.0
    assert load.errors == [], load.errors[:5]
    assert switched_at is not None
    new = rotation.new_wallet_address.lower()
    assert new and new != old and rotation.old_wallet_address == old
    assert [op.step for op in rotation.operations] == [
        Rotation.STEP_ENABLE_OPERATOR,
        Rotation.STEP_FUND_GAS,
        Rotation.STEP_REMOVE_OPERATOR,
    ]
    for each in rotation.operations:
        assert each.operation.state == admin_pb2.TreasuryOperation.STATE_EXECUTED, each
        assert each.operation.transaction_hash.startswith("0x")

    # Every withdrawal paid exactly once, judged from the chain.
    names = [name for name, _, _ in load.created]
    assert len(names) >= LOAD_PER_SECOND * 10, len(names)
    for name in names:
        pipeline.wait_for_state(name, withdrawal_pb2.STATE_COMPLETED, timeout=90)
    for _, recipient, _ in load.created:
        assert pipeline.token_balance(recipient) == AMOUNT_BASE_UNITS, recipient
    with sessions() as session:
        ids = [name.rsplit("/", 1)[1] for name in names]
        rows = session.scalars(select(Withdrawal).where(Withdrawal.id.in_(ids))).all()
        numbers = [row.payout_number for row in rows]
        assert len(rows) == len(ids) and None not in numbers
        assert len(set(numbers)) == len(numbers)
        senders = {
            row.id: session.scalar(
                select(PayoutTransaction.wallet).where(PayoutTransaction.id == row.payout_tx_id)
            )
            for row in rows
        }
        wallets = {w.address: w for w in session.scalars(select(HotWallet))}
    for number in numbers:
        assert vault.functions.isPaid(number).call() is True
    assert set(senders.values()) == {old, new}  # both paid: before and after the switch
    by_wallet = {w: sum(1 for s in senders.values() if s == w) for w in (old, new)}
    print(  # the run's numbers, for the record (`pytest -s`)
        f"rotation under load: {len(names)} withdrawals over "
        f"{load.created[-1][2] - started:.0f} s, {by_wallet[old]} paid by the old wallet, "
        f"{by_wallet[new]} by the new one; sweep {rotation.sweep_value_wei} wei"
    )

    # The new wallet pays: withdrawals created after the switch were sent by it (on chain).
    late = [name for name, _, t in load.created if t > switched_at + 2]
    assert late, "no withdrawal was created after the switch"
    for name in late:
        sent = pipeline.get(name).transaction_hash
        receipt = w3.eth.get_transaction_receipt(sent)  # type: ignore[arg-type]
        assert receipt["from"].lower() == new, name
    assert (wallets[new].state, wallets[new].enabled) == ("ACTIVE", True)
    assert (wallets[old].state, wallets[old].enabled) == ("RETIRED", False)

    # The old key is retired: no operator role, its gas swept to the Safe, no new payout.
    assert vault.functions.operators(Web3.to_checksum_address(old)).call() is False
    assert vault.functions.operators(Web3.to_checksum_address(new)).call() is True
    sweep = w3.eth.get_transaction(rotation.sweep_transaction_hash)  # type: ignore[arg-type]
    assert sweep["to"].lower() == stack.safe.lower() and sweep["from"].lower() == old
    assert sweep["value"] == int(rotation.sweep_value_wei) > 0
    assert w3.eth.get_balance(Web3.to_checksum_address(old)) < 10**15  # ~0: dust of the fee
    channel = grpc.insecure_channel(stack.hot_target)
    try:
        signer = signer_pb2_grpc.SignerServiceStub(channel)
        listed = {
            w.address.lower(): w.state
            for w in signer.ListWallets(signer_pb2.ListWalletsRequest(), timeout=10).wallets
        }
        assert listed == {old: signer_pb2.Wallet.STATE_RETIRED, new: signer_pb2.Wallet.STATE_ACTIVE}
        somebody = fresh_address()
        with pytest.raises(grpc.RpcError) as refused:
            signer.SignTransaction(
                signer_pb2.SignTransactionRequest(
                    wallet_address=Web3.to_checksum_address(old),
                    chain_id=137,
                    nonce=w3.eth.get_transaction_count(Web3.to_checksum_address(old)),
                    to_address=pipeline.boot.token_address,
                    data=encode_transfer(somebody, 1),
                    value_wei="0",
                    gas_limit=90_000,
                    max_fee_per_gas_wei="90000000000",
                    max_priority_fee_per_gas_wei="30000000000",
                    purpose=signer_pb2.PURPOSE_PAYOUT,
                    items=[
                        signer_pb2.PayoutItem(
                            withdrawal_id=new_ulid(),
                            recipient_address=somebody,
                            amount_base_units="1",
                            token_address=pipeline.boot.token_address,
                        )
                    ],
                ),
                timeout=10,
            )
        _, info, _ = rich_error(refused.value)
        assert info.reason == "WALLET_RETIRED"
    finally:
        channel.close()
