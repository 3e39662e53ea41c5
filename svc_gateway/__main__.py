"""`python -m svc_gateway`: the edge service (gRPC + REST/JSON). Settings: svc_gateway.settings."""

from __future__ import annotations

from svc_gateway.server import serve
from svc_gateway.settings import GatewaySettings
from withdrawal_shared.runtime import run_service


def main() -> None:
    run_service("gateway", GatewaySettings.from_env, serve)


if __name__ == "__main__":
    main()
