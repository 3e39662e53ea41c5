"""The gRPC adapter: binds the caller's trace id, hands each request to the core, renders
errors (`withdrawal_shared.grpc_errors`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from svc_signer.core import SignerCore
from svc_signer.reasons import Reason, refusal
from withdrawal_shared import tracing
from withdrawal_shared.errors import Code
from withdrawal_shared.grpc_errors import abort
from withdrawal_shared.logs import trace_id_from_traceparent, trace_id_var
from withdrawal_shared.tls import peer_identity

if TYPE_CHECKING:
    import grpc

    Context: TypeAlias = grpc.aio.ServicerContext[object, object]


def bind_trace_id(context: Context) -> str:
    """Use the caller's W3C `traceparent` trace id (or a new one) for this RPC's logs."""
    traceparent = next(
        (
            value
            for key, value in (context.invocation_metadata() or ())
            if key.lower() == "traceparent" and isinstance(value, str)
        ),
        None,
    )
    ids = tracing.current_ids()  # the gRPC server span's, when tracing is on
    trace_id = ids[0] if ids else trace_id_from_traceparent(traceparent)
    trace_id_var.set(trace_id)  # each grpc.aio RPC runs in its own task and context
    return trace_id


class Callers:
    """Which client certificate names may call which method (`SignerSettings.sign_clients`,
    `list_clients`); None: no TLS, so no identity to check (the caller is the network's
    business, e.g. Istio's AuthorizationPolicy)."""

    def __init__(self, allowed: dict[str, tuple[str, ...]] | None) -> None:
        self._allowed = allowed

    def check(self, method: str, context: Context) -> None:
        if self._allowed is None:
            return
        caller = peer_identity(context)
        allowed = self._allowed.get(method, ())
        if caller not in allowed:
            raise refusal(
                Code.PERMISSION_DENIED,
                Reason.CALLER_NOT_ALLOWED,
                f"{method} is not allowed for the certificate {caller or '(none)'}: only "
                f"{', '.join(allowed) or 'nobody'} may call it (SIGNER_SIGN_CLIENTS, "
                "SIGNER_LIST_WALLETS_CLIENTS)",
                caller=caller or "",
            )


class SignerServicer(signer_pb2_grpc.SignerServiceServicer):
    def __init__(self, core: SignerCore, callers: Callers | None = None) -> None:
        self._core = core
        self._callers = callers or Callers(None)

    async def SignTransaction(
        self, request: signer_pb2.SignTransactionRequest, context: Context
    ) -> signer_pb2.SignTransactionResponse:
        bind_trace_id(context)
        try:
            self._callers.check("SignTransaction", context)
            raw, tx_hash = await self._core.sign(request)
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises
        return signer_pb2.SignTransactionResponse(raw_transaction=raw, transaction_hash=tx_hash)

    async def SignSafeTransaction(
        self, request: signer_pb2.SignSafeTransactionRequest, context: Context
    ) -> signer_pb2.SignSafeTransactionResponse:
        bind_trace_id(context)
        try:
            self._callers.check("SignTransaction", context)
            return await self._core.sign_safe(request)
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises

    async def ListWallets(
        self, request: signer_pb2.ListWalletsRequest, context: Context
    ) -> signer_pb2.ListWalletsResponse:
        bind_trace_id(context)
        try:
            self._callers.check("ListWallets", context)
            return self._core.list_wallets()
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises

    async def CreateWallet(
        self, request: signer_pb2.CreateWalletRequest, context: Context
    ) -> signer_pb2.Wallet:
        bind_trace_id(context)
        try:
            self._callers.check("SignTransaction", context)
            return await self._core.create_wallet(request)
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises

    async def RetireWallet(
        self, request: signer_pb2.RetireWalletRequest, context: Context
    ) -> signer_pb2.Wallet:
        bind_trace_id(context)
        try:
            self._callers.check("SignTransaction", context)
            return await self._core.retire_wallet(request)
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises
