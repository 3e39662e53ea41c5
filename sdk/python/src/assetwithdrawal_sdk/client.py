"""`Client`: the synchronous client of the Asset Withdrawal API."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from google.protobuf.message import Message

from assetwithdrawal_sdk import _common as common
from assetwithdrawal_sdk._gen.assetwithdrawal.webhooks.v1 import webhooks_pb2
from assetwithdrawal_sdk._gen.assetwithdrawal.withdrawal.v1 import batch_pb2, withdrawal_pb2
from assetwithdrawal_sdk._methods import METHODS
from assetwithdrawal_sdk._retry import RetryPolicy, note_retry
from assetwithdrawal_sdk._transport import (
    GrpcTransport,
    Progress,
    RestTransport,
    Transport,
    grpc_channel,
)
from assetwithdrawal_sdk.errors import AssetWithdrawalError
from assetwithdrawal_sdk.models import (
    TERMINAL_BATCH_STATES,
    Batch,
    BatchReport,
    BatchReportRow,
    ListWithdrawalsResponse,
    StateChange,
    WatchEvent,
    WebhookEndpoint,
    Withdrawal,
)

M = TypeVar("M", bound=Message)
TransportName = Literal["grpc", "rest"]


class Client:
    """The Asset Withdrawal API, synchronously.

    gRPC by default: `Client(api_key, target="api.example.com:443")` (TLS; `tls=False` for a
    local gateway such as `127.0.0.1:50051`). REST: `Client(api_key, transport="rest",
    base_url="https://api.example.com")`. The API key defaults to `$ASSETWITHDRAWAL_API_KEY`.

    Every call is retried per `retry` (`max_attempts` is a shortcut for
    `RetryPolicy(max_attempts=...)`); `timeout` bounds each attempt, in seconds. The client
    holds a connection pool: make one, reuse it, `close()` it (or use `with`)."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        target: str | None = None,
        base_url: str | None = None,
        transport: TransportName = "grpc",
        tls: bool = True,
        root_certificates: bytes | None = None,
        timeout: float = common.DEFAULT_TIMEOUT,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        grpc_options: Sequence[tuple[str, Any]] = (),
        grpc_interceptors: Sequence[Any] = (),
        http_client: httpx.Client | None = None,
    ) -> None:
        key = common.api_key_or_env(api_key)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        if max_attempts is not None:
            self.retry = RetryPolicy(
                max_attempts=max_attempts,
                initial_backoff=self.retry.initial_backoff,
                max_backoff=self.retry.max_backoff,
                multiplier=self.retry.multiplier,
                max_retry_after=self.retry.max_retry_after,
            )
        self._transport: Transport
        if transport == "grpc":
            if not target:
                raise ValueError("the gRPC transport needs target='host:port'")
            channel = grpc_channel(
                target, tls=tls, root_certificates=root_certificates, options=grpc_options
            )
            self._transport = GrpcTransport(channel, key, grpc_interceptors)
        elif transport == "rest":
            if not base_url:
                raise ValueError("the REST transport needs base_url='https://host'")
            self._transport = RestTransport(base_url, key, http_client)
        else:
            raise ValueError(f"transport must be 'grpc' or 'rest', not {transport!r}")

    # ------------------------------------------------------------------ plumbing

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def _call(
        self,
        method_name: str,
        request: Message,
        response_type: type[M],
        timeout: float | None = None,
    ) -> M:
        method = METHODS[method_name]
        for attempt in itertools.count(1):
            try:
                return self._transport.unary(
                    method, request, response_type, timeout or self.timeout
                )
            except AssetWithdrawalError as err:
                wait = self.retry.delay(err, attempt, method.safe_to_retry)
                if wait is None:
                    err.attempts = attempt
                    raise
                note_retry(method_name, err, attempt, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ withdrawals

    def create_withdrawal(
        self,
        *,
        token: str,
        recipient_address: str,
        amount: str | Decimal | int,
        chain: str = "",
        client_reference: str = "",
        user_ref: str = "",
        priority: int = 0,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Withdrawal:
        """Create a withdrawal. `amount` is a decimal string (or Decimal) in token units.

        The idempotency key `request_id` is a new uuid4 unless given, and every retry of this
        call sends the same one: a create retried after a timeout is never paid twice. Pass
        your own (e.g. derived from your payout id) to stay idempotent across processes."""
        request = common.create_withdrawal_request(
            token=token,
            recipient_address=recipient_address,
            amount=amount,
            chain=chain,
            client_reference=client_reference,
            user_ref=user_ref,
            priority=priority,
            request_id=request_id,
        )
        return self._call("CreateWithdrawal", request, Withdrawal, timeout)

    def get_withdrawal(self, name: str, *, timeout: float | None = None) -> Withdrawal:
        """One withdrawal, by name (`withdrawals/{id}`) or id."""
        request = withdrawal_pb2.GetWithdrawalRequest(
            name=common.resource_name("withdrawals", name)
        )
        return self._call("GetWithdrawal", request, Withdrawal, timeout)

    def cancel_withdrawal(self, name: str, *, reason: str = "") -> Withdrawal:
        """Cancel before the withdrawal is placed in a payout (else WithdrawalNotCancellable)."""
        request = withdrawal_pb2.CancelWithdrawalRequest(
            name=common.resource_name("withdrawals", name), reason=reason
        )
        return self._call("CancelWithdrawal", request, Withdrawal)

    def list_withdrawals_page(
        self, *, filter: str = "", page_size: int = 0, page_token: str = ""
    ) -> ListWithdrawalsResponse:
        """One page of the caller's withdrawals, newest first (`next_page_token` for more)."""
        request = withdrawal_pb2.ListWithdrawalsRequest(
            filter=filter, page_size=page_size, page_token=page_token
        )
        return self._call("ListWithdrawals", request, ListWithdrawalsResponse)

    def list_withdrawals(self, *, filter: str = "", page_size: int = 0) -> Iterator[Withdrawal]:
        """Every withdrawal matching `filter` (AIP-160, e.g. `state = COMPLETED AND token =
        "USDC"`), newest first, fetching pages as the iteration goes."""
        token = ""
        while True:
            page = self.list_withdrawals_page(filter=filter, page_size=page_size, page_token=token)
            yield from page.withdrawals
            token = page.next_page_token
            if not token:
                return

    def list_state_changes(self, name: str, *, page_size: int = 0) -> Iterator[StateChange]:
        """The withdrawal's audit trail, oldest first, every page."""
        token = ""
        while True:
            request = withdrawal_pb2.ListStateChangesRequest(
                parent=common.resource_name("withdrawals", name),
                page_size=page_size,
                page_token=token,
            )
            page = self._call("ListStateChanges", request, withdrawal_pb2.ListStateChangesResponse)
            yield from page.state_changes
            token = page.next_page_token
            if not token:
                return

    def watch(self, name: str, *, resume_after_version: int | None = None) -> Iterator[WatchEvent]:
        """The withdrawal's current state, then each change, until it reaches a terminal state.

        A dropped stream (a connection reset, a gateway restart) is reopened with
        `resume_after_version` set to the last event's version, so no change is lost or seen
        twice. Failed reopens follow the retry policy (its attempts count consecutive failures);
        a REST stream idle for 5 minutes is reopened the same way, which is not a failure."""
        cursor = common.WatchCursor(common.resource_name("withdrawals", name), resume_after_version)
        method = METHODS["WatchWithdrawal"]
        failures = 0
        while True:
            error: AssetWithdrawalError | None = None
            try:
                for event in self._transport.stream(method, cursor.request(), WatchEvent):
                    failures = 0
                    if cursor.accept(event):
                        yield event
                    if cursor.done:
                        return
            except AssetWithdrawalError as err:
                error = err
            failures = failures + 1 if error is not None else 0
            time.sleep(common.reconnect_wait(self.retry, error, failures, "WatchWithdrawal"))

    # ------------------------------------------------------------------ batches

    def upload_batch(
        self,
        path: str | Path,
        *,
        policy: str | int = "REJECT_ALL",
        request_id: str | None = None,
        allow_duplicate_content: bool = False,
        on_progress: Progress | None = None,
        timeout: float | None = 300.0,
    ) -> Batch:
        """Upload a CSV file of withdrawals (`recipient_address,amount,token[,client_reference,
        user_ref]`) as a batch. `policy`: REJECT_ALL (any bad row refuses the file:
        BatchRowsInvalid) or ACCEPT_VALID. `on_progress(sent, total)` is called as the bytes
        go. Without `request_id` the key is derived from the file's content and the policy,
        so running the same upload again answers the batch it created."""
        file = Path(path)
        policy_number = common.policy_value(policy)
        header = batch_pb2.CreateBatchHeader(
            request_id=request_id or common.batch_request_id(file, policy_number),
            policy=policy_number,  # type: ignore[arg-type]
            allow_duplicate_content=allow_duplicate_content,
        )
        total = common.file_size(file)
        method = METHODS["CreateBatch"]

        def chunks() -> Iterator[bytes]:
            sent = 0
            for chunk in common.file_chunks(file, common.CHUNK_BYTES):
                yield chunk
                sent += len(chunk)
                if on_progress is not None:
                    on_progress(sent, total)

        for attempt in itertools.count(1):
            try:
                return self._transport.upload(method, header, chunks(), timeout)
            except AssetWithdrawalError as err:
                wait = self.retry.delay(err, attempt, method.safe_to_retry)
                if wait is None:
                    err.attempts = attempt
                    raise
                note_retry("CreateBatch", err, attempt, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def get_batch(self, name: str) -> Batch:
        request = batch_pb2.GetBatchRequest(name=common.resource_name("batches", name))
        return self._call("GetBatch", request, Batch)

    def cancel_batch(self, name: str, *, reason: str = "") -> Batch:
        request = batch_pb2.CancelBatchRequest(
            name=common.resource_name("batches", name), reason=reason
        )
        return self._call("CancelBatch", request, Batch)

    def list_batches(self, *, page_size: int = 0) -> Iterator[Batch]:
        token = ""
        while True:
            request = batch_pb2.ListBatchesRequest(page_size=page_size, page_token=token)
            page = self._call("ListBatches", request, batch_pb2.ListBatchesResponse)
            yield from page.batches
            token = page.next_page_token
            if not token:
                return

    def get_batch_report_page(
        self, name: str, *, page_size: int = 0, page_token: str = ""
    ) -> BatchReport:
        request = batch_pb2.GetBatchReportRequest(
            name=common.resource_name("batches", name).removesuffix("/report") + "/report",
            page_size=page_size,
            page_token=page_token,
        )
        return self._call("GetBatchReport", request, BatchReport)

    def get_batch_report(self, name: str, *, page_size: int = 0) -> Iterator[BatchReportRow]:
        """Every row of the batch's report, in line order: its withdrawal and state, or its
        problems."""
        token = ""
        while True:
            page = self.get_batch_report_page(name, page_size=page_size, page_token=token)
            yield from page.rows
            token = page.next_page_token
            if not token:
                return

    def watch_batch(self, name: str) -> Iterator[Batch]:
        """The batch now and whenever its counts change, until it is DONE or REJECTED
        (reopened after a dropped stream)."""
        request = batch_pb2.WatchBatchRequest(name=common.resource_name("batches", name))
        method = METHODS["WatchBatch"]
        failures = 0
        while True:
            error: AssetWithdrawalError | None = None
            try:
                for batch in self._transport.stream(method, request, Batch):
                    failures = 0
                    yield batch
                    if batch.state in TERMINAL_BATCH_STATES:
                        return
            except AssetWithdrawalError as err:
                error = err
            failures = failures + 1 if error is not None else 0
            time.sleep(common.reconnect_wait(self.retry, error, failures, "WatchBatch"))

    # ------------------------------------------------------------------ webhook endpoints

    def create_webhook_endpoint(
        self,
        url: str,
        *,
        event_types: Sequence[str] = (),
        description: str = "",
        request_id: str | None = None,
    ) -> WebhookEndpoint:
        """Register an HTTPS endpoint; the answer's `secret` (`whsec_...`) is shown this once:
        give it to `WebhookVerifier`."""
        request = webhooks_pb2.CreateWebhookEndpointRequest(
            webhook_endpoint=WebhookEndpoint(
                url=url, event_types=list(event_types), description=description
            ),
            request_id=request_id or common.new_request_id(),
        )
        return self._call("CreateWebhookEndpoint", request, WebhookEndpoint)

    def list_webhook_endpoints(self) -> Iterator[WebhookEndpoint]:
        token = ""
        while True:
            request = webhooks_pb2.ListWebhookEndpointsRequest(page_token=token)
            page = self._call(
                "ListWebhookEndpoints", request, webhooks_pb2.ListWebhookEndpointsResponse
            )
            yield from page.webhook_endpoints
            token = page.next_page_token
            if not token:
                return

    def delete_webhook_endpoint(self, name: str) -> None:
        from google.protobuf import empty_pb2

        request = webhooks_pb2.DeleteWebhookEndpointRequest(
            name=common.resource_name("webhookEndpoints", name)
        )
        self._call("DeleteWebhookEndpoint", request, empty_pb2.Empty)

    def rotate_webhook_secret(self, name: str, *, overlap_seconds: int = 0) -> WebhookEndpoint:
        request = webhooks_pb2.RotateWebhookSecretRequest(
            name=common.resource_name("webhookEndpoints", name), overlap_seconds=overlap_seconds
        )
        return self._call("RotateWebhookSecret", request, WebhookEndpoint)
