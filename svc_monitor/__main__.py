"""`python -m svc_monitor`: follows the chain and settles payouts.

Settings: svc_monitor.settings.
"""

from __future__ import annotations

from svc_monitor.server import serve
from svc_monitor.settings import MonitorSettings
from withdrawal_shared.runtime import run_service


def main() -> None:
    run_service("monitor", MonitorSettings.from_env, serve)


if __name__ == "__main__":
    main()
