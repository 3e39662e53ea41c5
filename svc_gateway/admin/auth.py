"""Operator authentication for the admin API: `authorization: Bearer awo_…`.

Only operator credentials authenticate here; a partner API key (`awk_…`) is UNAUTHENTICATED
with a message naming the credential the admin API takes. Every call looks the credential up
(no cache), so a revoked credential or a disabled operator stops working at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import Executor

from withdrawal_shared.db.api_keys import key_prefix
from withdrawal_shared.db.operators import OperatorIdentity, credential_prefix
from withdrawal_shared.errors import unauthenticated


class OperatorAuthenticator:
    def __init__(
        self, lookup: Callable[[str], OperatorIdentity | None], executor: Executor
    ) -> None:
        self._lookup = lookup
        self._executor = executor

    async def authenticate(self, metadata: Mapping[str, str]) -> OperatorIdentity:
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise unauthenticated(
                "Missing operator credential: send the header "
                "'Authorization: Bearer <operator credential>' (awo_...)."
            )
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated(
                "Malformed Authorization header: use 'Bearer <operator credential>'."
            )
        if key_prefix(token) is not None:
            raise unauthenticated(
                "This is a partner API key (awk_...); the admin API takes an operator "
                "credential (awo_...). Ask an admin for one."
            )
        if credential_prefix(token) is None:
            raise unauthenticated(
                "The operator credential is not valid (awo_<8 hex>_<secret>). Check it."
            )
        loop = asyncio.get_running_loop()
        identity = await loop.run_in_executor(self._executor, self._lookup, token)
        if identity is None:
            raise unauthenticated(
                "The operator credential is unknown or revoked, or its operator is disabled. "
                "Ask an admin for a new one."
            )
        return identity
