"""`python -m svc_monitor`: follows the chain and settles payouts.

Settings: svc_monitor.settings.
"""

from __future__ import annotations

from withdrawal_shared.startup import defer_bls


def main() -> None:
    defer_bls()  # before anything imports web3: see withdrawal_shared.startup
    from svc_monitor.server import serve
    from svc_monitor.settings import MonitorSettings
    from withdrawal_shared.runtime import run_service

    run_service("monitor", MonitorSettings.from_env, serve)


if __name__ == "__main__":
    main()
