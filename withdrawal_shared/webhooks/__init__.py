"""What the gateway (which registers endpoints) and the webhook sender (`svc_webhooks`) share:
the event types and payloads (`events`), the URL and address policy (`urls`), and the
encryption of the endpoints' signing secrets at rest (`secrets`)."""
