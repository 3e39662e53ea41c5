"""What the stack asks its services: gRPC health (grpc.health.v1), the gateway's REST health
(`GET /healthz`) and the signer's wallets."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from withdrawal_shared.tls import TlsFiles, secure_or_insecure_channel


class NotServingError(RuntimeError):
    """A service did not report SERVING in time, or exited while starting."""


def health_status(target: str, service: str = "", timeout: float = 1.0) -> str:
    """The health status name (`SERVING`, `NOT_SERVING`, ...) or `UNAVAILABLE`."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code_of = getattr(exc, "code", None)
            code = code_of() if callable(code_of) else None
            return code.name if isinstance(code, grpc.StatusCode) else "UNAVAILABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def wait_serving(
    target: str,
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    what: str = "service",
    interval: float = 0.2,
) -> None:
    """Block until `target` reports SERVING; fail early when `alive()` turns False."""
    deadline = time.monotonic() + timeout
    status = "UNAVAILABLE"
    while True:
        if not alive():
            raise NotServingError(f"{what} exited during start-up")
        status = health_status(target)
        if status == "SERVING":
            return
        if time.monotonic() >= deadline:
            raise NotServingError(
                f"{what} at {target} did not report SERVING within {timeout:g}s "
                f"(last status {status})"
            )
        time.sleep(interval)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether a GET of `url` (a loopback URL the stack built) answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http on 127.0.0.1
            return int(response.status) == 200
    except (OSError, ValueError):  # refused, reset, timed out, or an HTTP error status
        return False


def wait_http_ok(
    url: str,
    *,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    what: str = "service",
    interval: float = 0.2,
) -> None:
    """Block until a GET of `url` answers 200; fail early when `alive()` turns False."""
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise NotServingError(f"{what} exited during start-up")
        if http_ok(url):
            return
        if time.monotonic() >= deadline:
            raise NotServingError(f"{what} did not answer GET {url} within {timeout:g}s")
        time.sleep(interval)


def list_wallets(
    target: str, timeout: float = 10.0, tls: TlsFiles | None = None
) -> list[tuple[str, str]]:
    """(address, backend) of every hot wallet the signer holds keys for (over mutual TLS with
    `tls`, the bootstrap's certificate, when the signer requires it)."""
    with secure_or_insecure_channel(target, tls) as channel:
        stub = signer_pb2_grpc.SignerServiceStub(channel)
        response = stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=timeout)
    return [(wallet.address, wallet.backend) for wallet in response.wallets]
