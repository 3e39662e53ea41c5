"""`python -m svc_processor`: validates, batches, signs (through svc_signer) and broadcasts payouts.

Settings: svc_processor.settings.
"""

from __future__ import annotations

from svc_processor.server import serve
from svc_processor.settings import ProcessorSettings
from withdrawal_shared.runtime import run_service


def main() -> None:
    run_service("processor", ProcessorSettings.from_env, serve)


if __name__ == "__main__":
    main()
