"""The text formats of string fields the protos only describe in comments, and examples.

`FIELD_FORMATS` maps a field's full name (`package.Message.field`) to its `FieldFormat`: the
REST transcoder says what is expected when a JSON body sends another type (an amount as a
JSON number), and the OpenAPI document gives the `pattern` and `example`. A value matching
the pattern can still be refused by validation (an amount of 0, more decimals than the token
has, a bad EIP-55 checksum); tests/unit/test_openapi.py checks the patterns against the
validators. `OPERATION_EXAMPLES` are the request and response examples of the OpenAPI document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.validation import REQUEST_ID


@dataclass(frozen=True)
class FieldFormat:
    """What a string field's text must look like: a regex, an example, and in words."""

    pattern: str
    example: str
    expected: str


DECIMAL = FieldFormat(
    pattern=r"^(0|[1-9][0-9]*)(\.[0-9]+)?$",
    example="12.5",
    expected='a decimal string such as "12.5"',
)
"""Money: a decimal string, never a JSON number (no float ever touches an amount)."""

ADDRESS = FieldFormat(
    pattern=r"^0x[0-9a-fA-F]{40}$",
    example="0x52908400098527886E0F7030069857D2E4169EE7",
    expected='a string of 0x and 40 hexadecimal digits such as "0x5290…69EE7"',
)
IDEMPOTENCY_KEY = FieldFormat(
    pattern=REQUEST_ID.pattern,
    example="3f2b8c1e-8d1a-4c51-9a7e-2f0c6d9b1a44",
    expected="1-128 characters of letters, digits and . _ : -, such as a UUID",
)
TRANSACTION_HASH = FieldFormat(
    pattern=r"^(0x[0-9a-fA-F]{64})?$",
    example="0x9c3f1b6a0e2d4c8b7a5f3e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b",
    expected="a string of 0x and 64 hexadecimal digits",
)

WITHDRAWAL_ID = FieldFormat(
    pattern=r"^[0-9a-hjkmnp-tv-z]{26}$",
    example="01j9zq8m5k3v7t2r4w6y8a0c1e",
    expected="a withdrawal id: 26 characters of lowercase Crockford base32 (a ULID)",
)

_W = "assetwithdrawal.withdrawal.v1.Withdrawal"
_V1 = "assetwithdrawal.withdrawal.v1"
FIELD_FORMATS: dict[str, FieldFormat] = {
    f"{_W}.amount": DECIMAL,
    f"{_W}.fee": DECIMAL,
    f"{_W}.recipient_address": ADDRESS,
    f"{_W}.transaction_hash": TRANSACTION_HASH,
    "assetwithdrawal.withdrawal.v1.CreateWithdrawalRequest.request_id": IDEMPOTENCY_KEY,
    "assetwithdrawal.webhooks.v1.CreateWebhookEndpointRequest.request_id": IDEMPOTENCY_KEY,
    "assetwithdrawal.admin.v1.CreateWebhookEndpointRequest.request_id": IDEMPOTENCY_KEY,
}

WEBHOOK_ENDPOINT_ID = FieldFormat(
    pattern=WITHDRAWAL_ID.pattern,
    example="01j9zq9x2b6c8d0e2f4g6h8j0k",
    expected="a webhook endpoint id: 26 characters of lowercase Crockford base32 (a ULID)",
)

SEGMENT_FORMATS: dict[str, FieldFormat] = {
    "withdrawals": WITHDRAWAL_ID,
    "batches": WITHDRAWAL_ID,
    "webhookEndpoints": WEBHOOK_ENDPOINT_ID,
}
"""The id segment of a resource name, by the collection before it (`withdrawals/{id}`): the
OpenAPI path parameter's `pattern`. Any other id is refused as INVALID_ARGUMENT."""

NON_NEGATIVE_FIELDS: frozenset[str] = frozenset(
    {
        f"{_V1}.ListWithdrawalsRequest.page_size",
        f"{_V1}.WatchWithdrawalRequest.resume_after_version",
        f"{_V1}.ListBatchesRequest.page_size",
        f"{_V1}.GetBatchReportRequest.page_size",
        "assetwithdrawal.webhooks.v1.ListWebhookEndpointsRequest.page_size",
        "assetwithdrawal.webhooks.v1.ListWebhookDeliveryAttemptsRequest.page_size",
        "assetwithdrawal.webhooks.v1.RotateWebhookSecretRequest.overlap_seconds",
        "assetwithdrawal.admin.v1.ListWebhookEndpointsRequest.page_size",
        "assetwithdrawal.admin.v1.ListWebhookDeliveryAttemptsRequest.page_size",
        "assetwithdrawal.admin.v1.RotateWebhookSecretRequest.overlap_seconds",
    }
)
"""Integer fields whose negative values are refused (OpenAPI: `minimum: 0`, or a digits-only
`pattern` for a 64-bit integer, which proto3 JSON writes as a string)."""


@dataclass(frozen=True)
class OperationExample:
    """An example request body and response body of one RPC, as proto3 JSON."""

    request: dict[str, Any]
    response: dict[str, Any]


def _withdrawal_example() -> dict[str, Any]:
    created = withdrawal_pb2.Withdrawal(
        name="withdrawals/01j9zq8m5k3v7t2r4w6y8a0c1e",
        client_reference="inv-77",
        chain="polygon",
        token="USDC",  # noqa: S106 - a token symbol, not a secret
        recipient_address=ADDRESS.example,
        amount=DECIMAL.example,
        priority=withdrawal_pb2.PRIORITY_STANDARD,
        state=withdrawal_pb2.STATE_RECEIVED,
        version=1,
    )
    created.create_time.FromJsonString("2024-05-01T12:00:00Z")
    created.update_time.FromJsonString("2024-05-01T12:00:00Z")
    return json_format.MessageToDict(created, always_print_fields_with_no_presence=True)


OPERATION_EXAMPLES: dict[str, OperationExample] = {
    "assetwithdrawal.withdrawal.v1.WithdrawalService.CreateWithdrawal": OperationExample(
        request={
            "token": "USDC",
            "recipientAddress": ADDRESS.example,
            "amount": DECIMAL.example,
            "clientReference": "inv-77",
            "priority": "PRIORITY_STANDARD",
        },
        response=_withdrawal_example(),
    ),
}
"""Request and response examples, by method full name."""
