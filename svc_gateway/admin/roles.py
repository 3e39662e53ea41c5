"""The role each admin RPC requires: the one table the dispatcher checks.

Every AdminService method must have a row (the dispatcher refuses to start otherwise, and
tests/gateway/test_admin_api.py derives its checks from the descriptors). `grants` in
`withdrawal_shared.db.operators` says which held roles satisfy a required one: the role
itself, or any role for `viewer`'s reads.
"""

from __future__ import annotations

from withdrawal_shared.db.operators import Role

METHOD_ROLES: dict[str, Role] = {
    "GetOperator": Role.VIEWER,
    "ListOperators": Role.VIEWER,
    "CreateChange": Role.ADMIN,
    "GetChange": Role.VIEWER,
    "ListChanges": Role.VIEWER,
    "ConfirmChange": Role.ADMIN,
    "RejectChange": Role.ADMIN,
    "CreateOperatorCredential": Role.ADMIN,
    "RevokeOperatorCredential": Role.ADMIN,
    "ListAdminAuditEntries": Role.VIEWER,
    "CreateApiKey": Role.OPERATOR,
    "ListApiKeys": Role.VIEWER,
    "RevokeApiKey": Role.OPERATOR,
    "ListPayoutPauses": Role.VIEWER,
    "PausePayouts": Role.OPERATOR,
    "ResumePayouts": Role.OPERATOR,
    "ListTokens": Role.VIEWER,
    "UpdateToken": Role.ADMIN,
    # ---- approvals, blocklist, tiers
    "ListPendingApprovals": Role.VIEWER,
    "ApproveWithdrawal": Role.APPROVER,
    "RejectWithdrawal": Role.APPROVER,
    "ApproveBatch": Role.APPROVER,
    "RejectBatch": Role.APPROVER,
    "ListBlockedAddresses": Role.VIEWER,
    "BlockAddress": Role.OPERATOR,
    "UnblockAddress": Role.OPERATOR,
    "ListTiers": Role.VIEWER,
    # ---- approval rules
    "ListApprovalRules": Role.VIEWER,
    # ---- partners' webhook endpoints
    "CreateWebhookEndpoint": Role.OPERATOR,
    "GetWebhookEndpoint": Role.VIEWER,
    "ListWebhookEndpoints": Role.VIEWER,
    "UpdateWebhookEndpoint": Role.OPERATOR,
    "DisableWebhookEndpoint": Role.OPERATOR,
    "EnableWebhookEndpoint": Role.OPERATOR,
    "DeleteWebhookEndpoint": Role.OPERATOR,
    "RotateWebhookSecret": Role.OPERATOR,
    "ListWebhookDeliveryAttempts": Role.VIEWER,
    "ReplayWebhookEvents": Role.OPERATOR,
}
"""AdminService method name -> the role it requires."""
