"""The Python SDK against the real pipeline (anvil, MariaDB, Redis, signer, gateway,
processor, monitor, webhook sender), over both transports: create and get, pagination,
watching to COMPLETED (and resuming after a dropped stream), the audit trail, a create
retried after a deadline, a lost reply or a rate limit that makes one withdrawal, typed
errors alike on gRPC and REST, a batch uploaded from a file with its report, the asyncio
client, and a real webhook delivery verified (and its tampered copy refused). No mocks:
failures are forced with a real deadline, a real rate limit and real dropped TCP
connections."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from assetwithdrawal_sdk import (
    AsyncClient,
    BatchPolicy,
    BatchRowsInvalid,
    BatchState,
    Client,
    EventType,
    IdempotencyKeyReused,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    RetryPolicy,
    State,
    Unauthenticated,
    WatchEvent,
    WebhookVerificationError,
    WebhookVerifier,
    WithdrawalNotCancellable,
)
from tests.sdk_python.conftest import Stack
from tests.sdk_python.proxy import DroppingProxy
from tests.sdk_python.receiver import Receiver
from tests.support.requests import fresh_address
from withdrawal_shared.webhooks.secrets import new_secret

TRANSPORTS = ["grpc", "rest"]


def client_for(stack: Stack, transport: str, key: str | None = None, **kwargs: Any) -> Client:
    key = key or stack.partner.api_key
    if transport == "grpc":
        return Client(key, target=stack.grpc_target, tls=False, **kwargs)
    return Client(key, transport="rest", base_url=stack.base_url, **kwargs)


@pytest.fixture(params=TRANSPORTS)
def client(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Client]:
    with client_for(stack, request.param) as c:
        yield c


def ref(label: str) -> str:
    return f"{label}-{secrets.token_hex(6)}"


def test_create_then_get(client: Client) -> None:
    reference = ref("inv")
    created = client.create_withdrawal(
        token="USDC",
        recipient_address=fresh_address(),
        amount="12.5",
        client_reference=reference,
    )
    assert created.name.startswith("withdrawals/")
    assert created.client_reference == reference
    assert created.amount == "12.5"
    assert created.state == State.STATE_RECEIVED
    fetched = client.get_withdrawal(created.name)
    assert fetched.name == created.name
    # A bare id is accepted too.
    assert client.get_withdrawal(created.name.removeprefix("withdrawals/")).name == created.name
    # Cancelled before it is placed in a payout (the processor batches for 1 s), and again:
    # unchanged. Should the processor have been first, the refusal is typed.
    try:
        cancelled = client.cancel_withdrawal(created.name, reason="sdk test")
    except WithdrawalNotCancellable as err:
        assert err.metadata["state"]
    else:
        assert cancelled.state == State.STATE_CANCELLED
        assert client.cancel_withdrawal(created.name).version == cancelled.version


def test_list_withdrawals_iterates_every_page(client: Client) -> None:
    user = ref("user")
    names = {
        client.create_withdrawal(
            token="USDC", recipient_address=fresh_address(), amount=f"1.{i}", user_ref=user
        ).name
        for i in range(5)
    }
    flt = f'user_ref = "{user}"'
    first = client.list_withdrawals_page(filter=flt, page_size=2)
    assert len(first.withdrawals) == 2 and first.next_page_token
    listed = [w.name for w in client.list_withdrawals(filter=flt, page_size=2)]
    assert len(listed) == 5 and set(listed) == names
    assert listed == sorted(listed, reverse=True)  # newest first (ULIDs sort by time)


def _watch_in_thread(
    watch: Callable[[], Iterator[WatchEvent]],
) -> tuple[threading.Thread, list[WatchEvent], list[BaseException]]:
    seen: list[WatchEvent] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            seen.extend(watch())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen, failed


def test_watch_to_completed_on_both_transports_and_the_audit_trail(stack: Stack) -> None:
    """Two withdrawals paid at once, one watched over gRPC, one over REST (NDJSON), each
    through a TCP proxy that drops every connection after the first event: the SDK reopens
    the stream with resume_after_version and still sees every version exactly once, from the
    snapshot to COMPLETED."""
    rest_proxy = DroppingProxy("127.0.0.1", int(stack.base_url.rsplit(":", 1)[1]))
    grpc_proxy = DroppingProxy("127.0.0.1", int(stack.grpc_target.rsplit(":", 1)[1]))
    fast = RetryPolicy(initial_backoff=0.05)
    with (
        Client(stack.partner.api_key, target=grpc_proxy.address, tls=False, retry=fast) as g,
        Client(
            stack.partner.api_key,
            transport="rest",
            base_url=f"http://{rest_proxy.address}",
            retry=fast,
        ) as r,
    ):
        a = g.create_withdrawal(token="USDC", recipient_address=fresh_address(), amount="2.5")
        b = r.create_withdrawal(token="USDC", recipient_address=fresh_address(), amount="3.5")
        seen: dict[str, list[WatchEvent]] = {"grpc": [], "rest": []}
        failed: list[BaseException] = []

        def follow(label: str, client: Client, name: str, proxy: DroppingProxy) -> None:
            try:
                for event in client.watch(name):
                    seen[label].append(event)
                    if len(seen[label]) == 1:
                        proxy.drop_all()  # a dropped stream, mid-watch
            except BaseException as exc:
                failed.append(exc)

        threads = [
            threading.Thread(target=follow, args=("grpc", g, a.name, grpc_proxy), daemon=True),
            threading.Thread(target=follow, args=("rest", r, b.name, rest_proxy), daemon=True),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        rest_proxy.close()
        grpc_proxy.close()
        assert not failed, failed
        assert rest_proxy.connections >= 2 and grpc_proxy.connections >= 2  # reconnected

        for events in seen.values():
            assert events[0].event_type == EventType.EVENT_TYPE_SNAPSHOT
            assert events[-1].withdrawal.state == State.STATE_COMPLETED
            versions = [e.withdrawal.version for e in events]
            assert versions == sorted(set(versions)), versions  # no repeat, no reorder
            assert versions[-1] - versions[0] == len(versions) - 1  # no gap across the drop
        assert seen["grpc"][-1].withdrawal.transaction_hash.startswith("0x")

    with client_for(stack, "grpc") as grpc_client, client_for(stack, "rest") as rest_client:
        trail = list(grpc_client.list_state_changes(a.name, page_size=2))
        assert trail[0].to_state == State.STATE_RECEIVED
        assert trail[-1].to_state == State.STATE_COMPLETED
        assert [c.version for c in trail] == list(range(1, len(trail) + 1))
        rest_trail = list(rest_client.list_state_changes(b.name))
        assert rest_trail[-1].version == seen["rest"][-1].withdrawal.version


class _ShrinkFirstDeadline(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Gives the first CreateWithdrawal a deadline of 1 ms (the call fails with
    DEADLINE_EXCEEDED), and records the request_id each attempt carried."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        if details.method.endswith("/CreateWithdrawal"):
            self.request_ids.append(request.request_id)
            if len(self.request_ids) == 1:
                details = details._replace(timeout=0.001)
        return continuation(details, request)


def test_a_create_retried_after_a_deadline_makes_one_withdrawal_grpc(stack: Stack) -> None:
    spy = _ShrinkFirstDeadline()
    reference = ref("retry")
    with Client(
        stack.partner.api_key,
        target=stack.grpc_target,
        tls=False,
        grpc_interceptors=[spy],
        retry=RetryPolicy(initial_backoff=0.05),
    ) as client:
        created = client.create_withdrawal(
            token="USDC", recipient_address=fresh_address(), amount="4", client_reference=reference
        )
        assert len(spy.request_ids) >= 2, spy.request_ids
        assert len(set(spy.request_ids)) == 1  # every attempt carried the same key
        found = list(client.list_withdrawals(filter=f'client_reference = "{reference}"'))
    assert [w.name for w in found] == [created.name]


def test_a_create_retried_after_a_timeout_makes_one_withdrawal_rest(stack: Stack) -> None:
    keys: list[str] = []

    def shrink_first(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/v1/withdrawals":
            keys.append(request.headers["Idempotency-Key"])
            if len(keys) == 1:
                request.extensions["timeout"] = httpx.Timeout(5.0, read=0.001).as_dict()

    reference = ref("retry")
    http = httpx.Client(event_hooks={"request": [shrink_first]})
    with Client(
        stack.partner.api_key,
        transport="rest",
        base_url=stack.base_url,
        http_client=http,
        retry=RetryPolicy(initial_backoff=0.05),
    ) as client:
        created = client.create_withdrawal(
            token="USDC", recipient_address=fresh_address(), amount="4", client_reference=reference
        )
        assert len(keys) >= 2 and len(set(keys)) == 1, keys
        found = list(client.list_withdrawals(filter=f'client_reference = "{reference}"'))
    http.close()
    assert [w.name for w in found] == [created.name]


def test_a_create_whose_reply_was_lost_is_retried_and_pays_once(stack: Stack) -> None:
    """The worst case for a create: the gateway stored the withdrawal but the reply never came
    back (the connection was reset as the response left). The SDK retries on a new connection
    with the same Idempotency-Key and gets the original withdrawal: one withdrawal."""
    proxy = DroppingProxy("127.0.0.1", int(stack.base_url.rsplit(":", 1)[1]), lose_first_reply=True)
    reference = ref("lost")
    try:
        with Client(
            stack.partner.api_key,
            transport="rest",
            base_url=f"http://{proxy.address}",
            retry=RetryPolicy(initial_backoff=0.05),
        ) as client:
            created = client.create_withdrawal(
                token="USDC",
                recipient_address=fresh_address(),
                amount="6",
                client_reference=reference,
            )
            assert proxy.lost_replies == 1 and proxy.connections >= 2
            found = list(client.list_withdrawals(filter=f'client_reference = "{reference}"'))
    finally:
        proxy.close()
    # The gateway had answered the first attempt (its reply was lost), so the withdrawal was
    # stored then; the retry returned it instead of creating another.
    assert [w.name for w in found] == [created.name]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_rate_limited_create_waits_retry_after_and_keeps_its_key(
    stack: Stack, transport: str
) -> None:
    """The key admits 1 request per second: the second create is RESOURCE_EXHAUSTED / 429
    with Retry-After; the SDK waits that long and retries with the same request_id."""
    reference = ref("limited")
    with client_for(stack, transport, stack.limited_key, max_attempts=1) as once:
        time.sleep(1.1)  # a full bucket
        once.create_withdrawal(token="USDC", recipient_address=fresh_address(), amount="1")
        with pytest.raises(RateLimited) as refused:
            once.create_withdrawal(token="USDC", recipient_address=fresh_address(), amount="1")
    assert refused.value.reason == "RATE_LIMITED"
    assert refused.value.retry_after is not None and refused.value.retry_after >= 1
    assert refused.value.http_status == 429

    with client_for(stack, transport, stack.limited_key) as patient:
        patient.create_withdrawal(token="USDC", recipient_address=fresh_address(), amount="1")
        started = time.monotonic()
        created = patient.create_withdrawal(
            token="USDC", recipient_address=fresh_address(), amount="1", client_reference=reference
        )
        waited = time.monotonic() - started
        assert waited >= 0.9, waited  # it honoured Retry-After (1 s at 1 request per second)
        time.sleep(1.1)
        found = list(patient.list_withdrawals(filter=f'client_reference = "{reference}"'))
    assert [w.name for w in found] == [created.name]


def _raised(call: Callable[[], object]) -> Exception:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def test_typed_errors_are_the_same_on_both_transports(stack: Stack) -> None:
    errors: dict[str, dict[str, Exception]] = {}
    for transport in TRANSPORTS:
        with (
            client_for(stack, transport) as c,
            client_for(stack, transport, stack.read_only_key) as reader,
        ):
            key = f"dup-{secrets.token_hex(6)}"
            c.create_withdrawal(
                token="USDC", recipient_address=fresh_address(), amount="1", request_id=key
            )
            errors[transport] = {
                "invalid": _raised(
                    lambda c=c: c.create_withdrawal(
                        token="USDC", recipient_address="0x1234", amount="1.1234567"
                    )
                ),
                "missing": _raised(
                    lambda c=c: c.get_withdrawal("withdrawals/01jd3x5q8r7m2n4p6t9v0w1y2z")
                ),
                "reused": _raised(
                    lambda c=c, key=key: c.create_withdrawal(
                        token="USDC", recipient_address=fresh_address(), amount="2", request_id=key
                    )
                ),
                "scope": _raised(
                    lambda reader=reader: reader.create_withdrawal(
                        token="USDC", recipient_address=fresh_address(), amount="1"
                    )
                ),
            }
        with client_for(stack, transport, "awk_00000000_" + "0" * 64) as stranger:
            errors[transport]["unknown-key"] = _raised(lambda s=stranger: s.get_withdrawal("x"))
    for transport, found in errors.items():
        unknown = found["unknown-key"]
        assert isinstance(unknown, Unauthenticated), (transport, unknown)
        assert unknown.reason == "UNAUTHENTICATED" and unknown.http_status == 401
        invalid = found["invalid"]
        assert isinstance(invalid, InvalidArgument), (transport, invalid)
        assert invalid.reason == "INVALID_ARGUMENT" and invalid.http_status == 400
        fields = {v.field.rsplit(".", 1)[-1] for v in invalid.field_violations}
        assert {"amount"} <= fields and len(invalid.field_violations) == 2, fields
        assert isinstance(found["missing"], NotFound) and found["missing"].reason == "NOT_FOUND"
        reused = found["reused"]
        assert isinstance(reused, IdempotencyKeyReused), (transport, reused)
        assert reused.metadata["withdrawal"].startswith("withdrawals/")
        assert reused.http_status == 409
        scope = found["scope"]
        assert isinstance(scope, PermissionDenied) and scope.reason == "SCOPE_MISSING"
        assert scope.metadata["scope"] == "withdrawals:create"
    for name in ("invalid", "missing", "reused", "scope", "unknown-key"):
        g, r = errors["grpc"][name], errors["rest"][name]
        assert (type(g), g.code, g.reason, g.http_status) == (  # type: ignore[attr-defined]
            type(r),
            r.code,  # type: ignore[attr-defined]
            r.reason,  # type: ignore[attr-defined]
            r.http_status,  # type: ignore[attr-defined]
        )


def test_a_float_amount_is_refused_before_sending(client: Client) -> None:
    with pytest.raises(TypeError):
        client.create_withdrawal(token="USDC", recipient_address=fresh_address(), amount=12.5)  # type: ignore[arg-type]


def test_batch_upload_with_progress_then_its_report(stack: Stack, tmp_path: Path) -> None:
    good = [fresh_address(), fresh_address()]
    path = tmp_path / "payouts.csv"
    refs = [ref("row"), ref("row"), ref("row")]
    path.write_text(
        "recipient_address,amount,token,client_reference\r\n"
        f"{good[0]},1.25,USDC,{refs[0]}\r\n"
        f"0xnot-an-address,1,USDC,{refs[1]}\r\n"
        f"{good[1]},2.5,USDC,{refs[2]}\r\n"
    )
    progress: list[tuple[int, int]] = []
    with client_for(stack, "grpc") as c, client_for(stack, "rest") as rest:
        batch = c.upload_batch(
            path, policy="ACCEPT_VALID", on_progress=lambda s, t: progress.append((s, t))
        )
        assert batch.name.startswith("batches/")
        assert (batch.row_count, batch.accepted_count, batch.problem_row_count) == (3, 2, 1)
        assert batch.policy == BatchPolicy.BATCH_POLICY_ACCEPT_VALID
        size = path.stat().st_size
        assert progress and progress[-1] == (size, size)

        # The same file and policy again (here over REST) answers the same batch: its default
        # key comes from the content.
        again = rest.upload_batch(path, policy="ACCEPT_VALID")
        assert again.name == batch.name

        rows = list(rest.get_batch_report(batch.name, page_size=2))
        assert [r.line for r in rows] == [2, 3, 4]
        assert rows[1].problems and rows[1].problems[0].column == "recipient_address"
        assert not rows[1].withdrawal
        assert rows[0].withdrawal.startswith("withdrawals/") and rows[0].client_reference == refs[0]
        assert c.get_batch(batch.name).state in (
            BatchState.BATCH_STATE_PROCESSING,
            BatchState.BATCH_STATE_DONE,
        )

        # REJECT_ALL refuses the file: a typed error naming the rejected batch, whose report
        # lists the problem.
        bad = tmp_path / "bad.csv"
        bad.write_text(f"recipient_address,amount,token\r\n{fresh_address()},-1,USDC\r\n")
        with pytest.raises(BatchRowsInvalid) as refused:
            rest.upload_batch(bad)
        rejected = refused.value.metadata["batch"]
        assert c.get_batch(rejected).state == BatchState.BATCH_STATE_REJECTED
        assert next(iter(c.get_batch_report(rejected))).problems[0].column == "amount"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_async_client(stack: Stack, transport: str, tmp_path: Path) -> None:
    """The asyncio client: creates, get, paging, typed errors, and a watch through a proxy
    that drops the connection after the first event, resumed without a gap."""
    address = stack.grpc_target if transport == "grpc" else stack.base_url.split("//")[1]
    proxy = DroppingProxy("127.0.0.1", int(address.rsplit(":", 1)[1]))

    def make(target: str) -> AsyncClient:
        if transport == "grpc":
            return AsyncClient(
                stack.partner.api_key,
                target=target,
                tls=False,
                retry=RetryPolicy(initial_backoff=0.05),
            )
        return AsyncClient(
            stack.partner.api_key,
            transport="rest",
            base_url=f"http://{target}",
            retry=RetryPolicy(initial_backoff=0.05),
        )

    async def scenario() -> None:
        async with make(address) as client, make(proxy.address) as proxied:
            user = ref("async")
            created = [
                await client.create_withdrawal(
                    token="USDC", recipient_address=fresh_address(), amount="1", user_ref=user
                )
                for _ in range(3)
            ]
            fetched = await client.get_withdrawal(created[0].name)
            assert fetched.name == created[0].name
            listed = [
                w.name
                async for w in client.list_withdrawals(filter=f'user_ref = "{user}"', page_size=2)
            ]
            assert sorted(listed) == sorted(w.name for w in created)
            events: list[WatchEvent] = []
            async for event in proxied.watch(created[0].name):
                events.append(event)
                if len(events) == 1:
                    proxy.drop_all()
                if len(events) == 3:
                    break
            assert events[0].event_type == EventType.EVENT_TYPE_SNAPSHOT
            versions = [e.withdrawal.version for e in events]
            assert len(versions) >= 2
            assert versions == list(range(versions[0], versions[0] + len(versions))), versions
            assert proxy.connections >= 2
            with pytest.raises(NotFound):
                await client.get_withdrawal("withdrawals/01jd3x5q8r7m2n4p6t9v0w1y2z")

            csv = tmp_path / "async.csv"
            csv.write_text(f"recipient_address,amount,token\r\n{fresh_address()},0.5,USDC\r\n")
            sent: list[int] = []
            batch = await client.upload_batch(csv, on_progress=lambda s, _t: sent.append(s))
            assert batch.accepted_count == 1 and sent[-1] == csv.stat().st_size
            rows = [row async for row in client.get_batch_report(batch.name)]
            assert rows[0].withdrawal.startswith("withdrawals/")

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()


def test_a_real_delivery_verifies_and_a_tampered_one_does_not(stack: Stack) -> None:
    """An endpoint registered through the SDK; the real sender (svc_webhooks) POSTs a
    withdrawal's event to a local receiver; the SDK's verifier accepts it with the secret the
    gateway issued, and refuses it tampered, re-signed with another secret, or too old."""
    receiver = Receiver()
    try:
        with client_for(stack, "rest") as c:
            endpoint = c.create_webhook_endpoint(
                receiver.url, event_types=["withdrawal.received"], description="sdk test"
            )
            assert endpoint.secret.startswith("whsec_")
            assert any(e.name == endpoint.name for e in c.list_webhook_endpoints())
            created = c.create_withdrawal(
                token="USDC", recipient_address=fresh_address(), amount="7"
            )
            deadline = time.monotonic() + 30
            mine: list[tuple[dict[str, str], bytes]] = []
            while not mine and time.monotonic() < deadline:
                mine = [d for d in receiver.deliveries if created.name.encode() in d[1]]
                time.sleep(0.1)
            assert mine, receiver.deliveries
            headers, body = mine[0]

            verifier = WebhookVerifier(endpoint.secret)
            event = verifier.verify(body, headers)
            assert event.type == "withdrawal.received"
            assert event.withdrawal == created.name and event.state == "RECEIVED"
            assert event.sequence == 1 and event.id == headers["webhook-id"]

            tampered = body.replace(b'"amount":"7"', b'"amount":"70"')
            assert tampered != body
            with pytest.raises(WebhookVerificationError):
                verifier.verify(tampered, headers)
            with pytest.raises(WebhookVerificationError):
                WebhookVerifier(new_secret()).verify(body, headers)
            late = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=6)
            with pytest.raises(WebhookVerificationError):
                verifier.verify(body, headers, now=late)
            # During a rotation you may hold both secrets: either verifies.
            assert WebhookVerifier([new_secret(), endpoint.secret]).verify(body, headers).id
            c.delete_webhook_endpoint(endpoint.name)
    finally:
        receiver.close()
