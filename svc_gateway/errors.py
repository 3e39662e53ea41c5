"""Rendering errors on gRPC: the shared implementation in `withdrawal_shared.grpc_errors`
(`ApiError` -> status with google.rpc details; anything else -> logged and INTERNAL)."""

from __future__ import annotations

from withdrawal_shared.grpc_errors import abort, to_api_error

__all__ = ["abort", "to_api_error"]
