"""The processor's client of svc_signer (synchronous; called from the pipeline's thread)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from svc_processor.errors import SignerRefused, TransientError
from withdrawal_shared import tracing
from withdrawal_shared.logs import new_trace_id, trace_id_var
from withdrawal_shared.tls import TlsFiles, secure_or_insecure_channel

_REFUSALS = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
}


@dataclass(frozen=True)
class Signed:
    raw: bytes
    tx_hash: str


@dataclass(frozen=True)
class OwnerSigned:
    """An owner's signature of a Safe transaction, as its signer returned it."""

    safe_tx_hash: bytes
    owner: str
    signature: bytes


class SignerClient:
    def __init__(self, target: str, timeout: float, tls: TlsFiles | None = None) -> None:
        self._channel = secure_or_insecure_channel(target, tls)
        self._stub = signer_pb2_grpc.SignerServiceStub(self._channel)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def wallets(self) -> list[str]:
        response = self._stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=self._timeout)
        return [w.address for w in response.wallets]

    def owners(self) -> list[str]:
        """The treasury Safe owners whose keys this signer holds (TransientError when it does
        not answer)."""
        try:
            response = self._stub.ListWallets(
                signer_pb2.ListWalletsRequest(), timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise TransientError(f"signer unavailable: {exc.code()}") from exc
        owner = signer_pb2.Wallet.ROLE_SAFE_OWNER
        return [w.address for w in response.wallets if w.role == owner]

    def sign(self, request: signer_pb2.SignTransactionRequest) -> Signed:
        try:
            response = self._stub.SignTransaction(
                request, timeout=self._timeout, metadata=_metadata()
            )
        except grpc.RpcError as exc:
            raise _failure(exc) from None
        return Signed(response.raw_transaction, response.transaction_hash)

    def sign_safe(self, request: signer_pb2.SignSafeTransactionRequest) -> OwnerSigned:
        """An owner's signature of a Safe transaction (SignerRefused, TransientError)."""
        try:
            response = self._stub.SignSafeTransaction(
                request, timeout=self._timeout, metadata=_metadata()
            )
        except grpc.RpcError as exc:
            raise _failure(exc) from None
        return OwnerSigned(
            bytes(response.safe_transaction_hash), response.owner_address, bytes(response.signature)
        )


def _metadata() -> tuple[tuple[str, str], ...]:
    if tracing.enabled():
        return ()  # the gRPC instrumentation sends the current span's context
    trace_id = trace_id_var.get() or new_trace_id()
    return (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)


def _failure(exc: grpc.RpcError) -> Exception:
    code = exc.code()
    if code in _REFUSALS:
        return SignerRefused(_reason(exc), exc.details() or "")
    return TransientError(f"signer unavailable: {code}")


def _reason(exc: grpc.RpcError) -> str:
    """The signer's ErrorInfo reason for a refusal; its gRPC status code when it named none."""
    status = rpc_status.from_call(exc)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason)
    return str(exc.code().name)


def create_wallet(client: SignerClient, request_id: str) -> str:
    """CreateWallet: the new hot wallet's address (SignerRefused, TransientError)."""
    try:
        response = client._stub.CreateWallet(
            signer_pb2.CreateWalletRequest(request_id=request_id),
            timeout=max(client._timeout, 30.0),  # a scrypt keystore takes a few seconds
            metadata=_metadata(),
        )
    except grpc.RpcError as exc:
        raise _failure(exc) from None
    return str(response.address)


def retire_wallet(client: SignerClient, address: str) -> signer_pb2.Wallet.State.ValueType:
    """RetireWallet: the key's state afterwards (SignerRefused, TransientError)."""
    try:
        response = client._stub.RetireWallet(
            signer_pb2.RetireWalletRequest(address=address),
            timeout=client._timeout,
            metadata=_metadata(),
        )
    except grpc.RpcError as exc:
        raise _failure(exc) from None
    return response.state
