"""`python -m svc_webhooks`: delivers signed webhooks from the outbox.

Settings: svc_webhooks.settings.
"""

from __future__ import annotations


def main() -> None:
    from svc_webhooks.server import serve
    from svc_webhooks.settings import WebhooksSettings
    from withdrawal_shared.runtime import run_service

    run_service("webhooks", WebhooksSettings.from_env, serve)


if __name__ == "__main__":
    main()
