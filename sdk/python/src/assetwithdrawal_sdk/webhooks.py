"""Verifying the webhook deliveries the gateway sends, signed per Standard Webhooks.

    verifier = WebhookVerifier("whsec_...")          # the secret from create/rotate
    event = verifier.verify(raw_body, request.headers)  # raises WebhookVerificationError

The signature is computed by the `standardwebhooks` package (HMAC-SHA256 over
`{webhook-id}.{webhook-timestamp}.{body}`) and compared in constant time against every
`v1,` signature of the `webhook-signature` header (two during a secret rotation); the
timestamp must be within `tolerance` of now, which stops replays of old deliveries. Verify
the raw body bytes, before any JSON parsing, and de-duplicate by `event.id`."""

from __future__ import annotations

import datetime as dt
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook

from assetwithdrawal_sdk.errors import WebhookVerificationError

DEFAULT_TOLERANCE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class WebhookEvent:
    """One verified delivery. `data` is the event's payload (proto3 JSON names:
    `withdrawal`, `state`, `previousState`, `sequence`, `transactionHash`, ...)."""

    id: str
    type: str
    timestamp: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def withdrawal(self) -> str:
        """`withdrawals/{id}` the event is about (empty for endpoint events)."""
        return str(self.data.get("withdrawal", ""))

    @property
    def state(self) -> str:
        """The withdrawal's state after the event, e.g. `COMPLETED`."""
        return str(self.data.get("state", ""))

    @property
    def sequence(self) -> int:
        """Orders one withdrawal's events (its version)."""
        return int(self.data.get("sequence", 0))


class WebhookVerifier:
    """Checks deliveries against one or more secrets (several while you roll a rotation out
    on your side)."""

    def __init__(
        self, secret: str | Sequence[str], *, tolerance: dt.timedelta = DEFAULT_TOLERANCE
    ) -> None:
        secrets = [secret] if isinstance(secret, str) else list(secret)
        if not secrets or not all(secrets):
            raise ValueError("a webhook secret (whsec_...) is required")
        try:
            self._signers = [Webhook(s) for s in secrets]
        except Exception as exc:
            raise ValueError(f"not a webhook secret: {type(exc).__name__}") from None
        self.tolerance = tolerance

    def verify(
        self,
        body: bytes | str,
        headers: Mapping[str, str],
        *,
        now: dt.datetime | None = None,
    ) -> WebhookEvent:
        """The event, once its signature and timestamp verify; else WebhookVerificationError.
        `headers` may be any mapping (names compared case-insensitively)."""
        lower = {k.lower(): v for k, v in headers.items()}
        msg_id = lower.get("webhook-id", "")
        stamp = lower.get("webhook-timestamp", "")
        signatures = lower.get("webhook-signature", "")
        if not (msg_id and stamp and signatures):
            raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
        try:
            sent = dt.datetime.fromtimestamp(int(stamp), tz=dt.UTC)
        except (ValueError, OverflowError):
            raise WebhookVerificationError("webhook-timestamp is not a Unix time") from None
        current = now or dt.datetime.now(dt.UTC)
        if abs(current - sent) > self.tolerance:
            raise WebhookVerificationError(
                f"webhook-timestamp is {abs(current - sent).total_seconds():.0f} s from now, "
                f"beyond the tolerance of {self.tolerance.total_seconds():.0f} s"
            )
        payload = body.encode() if isinstance(body, str) else bytes(body)
        given = [s.encode() for s in signatures.split(" ") if s]
        matched = False
        for signer in self._signers:
            expected = signer.sign(msg_id, sent, payload).encode()
            for candidate in given:
                # Every comparison runs (no early exit) and each is constant-time.
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise WebhookVerificationError("no matching signature")
        try:
            parsed = json.loads(payload)
        except ValueError:
            raise WebhookVerificationError("the body is not JSON") from None
        if not isinstance(parsed, dict):
            raise WebhookVerificationError("the body is not a JSON object")
        return WebhookEvent(
            id=str(parsed.get("id", msg_id)),
            type=str(parsed.get("type", "")),
            timestamp=str(parsed.get("timestamp", "")),
            data=dict(parsed.get("data") or {}),
        )
