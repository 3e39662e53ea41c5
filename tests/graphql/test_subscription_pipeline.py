"""withdrawalStatus on the whole pipeline (anvil, signer, processor, monitor): a real
WebSocket sees a withdrawal from RECEIVED to COMPLETED, and the payout fields set."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.support.databases import mariadb_database
from tests.support.pipeline import Pipeline, running_pipeline
from tests.support.requests import fresh_address
from tests.support.signers import keystore_signer
from withdrawal_shared.states import State

pytestmark = pytest.mark.chain

SUBSCRIBE = """
subscription($name: String!) {
  withdrawalStatus(name: $name) {
    eventType previousState
    withdrawal { state version transactionHash blockNumber fee feeCurrency confirmations }
  }
}"""
GET = """
query($name: String!) {
  withdrawal(name: $name) {
    transactionHash blockNumber fee feeCurrency confirmations
    stateChanges { edges { node { toState } } }
  }
}"""
CREATE = """
mutation($input: CreateWithdrawalInput!, $requestId: String!) {
  createWithdrawal(input: $input, requestId: $requestId) { name state }
}"""


@pytest.fixture(scope="module")
def pipeline(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    with (
        mariadb_database() as url,
        keystore_signer(url, tmp_path_factory.mktemp("keystore")) as target,
        running_pipeline(url, redis_url, module_redis_prefix, target) as running,
    ):
        yield running


async def _events(url: str, key: str, name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=("graphql-transport-ws",)) as ws,
    ):
        await ws.send_json({"type": "connection_init", "payload": {"authorization": key}})
        assert json.loads((await ws.receive(timeout=10)).data)["type"] == "connection_ack"
        subscribe = {"query": SUBSCRIBE, "variables": {"name": name}}
        await ws.send_json({"id": "w", "type": "subscribe", "payload": subscribe})
        while True:
            message = json.loads((await ws.receive(timeout=60)).data)
            if message["type"] == "complete":
                return events
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message
            events.append(message["payload"]["data"]["withdrawalStatus"])


def test_subscription_follows_a_withdrawal_to_completed(pipeline: Pipeline) -> None:
    key = pipeline.partner.headers["Authorization"]
    variables = {
        "input": {"token": "USDC", "recipientAddress": fresh_address(), "amount": "2.5"},
        "requestId": str(uuid.uuid4()),
    }
    created = httpx.post(
        f"{pipeline.gateway.base_url}/graphql",
        json={"query": CREATE, "variables": variables},
        headers={"Authorization": key},
        timeout=20,
    ).json()["data"]["createWithdrawal"]
    url = f"{pipeline.gateway.base_url.replace('http', 'ws')}/graphql"
    events = asyncio.run(_events(url, key, created["name"]))
    states = [e["withdrawal"]["state"] for e in events]
    assert states[-1] == "STATE_COMPLETED", states
    # The snapshot is the state when the subscription began (the processor may already have
    # queued it); every later event moves forward through the lifecycle.
    assert events[0]["eventType"] == "EVENT_TYPE_SNAPSHOT"
    assert all(e["eventType"] != "EVENT_TYPE_SNAPSHOT" for e in events[1:]), events
    order = ["STATE_" + s.value for s in State]  # RECEIVED ... COMPLETED come first, in order
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states), states
    last = events[-1]["withdrawal"]
    assert last["transactionHash"].startswith("0x")
    assert last["fee"] is not None and last["feeCurrency"] is not None

    # The payout fields and the trail, as GetWithdrawal and ListStateChanges answer them.
    got = httpx.post(
        f"{pipeline.gateway.base_url}/graphql",
        json={"query": GET, "variables": {"name": created["name"]}},
        headers={"Authorization": key},
        timeout=20,
    ).json()["data"]["withdrawal"]
    grpc_got = pipeline.get(created["name"])
    assert got["blockNumber"] == grpc_got.block_number > 0
    assert got["transactionHash"] == grpc_got.transaction_hash == last["transactionHash"]
    assert (got["fee"], got["feeCurrency"]) == (grpc_got.fee, grpc_got.fee_currency)
    assert got["confirmations"] == grpc_got.confirmations > 0
    trail = [e["node"]["toState"] for e in got["stateChanges"]["edges"]]
    assert trail[0] == "STATE_RECEIVED" and trail[-1] == "STATE_COMPLETED"
