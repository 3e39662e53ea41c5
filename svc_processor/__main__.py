"""`python -m svc_processor`: validates, signs (through svc_signer) and broadcasts payouts.
Settings: svc_processor.settings."""

from __future__ import annotations

import asyncio
import signal

from svc_processor.server import serve
from svc_processor.settings import ProcessorSettings
from withdrawal_shared.logs import configure


async def _main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(ProcessorSettings.from_env(), stop)


def main() -> None:
    configure("processor")
    asyncio.run(_main())


if __name__ == "__main__":
    main()
