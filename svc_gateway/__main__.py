"""`python -m svc_gateway`: the edge service (gRPC + REST/JSON). Settings: svc_gateway.settings."""

from __future__ import annotations

import asyncio
import signal

from svc_gateway.server import serve
from svc_gateway.settings import GatewaySettings
from withdrawal_shared.logs import configure


async def _main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(GatewaySettings.from_env(), stop)


def main() -> None:
    configure("gateway")
    asyncio.run(_main())


if __name__ == "__main__":
    main()
