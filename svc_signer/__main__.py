"""`python -m svc_signer`: the signing service (gRPC); keys never leave it.

Settings: svc_signer.settings.
"""

from __future__ import annotations

from withdrawal_shared.startup import defer_bls


def main() -> None:
    defer_bls()  # before anything imports web3: see withdrawal_shared.startup
    from svc_signer.server import serve
    from svc_signer.settings import SignerSettings
    from withdrawal_shared.runtime import run_service

    run_service("signer", SignerSettings.from_env, serve)


if __name__ == "__main__":
    main()
