"""One real stack per module for the SDK's tests: the whole pipeline (anvil, MariaDB, Redis,
keystore signer, gateway, processor, monitor), as tests/e2e runs it, the webhook sender
(svc_webhooks, in-process) allowed to deliver to loopback, and partner keys made for the SDK
(with the batch and webhook scopes, one with a rate limit of 1/s, one read-only)."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from svc_webhooks.server import WebhooksServer
from svc_webhooks.settings import WebhooksSettings
from tests.support.databases import mariadb_database
from tests.support.gateway import Partner
from tests.support.pipeline import Pipeline, running_pipeline
from tests.support.services import ThreadedServer
from tests.support.signers import keystore_signer
from withdrawal_shared.db.api_keys import create_api_key, ensure_partner
from withdrawal_shared.scopes import Scope


@dataclass
class Stack:
    pipeline: Pipeline
    partner: Partner
    """Reads, creates, batches and webhooks."""
    limited_key: str
    """The same partner's key limited to 1 request per second, burst 1."""
    read_only_key: str
    """A key of the partner with `withdrawals:read` only."""

    @property
    def grpc_target(self) -> str:
        return self.pipeline.gateway.grpc_target

    @property
    def base_url(self) -> str:
        return self.pipeline.gateway.base_url


@pytest.fixture(scope="module")
def webhooks_key() -> Iterator[None]:
    """The endpoint secrets' encryption key, shared by the gateway and the sender."""
    old = os.environ.get("WEBHOOKS_ENCRYPTION_KEY")
    os.environ["WEBHOOKS_ENCRYPTION_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    yield
    if old is None:
        os.environ.pop("WEBHOOKS_ENCRYPTION_KEY", None)
    else:
        os.environ["WEBHOOKS_ENCRYPTION_KEY"] = old


@pytest.fixture(scope="module")
def stack(
    redis_url: str,
    module_redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
    webhooks_key: None,
) -> Iterator[Stack]:
    with (
        mariadb_database() as database,
        keystore_signer(database, tmp_path_factory.mktemp("keystore")) as target,
        running_pipeline(
            database, redis_url, module_redis_prefix, target, webhooks_allow_http_loopback=True
        ) as pipeline,
    ):
        sender = ThreadedServer(
            WebhooksServer(
                WebhooksSettings(
                    database_url=database,
                    redis_url=redis_url,
                    redis_prefix=module_redis_prefix,
                    grpc_port=0,
                    poll_seconds=0.1,
                    gap_grace_seconds=5,
                    retry_schedule=(0.3, 0.5, 1.0),
                    timeout_seconds=2,
                    shutdown_grace_seconds=1,
                    allow_http_loopback=True,
                )
            )
        )
        partner_id = f"sdk-partner-{secrets.token_hex(3)}"
        with pipeline.gateway.server.store.sessions.begin() as session:
            ensure_partner(session, partner_id)
            session.flush()
            full = create_api_key(session, partner_id, set(Scope) - {Scope.EMERGENCY}).token
            limited = create_api_key(
                session,
                partner_id,
                {Scope.WITHDRAWALS_READ, Scope.WITHDRAWALS_CREATE},
                rate_limit_per_second=1,
                rate_limit_burst=1,
            ).token
            read_only = create_api_key(session, partner_id, {Scope.WITHDRAWALS_READ}).token
        try:
            yield Stack(pipeline, Partner(partner_id, full), limited, read_only)
        finally:
            sender.close()
