"""One connected trace per withdrawal, from the gateway call to COMPLETED, across the real
services: a `HarnessStack` (MariaDB with each service's own user, its own Redis, anvil, the
services as processes) exporting over OTLP/HTTP to a receiver this module runs on loopback,
which decodes each `ExportTraceServiceRequest` (opentelemetry-proto) and keeps every span
(`devstack.otlp_receiver`).

Two withdrawals are created together, one over gRPC and one over REST, so that the
PayoutVault pays both in one transaction. For each: its stored `trace_context` is the
gateway's server span; a span for every state change of its audit trail, recorded by the
service that made it, is a child of that stored context; every span of its trace reaches the
gateway's server span through its parents; the queue task's consumer span continues the
trace. The payout transaction's spans (the processor's signing and broadcast, the monitor's
settlement) link to both withdrawals' contexts, and the signer's server span sits under the
processor's payout span in the first withdrawal's trace. The gateway's log line for each
create carries that trace's ids. The partner has a webhook endpoint (a receiver in this
module answering 204): every event of each withdrawal is delivered by the webhook sender
in a CLIENT span that is a child of the withdrawal's stored context, with the event id,
endpoint id, attempt number and status code.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from sqlalchemy import select

from assetwithdrawal.webhooks.v1 import webhooks_pb2, webhooks_pb2_grpc
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2, withdrawal_pb2_grpc
from devstack.bootstrap import DEV_PARTNER
from devstack.harness import HarnessConfig, HarnessStack
from devstack.otlp_receiver import Collected, OtlpServer, Receiver
from tests.support.requests import create_request, fresh_address
from withdrawal_shared.db.api_keys import create_api_key
from withdrawal_shared.db.models import Withdrawal, WithdrawalAudit
from withdrawal_shared.scopes import Scope

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
CONSUMER = trace_pb2.Span.SPAN_KIND_CONSUMER
CREATE_RPC = "/assetwithdrawal.withdrawal.v1.WithdrawalService/CreateWithdrawal"
SIGN_RPC = "/assetwithdrawal.signer.v1.SignerService/SignTransaction"


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    received = Receiver()
    with OtlpServer(received) as server:
        yield received, server.url


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, receiver: tuple[Receiver, str]
) -> Iterator[HarnessStack]:
    config = HarnessConfig(
        var_dir=tmp_path_factory.mktemp("trace-stack"),
        block_time=1.0,
        confirmations=2,
        hot_wallets=1,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver[1],
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            # Both withdrawals of the test close one batch: one payout transaction.
            "PROCESSOR_BATCH_MAX_WAIT_SECONDS": "2",
        },
    )
    with HarnessStack(config) as running:
        yield running


class _Hook(http.server.BaseHTTPRequestHandler):
    """A webhook receiver that takes every POST (the signatures are tests/webhooks')."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def endpoint(stack: HarnessStack) -> Iterator[str]:
    """The stack's partner's webhook endpoint on a receiver on loopback; its id."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with stack.sessions().begin() as session:
        key = create_api_key(session, DEV_PARTNER, {Scope.WEBHOOKS_MANAGE}).token
    with grpc.insecure_channel(stack.grpc_target) as channel:
        created = webhooks_pb2_grpc.WebhookServiceStub(channel).CreateWebhookEndpoint(
            webhooks_pb2.CreateWebhookEndpointRequest(
                webhook_endpoint=webhooks_pb2.WebhookEndpoint(
                    url=f"http://127.0.0.1:{server.server_address[1]}/hook"
                )
            ),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=10,
        )
    yield created.name.rsplit("/", 1)[1]
    server.shutdown()


@dataclass(frozen=True)
class Paid:
    id: str
    trace_id: str
    span_id: str
    payout_tx_id: str
    changes: list[tuple[int, str, str]]  # (version, from, to) of its audit trail


def _create_both(stack: HarnessStack) -> list[str]:
    """One withdrawal over gRPC, one over REST, back to back; their ids."""
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = withdrawal_pb2_grpc.WithdrawalServiceStub(channel)
        created = stub.CreateWithdrawal(
            create_request(amount="1.25"),
            metadata=(("authorization", f"Bearer {stack.api_key}"),),
            timeout=10,
        )
    response = httpx.post(
        f"{stack.rest_base_url}/v1/withdrawals",
        json={"token": "USDC", "recipientAddress": fresh_address(), "amount": "2.5"},
        headers={"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": str(uuid.uuid4())},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return [created.name.rsplit("/", 1)[1], response.json()["name"].rsplit("/", 1)[1]]


def _wait_completed(stack: HarnessStack, ids: list[str], timeout: float = 60) -> list[Paid]:
    deadline = time.monotonic() + timeout
    sessions = stack.sessions()
    while time.monotonic() < deadline:
        with sessions() as session:
            rows = {
                row.id: row
                for row in session.scalars(select(Withdrawal).where(Withdrawal.id.in_(ids)))
            }
            if all(rows[i].state == "COMPLETED" for i in ids):
                paid = []
                for i in ids:
                    audits = session.scalars(
                        select(WithdrawalAudit)
                        .where(WithdrawalAudit.withdrawal_id == i)
                        .order_by(WithdrawalAudit.version)
                    ).all()
                    context = rows[i].trace_context or ""
                    parts = context.split("-")
                    assert len(parts) == 4, f"{i} has no stored trace context: {context!r}"
                    paid.append(
                        Paid(
                            i,
                            parts[1],
                            parts[2],
                            rows[i].payout_tx_id or "",
                            [(a.version, a.from_state, a.to_state) for a in audits],
                        )
                    )
                return paid
        time.sleep(0.25)
    pytest.fail(
        f"{ids} not COMPLETED within {timeout} s:\n"
        + "\n".join(stack.log_tail(name, 15) for name in ("processor", "monitor"))
    )


def _wait_spans(received: Receiver, paid: list[Paid], timeout: float = 15) -> list[Collected]:
    """The spans, once every state change of every withdrawal and every event's webhook
    delivery have arrived."""
    deadline = time.monotonic() + timeout
    wanted = {(p.id, version) for p in paid for version, _, _ in p.changes}
    events = {f"evt_{p.id}_{version}" for p in paid for version, _, _ in p.changes}
    while True:
        spans = received.snapshot()
        seen = {
            (s.attribute("withdrawal.id"), s.attribute("withdrawal.version"))
            for s in spans
            if s.attribute("withdrawal.to_state")
        }
        delivered = {
            s.attribute("webhook.event_id")
            for s in spans
            if s.service == "webhooks" and s.attribute("http.response.status_code") == 204
        }
        if (wanted <= seen and events <= delivered) or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def test_one_trace_from_create_to_completed(
    stack: HarnessStack, receiver: tuple[Receiver, str], endpoint: str
) -> None:
    received = receiver[0]
    ids = _create_both(stack)
    paid = _wait_completed(stack, ids)
    assert paid[0].payout_tx_id and paid[0].payout_tx_id == paid[1].payout_tx_id, (
        "both withdrawals should be paid by one payout transaction"
    )
    spans = _wait_spans(received, paid)
    by_id = {s.span_id: s for s in spans}

    for withdrawal, server_name in zip(paid, (CREATE_RPC, "POST /v1/withdrawals"), strict=True):
        trace = [s for s in spans if s.trace_id == withdrawal.trace_id]
        # The stored context is the gateway's server span of the create call.
        root = by_id.get(withdrawal.span_id)
        assert root is not None, f"no span {withdrawal.span_id} stored by {withdrawal.id}"
        assert (root.service, root.span.kind) == ("gateway", SERVER)
        assert root.span.name.lstrip("/") == server_name.lstrip("/")
        assert root.trace_id == withdrawal.trace_id

        # A span for every state change, by the service that made it, parented to it.
        for version, from_state, to_state in withdrawal.changes:
            matches = [
                s
                for s in trace
                if s.attribute("withdrawal.id") == withdrawal.id
                and s.attribute("withdrawal.version") == version
            ]
            assert len(matches) == 1, (withdrawal.id, version, to_state, len(matches))
            change = matches[0]
            assert change.attribute("withdrawal.to_state") == to_state
            assert change.attribute("withdrawal.from_state") == from_state
            assert change.parent_id == withdrawal.span_id, (to_state, change.service)
        states = {s.attribute("withdrawal.to_state"): s.service for s in trace}
        assert states.get("RECEIVED") == "gateway"
        assert states.get("VALIDATED") == states.get("SIGNED") == "processor"
        assert states.get("CONFIRMING") == states.get("COMPLETED") == "monitor"
        assert [to for _, _, to in withdrawal.changes][-2:] == ["CONFIRMING", "COMPLETED"]

        # Connected: every span of the trace reaches the gateway's server span.
        for span in trace:
            hops, current = 0, span
            while current.parent_id and current.span_id != root.span_id and hops < 50:
                parent = by_id.get(current.parent_id)
                assert parent is not None, (
                    f"{span.service} span {span.span.name!r} has a parent that was never "
                    f"exported ({current.parent_id})"
                )
                current, hops = parent, hops + 1
            assert current.span_id == root.span_id, (span.service, span.span.name)

        # The queue task carried the context: the processor's consumer span continues it
        # (the child of the stored context) or, for a batch of tasks, links to it.
        stored = (withdrawal.trace_id, withdrawal.span_id)
        assert any(
            s.service == "processor"
            and s.span.kind == CONSUMER
            and (
                (s.parent_id == withdrawal.span_id and s.trace_id == withdrawal.trace_id)
                or stored in s.links
            )
            for s in spans
        ), f"no processor consumer span continues {withdrawal.id}'s task"

        # Every event's webhook delivery: the sender's CLIENT span, a child of the stored
        # context (the same trace), naming the event, the endpoint and the answer.
        for version, _, to_state in withdrawal.changes:
            event_id = f"evt_{withdrawal.id}_{version}"
            attempts = [
                s
                for s in spans
                if s.service == "webhooks" and s.attribute("webhook.event_id") == event_id
            ]
            assert attempts, f"no webhook attempt span for {event_id} ({to_state})"
            for attempt in attempts:
                assert attempt.span.kind == CLIENT
                assert (attempt.trace_id, attempt.parent_id) == (
                    withdrawal.trace_id,
                    withdrawal.span_id,
                ), event_id
                assert attempt.attribute("webhook.endpoint_id") == endpoint
                assert attempt.attribute("withdrawal.id") == withdrawal.id
            assert [a.attribute("webhook.attempt") for a in attempts][:1] == [1]
            assert attempts[-1].attribute("http.response.status_code") == 204

    # The payout transaction: its spans link to both withdrawals' traces.
    payout_spans = [s for s in spans if s.attribute("payout.id") == paid[0].payout_tx_id]
    services = {s.service for s in payout_spans if s.links}
    assert {"processor", "monitor"} <= services, services
    for span in (s for s in payout_spans if s.links):
        assert {(p.trace_id, p.span_id) for p in paid} <= span.links, span.span.name
        assert span.trace_id == paid[0].trace_id  # in the first withdrawal's trace

    # The signer's server span: under the processor's payout span, in that trace.
    signs = [s for s in spans if s.service == "signer" and s.span.name.lstrip("/") == SIGN_RPC[1:]]
    assert signs, "the signer exported no SignTransaction span"
    sign = signs[0]
    assert sign.trace_id == paid[0].trace_id
    client = by_id[sign.parent_id]
    assert client.service == "processor"
    assert by_id[client.parent_id].attribute("payout.id") == paid[0].payout_tx_id

    # Logs carry the trace and span ids.
    lines = [
        json.loads(line)
        for line in (stack.logs_dir / "gateway.log").read_text().splitlines()
        if line.startswith("{") and '"withdrawal created"' in line
    ]
    logged = {(e.get("withdrawal_id"), e.get("trace_id"), e.get("span_id")) for e in lines}
    for withdrawal in paid:
        assert (withdrawal.id, withdrawal.trace_id, withdrawal.span_id) in logged


def test_errors_and_streams_are_unchanged_under_tracing(
    stack: HarnessStack, receiver: tuple[Receiver, str]
) -> None:
    """With the gRPC instrumentation installed, a bad request is still INVALID_ARGUMENT with
    its details (never UNKNOWN) on gRPC and 400 on REST (whose `x-trace-id` is its server
    span's trace), and a watch stream still replays a completed withdrawal's states and ends
    by itself."""
    metadata = (("authorization", f"Bearer {stack.api_key}"),)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = withdrawal_pb2_grpc.WithdrawalServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreateWithdrawal(create_request(amount="-1"), metadata=metadata, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        trailers = dict(caught.value.trailing_metadata() or ())  # type: ignore[attr-defined]
        assert "grpc-status-details-bin" in trailers
        created = stub.CreateWithdrawal(create_request(amount="0.5"), metadata=metadata, timeout=10)
        (paid,) = _wait_completed(stack, [created.name.rsplit("/", 1)[1]])
        states = [
            withdrawal_pb2.State.Name(event.withdrawal.state)
            for event in stub.WatchWithdrawal(
                withdrawal_pb2.WatchWithdrawalRequest(name=created.name, resume_after_version=0),
                metadata=metadata,
                timeout=10,
            )
        ]
    assert states == ["STATE_" + to for _, _, to in paid.changes]
    response = httpx.post(
        f"{stack.rest_base_url}/v1/withdrawals",
        json={"token": "USDC", "recipientAddress": "nope", "amount": "1"},
        headers={"Authorization": f"Bearer {stack.api_key}", "Idempotency-Key": str(uuid.uuid4())},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    trace_id = response.headers["x-trace-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        servers = [
            s
            for s in receiver[0].snapshot()
            if s.trace_id == trace_id and s.service == "gateway" and s.span.kind == SERVER
        ]
        if servers:
            break
        time.sleep(0.2)
    assert [(s.span.name, s.attribute("http.response.status_code")) for s in servers] == [
        ("POST /v1/withdrawals", 400)
    ]
