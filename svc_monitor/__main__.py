"""`python -m svc_monitor`: follows the chain, settles payouts. Settings: svc_monitor.settings."""

from __future__ import annotations

import asyncio
import signal

from svc_monitor.server import serve
from svc_monitor.settings import MonitorSettings
from withdrawal_shared.logs import configure


async def _main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(MonitorSettings.from_env(), stop)


def main() -> None:
    configure("monitor")
    asyncio.run(_main())


if __name__ == "__main__":
    main()
