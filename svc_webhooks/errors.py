"""The sender's own failures. It answers no API (only gRPC health), so nothing here reaches
a client: these stop the service at start-up with a message naming the setting."""

from __future__ import annotations

from withdrawal_shared.settings import SettingsError


class ScheduleError(SettingsError):
    """WEBHOOKS_RETRY_SCHEDULE cannot be parsed."""
