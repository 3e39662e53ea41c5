"""`python -m svc_processor`: validates, batches, signs (through svc_signer) and broadcasts payouts.

Settings: svc_processor.settings.
"""

from __future__ import annotations

from withdrawal_shared.startup import defer_bls


def main() -> None:
    defer_bls()  # before anything imports web3: see withdrawal_shared.startup
    from svc_processor.server import serve
    from svc_processor.settings import ProcessorSettings
    from withdrawal_shared.runtime import run_service

    run_service("processor", ProcessorSettings.from_env, serve)


if __name__ == "__main__":
    main()
