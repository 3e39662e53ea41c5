"""Submitting withdrawals the way a careful client does: retry with the same request_id.

Each withdrawal gets a fresh recipient of its own (so the chain alone can tell whether it was
paid once) and a random amount. A call that fails with a transient status (the gateway was
killed, restarting, or slow) is retried with the *same* `request_id` until the gateway answers:
idempotency makes that safe, and a client that gives up would be the one losing the request. A
withdrawal counts as submitted only once the gateway answered with it.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import grpc

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2, withdrawal_pb2_grpc
from devstack.exactly_once import Submitted

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)
USDC_DECIMALS = 6


@dataclass
class SubmitStats:
    accepted: int = 0
    retries: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Non-retryable answers by status (should stay empty)."""


class Submitter:
    """Submits `count` withdrawals at `rate` per second from a pool of threads."""

    def __init__(
        self,
        targets: str | list[str],
        api_key: str,
        count: int,
        rate: float,
        *,
        seed: int = 0,
        threads: int = 8,
        give_up_after_seconds: float = 300.0,
    ) -> None:
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.metadata = (("authorization", f"Bearer {api_key}"),)
        self.count = count
        self.rate = rate
        self.random = random.Random(seed)
        self.threads = threads
        self.give_up_after = give_up_after_seconds
        self.submitted: list[Submitted] = []
        self.stats = SubmitStats()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-submitter", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        # Several gateways: one channel balancing round robin over them, as a client behind a
        # load balancer would; a gateway that is down is skipped until it answers again.
        channel = (
            grpc.insecure_channel(self.targets[0])
            if len(self.targets) == 1
            else grpc.insecure_channel(
                "ipv4:" + ",".join(self.targets), options=[("grpc.lb_policy_name", "round_robin")]
            )
        )
        stub = withdrawal_pb2_grpc.WithdrawalServiceStub(channel)
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="chaos-submit") as pool:
                for index in range(self.count):
                    delay = started + index / self.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    pool.submit(self._submit_one, stub, self._request())
        finally:
            channel.close()
            self.done.set()

    def _request(self) -> withdrawal_pb2.CreateWithdrawalRequest:
        base_units = self.random.randint(1_000_000, 100_000_000)
        roll = self.random.random()
        priority = (
            withdrawal_pb2.PRIORITY_EMERGENCY
            if roll < 0.02
            else withdrawal_pb2.PRIORITY_PRIORITY
            if roll < 0.12
            else withdrawal_pb2.PRIORITY_STANDARD
        )
        return withdrawal_pb2.CreateWithdrawalRequest(
            request_id=str(uuid.UUID(int=self.random.getrandbits(128))),
            withdrawal=withdrawal_pb2.Withdrawal(
                token="USDC",
                recipient_address="0x" + secrets.token_hex(20),
                amount=str(Decimal(base_units).scaleb(-USDC_DECIMALS)),
                priority=priority,
            ),
        )

    def _submit_one(
        self,
        stub: withdrawal_pb2_grpc.WithdrawalServiceStub,
        request: withdrawal_pb2.CreateWithdrawalRequest,
    ) -> None:
        deadline = time.monotonic() + self.give_up_after
        pause = 0.1
        while True:
            try:
                answer = stub.CreateWithdrawal(request, metadata=self.metadata, timeout=5.0)
            except grpc.RpcError as exc:
                code = exc.code()
                if code in RETRYABLE and time.monotonic() < deadline:
                    with self._lock:
                        self.stats.retries += 1
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                with self._lock:
                    name = code.name if code is not None else "?"
                    self.stats.refused[name] = self.stats.refused.get(name, 0) + 1
                return
            amount = int(Decimal(request.withdrawal.amount).scaleb(USDC_DECIMALS))
            with self._lock:
                self.stats.accepted += 1
                self.submitted.append(
                    Submitted(
                        answer.name.rsplit("/", 1)[-1],
                        request.withdrawal.recipient_address.lower(),
                        amount,
                    )
                )
            return
