"""What the fuzzers' stack (tests/fuzz/conftest.py) hands to the tests."""

from __future__ import annotations

from dataclasses import dataclass

from tests.fuzz.grpc_targets import Metadata
from tests.support.gateway import OperatorAccount, Partner, RunningGateway

REDIS_PREFIX = "fuzz:"
PUBLIC_SERVICE = "assetwithdrawal.withdrawal.v1.WithdrawalService"
ADMIN_SERVICE = "assetwithdrawal.admin.v1.AdminService"


@dataclass
class FuzzStack:
    gateway: RunningGateway
    partner: Partner
    redis_url: str
    redis_prefix: str
    existing_names: list[str]
    request_ids: list[str]
    operator: OperatorAccount
    """An operator holding every role, so admin calls get past authorization to validation."""

    def credentials(self) -> dict[str, Metadata]:
        """The credential of each service by full name. A service added to the gateway is
        fuzzed without one (every call must be refused) until it gets an entry here."""
        return {PUBLIC_SERVICE: self.partner.metadata, ADMIN_SERVICE: self.operator.metadata}
