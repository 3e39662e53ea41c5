"""GATEWAY_WORKERS=2 as a real process: the first worker starts the second on the same ports,
and both serve gRPC and REST (each one sets SO_REUSEPORT on both ports; without it the second
cannot bind the HTTP port, and connections the kernel gives it are never answered)."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

import grpc

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2, withdrawal_pb2_grpc
from bench.api_load import GatewayProcess, issue_key
from tests.support.requests import create_request, fresh_address
from withdrawal_shared.db.migrate import upgrade


def _workers(parent: int) -> list[int]:
    with open(f"/proc/{parent}/task/{parent}/children") as f:
        return [parent, *(int(pid) for pid in f.read().split())]


def _serving(gateway: GatewayProcess) -> int:
    """How many workers logged that they serve (they share the log file)."""
    return gateway.log_path.read_text().count('"msg":"gateway serving"')


def test_two_workers_both_serve_grpc_and_rest(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    database_url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(database_url)
    api_key = issue_key(database_url, "workers")
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "GATEWAY_WORKERS": "2",
    }
    gateway = GatewayProcess(env, tmp_path / "gateway.log", api_key, redis_url)
    try:
        gateway.wait_serving()
        deadline = time.monotonic() + 60
        while _serving(gateway) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # the second worker's start-up (or its failure to bind)
        assert _serving(gateway) == 2, gateway.log_tail()
        pids = _workers(gateway.pid)
        assert len(pids) == 2
        metadata = (("authorization", f"Bearer {api_key}"),)
        # Many connections (a subchannel pool each), so the kernel hands some to each worker.
        for _ in range(16):
            with grpc.insecure_channel(
                gateway.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = withdrawal_pb2_grpc.WithdrawalServiceStub(channel)
                created = stub.CreateWithdrawal(
                    create_request(amount="1", recipient=fresh_address()),
                    metadata=metadata,
                    timeout=10,
                )
                assert created.state == withdrawal_pb2.STATE_RECEIVED
        for _ in range(16):  # a new connection each (no keep-alive across requests)
            request = urllib.request.Request(
                f"{gateway.rest_url}/v1/withdrawals",
                data=json.dumps(
                    {"token": "USDC", "recipientAddress": fresh_address(), "amount": "1"}
                ).encode(),
                headers={
                    "Authorization": f"Bearer {api_key}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": str(uuid.uuid4()),
                    "Connection": "close",
                },
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert json.loads(response.read())["state"] == "STATE_RECEIVED"
        assert _workers(gateway.pid) == pids  # nobody died on the way
    finally:
        assert gateway.stop() == 0
