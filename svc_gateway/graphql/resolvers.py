"""Query, Mutation and Subscription: each field is one call of the gRPC API's dispatcher
(`calls.unary` / `calls.stream`), its answer converted to the schema's types."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from assetwithdrawal.webhooks.v1 import webhooks_pb2
from assetwithdrawal.withdrawal.v1 import batch_pb2, withdrawal_pb2
from svc_gateway.graphql import convert
from svc_gateway.graphql import types as t
from svc_gateway.graphql.calls import Info, stream, unary

W, B, H = "withdrawals", "batches", "webhooks"


def _page(first: int | None, after: str | None) -> tuple[int, str]:
    """(page_size, page_token): `first` unset is the API's default page size."""
    return first or 0, after or ""


async def state_changes(
    info: Info, name: str, first: int | None, after: str | None
) -> t.Connection[t.StateChange]:
    size, token = _page(first, after)
    answer = await unary(
        info,
        W,
        "ListStateChanges",
        withdrawal_pb2.ListStateChangesRequest(parent=name, page_size=size, page_token=token),
        withdrawal_pb2.ListStateChangesResponse,
    )
    return t.connection(
        [convert.state_change(c) for c in answer.state_changes], answer.next_page_token
    )


async def batch_rows(
    info: Info, name: str, first: int | None, after: str | None
) -> t.Connection[t.BatchReportRow]:
    size, token = _page(first, after)
    answer = await unary(
        info,
        B,
        "GetBatchReport",
        batch_pb2.GetBatchReportRequest(name=f"{name}/report", page_size=size, page_token=token),
        batch_pb2.BatchReport,
    )
    return t.connection([convert.report_row(r) for r in answer.rows], answer.next_page_token)


@strawberry.type
class Query:
    @strawberry.field(description="One withdrawal by its name (GetWithdrawal).")
    async def withdrawal(self, info: Info, name: str) -> t.Withdrawal | None:
        answer = await unary(
            info,
            W,
            "GetWithdrawal",
            withdrawal_pb2.GetWithdrawalRequest(name=name),
            withdrawal_pb2.Withdrawal,
        )
        return convert.withdrawal(answer)

    @strawberry.field(description="The caller's withdrawals, newest first (ListWithdrawals).")
    async def withdrawals(
        self,
        info: Info,
        filter: t.WithdrawalFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> t.Connection[t.Withdrawal] | None:
        size, token = _page(first, after)
        answer = await unary(
            info,
            W,
            "ListWithdrawals",
            withdrawal_pb2.ListWithdrawalsRequest(
                filter=convert.list_filter(filter), page_size=size, page_token=token
            ),
            withdrawal_pb2.ListWithdrawalsResponse,
        )
        return t.connection(
            [convert.withdrawal(w) for w in answer.withdrawals], answer.next_page_token
        )

    @strawberry.field(description="One batch by its name (GetBatch); `rows` is its report.")
    async def batch(self, info: Info, name: str) -> t.Batch | None:
        answer = await unary(
            info, B, "GetBatch", batch_pb2.GetBatchRequest(name=name), batch_pb2.Batch
        )
        return convert.batch(answer)

    @strawberry.field(description="The caller's batches, newest first (ListBatches).")
    async def batches(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> t.Connection[t.Batch] | None:
        size, token = _page(first, after)
        answer = await unary(
            info,
            B,
            "ListBatches",
            batch_pb2.ListBatchesRequest(page_size=size, page_token=token),
            batch_pb2.ListBatchesResponse,
        )
        return t.connection([convert.batch(b) for b in answer.batches], answer.next_page_token)

    @strawberry.field(
        description="The caller's webhook endpoints, oldest first (ListWebhookEndpoints)."
    )
    async def webhook_endpoints(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> t.Connection[t.WebhookEndpoint] | None:
        size, token = _page(first, after)
        answer = await unary(
            info,
            H,
            "ListWebhookEndpoints",
            webhooks_pb2.ListWebhookEndpointsRequest(page_size=size, page_token=token),
            webhooks_pb2.ListWebhookEndpointsResponse,
        )
        return t.connection(
            [convert.webhook_endpoint(e) for e in answer.webhook_endpoints],
            answer.next_page_token,
        )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Creates a withdrawal (CreateWithdrawal). Idempotent on `requestId`: the "
        "same input again answers the original withdrawal; another input under the key is "
        "ALREADY_EXISTS IDEMPOTENCY_KEY_REUSED."
    )
    async def create_withdrawal(
        self, info: Info, input: t.CreateWithdrawalInput, request_id: str
    ) -> t.Withdrawal | None:
        answer = await unary(
            info,
            W,
            "CreateWithdrawal",
            convert.create_request(input, request_id),
            withdrawal_pb2.Withdrawal,
            input_prefix="withdrawal",
        )
        return convert.withdrawal(answer)

    @strawberry.mutation(
        description="Cancels a withdrawal not yet placed in a payout transaction "
        "(CancelWithdrawal)."
    )
    async def cancel_withdrawal(
        self, info: Info, name: str, reason: str | None = None
    ) -> t.Withdrawal | None:
        answer = await unary(
            info,
            W,
            "CancelWithdrawal",
            withdrawal_pb2.CancelWithdrawalRequest(name=name, reason=reason or ""),
            withdrawal_pb2.Withdrawal,
        )
        return convert.withdrawal(answer)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The withdrawal now, then each change until a terminal state "
        "(WatchWithdrawal). `resumeAfterVersion` replays the changes after that version."
    )
    async def withdrawal_status(
        self, info: Info, name: str, resume_after_version: int | None = None
    ) -> AsyncGenerator[t.WithdrawalEvent, None]:
        request = withdrawal_pb2.WatchWithdrawalRequest(name=name)
        if resume_after_version is not None:
            request.resume_after_version = resume_after_version
        async for message in stream(
            info, W, "WatchWithdrawal", request, withdrawal_pb2.WatchWithdrawalResponse
        ):
            yield convert.event(message)
