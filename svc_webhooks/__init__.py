"""The webhook sender: reads the outbox (the withdrawal audit trail) and delivers signed
events to the partners' endpoints."""
