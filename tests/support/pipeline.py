"""The whole pipeline for end-to-end tests, on real components: anvil (chain id 137, 0.5 s
blocks), a database of the suite's own, Redis under a prefix of the test's own, and the four
services — signer, gateway, processor and monitor — bootstrapped the way `make up` does it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from web3 import Web3

from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from devstack.anvil import AnvilProcess, mine, rpc
from devstack.bootstrap import BootstrapResult, bootstrap
from svc_gateway.settings import GatewaySettings
from svc_monitor.server import MonitorServer
from svc_monitor.settings import MonitorSettings
from svc_processor.server import ProcessorServer
from svc_processor.settings import ProcessorSettings
from tests.support.gateway import Partner, RunningGateway
from tests.support.services import ThreadedServer
from withdrawal_shared.chain.contracts import balance_of
from withdrawal_shared.scopes import DEFAULT_SCOPES, Scope

T = TypeVar("T")


@dataclass
class Pipeline:
    anvil: AnvilProcess
    w3: Web3
    database_url: str
    redis_prefix: str
    gateway: RunningGateway
    processor: ThreadedServer
    monitor: ThreadedServer
    boot: BootstrapResult
    partner: Partner

    @property
    def hot_wallet(self) -> str:
        return self.boot.hot_wallets[0]

    def token_balance(self, holder: str) -> int:
        return int(balance_of(self.w3, self.boot.token_address, Web3.to_checksum_address(holder)))

    def get(self, name: str) -> withdrawal_pb2.Withdrawal:
        return self.gateway.stub.GetWithdrawal(
            withdrawal_pb2.GetWithdrawalRequest(name=name), metadata=self.partner.metadata
        )

    def wait_for_state(
        self, name: str, state: int, timeout: float = 60
    ) -> withdrawal_pb2.Withdrawal:
        def reached() -> withdrawal_pb2.Withdrawal | None:
            current = self.get(name)
            return current if current.state == state else None

        return wait_until(
            reached,
            timeout,
            lambda: f"{name} never reached state {state}: {self.get(name)}",
        )


def wait_until(probe: Callable[[], T | None], timeout: float, describe: Callable[[], str]) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(0.1)
    raise AssertionError(describe())


def signer_wallet(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = signer_pb2_grpc.SignerServiceStub(channel)
        return stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=10).wallets[0].address


def signer_wallets(target: str) -> list[str]:
    """Every hot wallet the signer at `target` holds (ListWallets order; first = signer_wallet)."""
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = signer_pb2_grpc.SignerServiceStub(channel)
        listed = stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=10)
        return [wallet.address for wallet in listed.wallets]


class BlocksOnDemand:
    """Mines a block as soon as a transaction waits in anvil's pool, until `stop()`: a set-up
    that sends its transactions one after another (the bootstrap's dozen) then does not wait
    for the next interval block each time. Interval mining goes on unchanged beside it; the
    thread ends by itself when anvil no longer answers."""

    def __init__(self, anvil: AnvilProcess, poll_seconds: float = 0.02) -> None:
        self._w3 = anvil.web3()
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="blocks-on-demand", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        # On any error (anvil stopped) the blocks come from interval mining alone.
        with contextlib.suppress(Exception):
            while not self._stop.wait(self._poll_seconds):
                if int(rpc(self._w3, "txpool_status")["pending"], 16):
                    mine(self._w3)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def running_pipeline(
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    signer_target: str,
    *,
    payout_vault: bool = False,
    batch_max_items: int = 300,
    batch_max_wait_seconds: float = 1.0,
    max_in_flight_per_wallet: int = ProcessorSettings.max_in_flight_per_wallet,
    stuck_after_blocks: int = ProcessorSettings.stuck_after_blocks,
    replacement_bump_pct: int = ProcessorSettings.replacement_bump_pct,
    extra_rpc_urls: Sequence[str] = (),
    approval_expiry_seconds: float = ProcessorSettings.approval_expiry_seconds,
    emergency_wallets: int = 0,
    sweep_age_seconds: float = 1.0,
    safe_owner_signers: Sequence[str] = (),
    treasury_poll_seconds: float = 0.5,
    webhooks_allow_http_loopback: bool = False,
    gateway_options: Mapping[str, Any] | None = None,
) -> Iterator[Pipeline]:
    """Start anvil, bootstrap the chain and database for the signer at `signer_target` (every
    hot wallet it lists), and run the gateway, processor and monitor against them. With
    `payout_vault` the processor pays through the PayoutVault in batches; without, one ERC-20
    transfer per withdrawal. `max_in_flight_per_wallet` bounds the payouts in flight per hot
    wallet (the processor's setting); `stuck_after_blocks` and `replacement_bump_pct` when a
    payout without a receipt is replaced at its nonce, and with how much higher fees.
    `extra_rpc_urls` come FIRST in the processor's and the monitor's CHAIN_RPC_URL, before
    anvil's (e.g. a dead provider the pool has to fail over from). `approval_expiry_seconds`
    is the processor's PROCESSOR_APPROVAL_EXPIRY_SECONDS. The last `emergency_wallets` of the
    signer's wallets get the EMERGENCY role (`boot.emergency_wallets`). `sweep_age_seconds` is
    how long a withdrawal sits RECEIVED or VALIDATED before the sweeper re-drives it (long: a
    test proves that the queue's tasks alone moved the rows). `safe_owner_signers` are the
    processor's PROCESSOR_SAFE_OWNER_SIGNERS (its treasury executor then runs every
    `treasury_poll_seconds`).
    `webhooks_allow_http_loopback` lets the gateway register `http://127.0.0.1` webhook
    endpoints (a local receiver); `gateway_options` are more GatewaySettings fields."""
    with AnvilProcess(block_time=0.5) as anvil:
        w3 = anvil.web3()
        bootstrap_blocks = BlocksOnDemand(anvil)
        wallets = signer_wallets(signer_target)
        boot = bootstrap(
            w3,
            anvil.accounts[0],
            database_url,
            wallets,
            payout_vault=payout_vault,
            emergency_wallets=wallets[len(wallets) - emergency_wallets :]
            if emergency_wallets
            else (),
        )
        bootstrap_blocks.stop()
        common = {"database_url": database_url, "redis_url": redis_url}
        chain_rpc_url = ",".join([*extra_rpc_urls, anvil.rpc_url])
        gateway = RunningGateway(
            GatewaySettings(
                **common,
                redis_prefix=redis_prefix,
                grpc_port=0,
                http_port=0,
                watch_poll_seconds=0.5,
                shutdown_grace_seconds=1.0,
                **{
                    "webhooks_allow_http_loopback": webhooks_allow_http_loopback,
                    **(gateway_options or {}),
                },
            )
        )
        processor_server = ProcessorServer(
            ProcessorSettings(
                **common,
                redis_prefix=redis_prefix,
                chain_rpc_url=chain_rpc_url,
                signer_target=signer_target,
                grpc_port=0,
                sweep_interval_seconds=0.5,
                sweep_age_seconds=sweep_age_seconds,
                batch_max_items=batch_max_items,
                batch_max_wait_seconds=batch_max_wait_seconds,
                batch_poll_seconds=0.1,
                max_in_flight_per_wallet=max_in_flight_per_wallet,
                stuck_after_blocks=stuck_after_blocks,
                replacement_bump_pct=replacement_bump_pct,
                approval_expiry_seconds=approval_expiry_seconds,
                safe_owner_signers=tuple(safe_owner_signers),
                treasury_poll_seconds=treasury_poll_seconds,
            )
        )
        assert processor_server.pipeline.batch.stuck_after_blocks == stuck_after_blocks
        processor = ThreadedServer(processor_server)
        monitor = ThreadedServer(
            MonitorServer(
                MonitorSettings(
                    **common,
                    redis_prefix=redis_prefix,
                    chain_rpc_url=chain_rpc_url,
                    poll_seconds=0.25,
                    grpc_port=0,
                )
            )
        )
        try:
            partner = gateway.add_partner("e2e-partner", DEFAULT_SCOPES | {Scope.EMERGENCY})
            yield Pipeline(
                anvil,
                w3,
                database_url,
                redis_prefix,
                gateway,
                processor,
                monitor,
                boot,
                partner,
            )
        finally:
            monitor.close()
            processor.close()
            gateway.close()
