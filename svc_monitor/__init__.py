"""svc_monitor: follows the chain, settles payout transactions, publishes status events."""
