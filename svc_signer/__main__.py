"""`python -m svc_signer`: the signing service (gRPC); keys never leave it.

Settings: svc_signer.settings.
"""

from __future__ import annotations

from svc_signer.server import serve
from svc_signer.settings import SignerSettings
from withdrawal_shared.runtime import run_service


def main() -> None:
    run_service("signer", SignerSettings.from_env, serve)


if __name__ == "__main__":
    main()
