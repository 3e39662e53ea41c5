"""The transport-neutral core of the admin API: what each AdminService method does.

The dispatcher calls each method (`GetOperator` -> `get_operator`) with the authenticated
`OperatorIdentity`, after checking its role. Database work runs on the gateway's thread pool.
Every method that changes something runs in one transaction with its admin audit row
(SUCCEEDED, with the target's values before and after); a refusal is audited in a
transaction of its own (DENIED for PERMISSION_DENIED, FAILED otherwise). Reads are not
audited, except when refused for lack of a role (the dispatcher does that).

Each resource's methods are in a module of its own (`operators`, `change_requests`,
`audit_trail`, `api_keys`, `payout_controls`, `approval_queue`, `batch_approvals`,
`webhook_endpoints`), over `AdminBase` (`base`): shared state and the audited unit of work.
Conversions to messages are in `convert`, request fields in `names`.
"""

from __future__ import annotations

from svc_gateway.admin.api_keys import ApiKeysCore
from svc_gateway.admin.approval_queue import ApprovalQueueCore
from svc_gateway.admin.audit_trail import AuditTrailCore
from svc_gateway.admin.batch_approvals import BatchApprovalsCore
from svc_gateway.admin.change_requests import ChangeRequestsCore
from svc_gateway.admin.operators import OperatorsCore
from svc_gateway.admin.payout_controls import PayoutControlsCore
from svc_gateway.admin.webhook_endpoints import WebhookEndpointsCore


class AdminCore(
    OperatorsCore,
    ChangeRequestsCore,
    AuditTrailCore,
    ApiKeysCore,
    PayoutControlsCore,
    ApprovalQueueCore,
    WebhookEndpointsCore,
    BatchApprovalsCore,
):
    """Every AdminService method, by its snake_case name."""
