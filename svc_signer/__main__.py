"""`python -m svc_signer`: the signing service (gRPC). Settings: svc_signer.settings."""

from __future__ import annotations

import asyncio
import logging
import signal

from svc_signer.server import serve
from svc_signer.settings import SignerSettings
from withdrawal_shared.errors import WithdrawalSystemError
from withdrawal_shared.logs import configure

log = logging.getLogger("svc_signer")


async def _main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(SignerSettings.from_env(), stop)


def main() -> None:
    configure("signer")
    try:
        asyncio.run(_main())
    except WithdrawalSystemError as exc:
        # Settings and key backend errors say what to fix and never hold a secret.
        log.error("the signer cannot start: %s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
