"""A gateway stops within its grace even while a REST watch stream is open.

aiohttp waits for in-flight handlers at shutdown (60 s unless told otherwise); a partner's
watch of a withdrawal that is still being paid is such a handler, so the REST server is given
the same grace as gRPC (GATEWAY_SHUTDOWN_GRACE_SECONDS).
"""

from __future__ import annotations

import threading
import time

import httpx

from svc_gateway.settings import GatewaySettings
from tests.support.gateway import RunningGateway
from tests.support.requests import create_request

GRACE = 1.0


def test_stop_is_not_held_by_an_open_rest_watch(
    db_url: str, redis_url: str, module_redis_prefix: str
) -> None:
    gateway = RunningGateway(
        GatewaySettings(
            database_url=db_url,
            redis_url=redis_url,
            redis_prefix=module_redis_prefix,
            grpc_port=0,
            http_port=0,
            shutdown_grace_seconds=GRACE,
        )
    )
    closed = False
    try:
        partner = gateway.add_partner("stop-watch")
        created = gateway.stub.CreateWithdrawal(create_request(), metadata=partner.metadata)
        first_line = threading.Event()

        def watch() -> None:
            url = f"{gateway.base_url}/v1/{created.name}:watch"
            headers = {"Authorization": f"Bearer {partner.api_key}"}
            try:
                with httpx.stream("GET", url, headers=headers, timeout=30) as response:
                    for _ in response.iter_lines():
                        first_line.set()
            except httpx.HTTPError:
                pass  # the server went away: what this test causes

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert first_line.wait(10), "the watch stream did not start"

        started = time.monotonic()
        gateway.close()
        closed = True
        took = time.monotonic() - started
        assert took < GRACE + 5, f"stopping took {took:.1f} s with a watch open"
        watcher.join(5)
        assert not watcher.is_alive(), "the watch stream was not ended by the stop"
    finally:
        if not closed:
            gateway.close()
