"""Approval rules, four-eyes approvals with expiry, and the blocklist of recipients
(`rules`, `facts`, `core`, `blocklist`); see docs/architecture.md#approvals-and-screening."""
