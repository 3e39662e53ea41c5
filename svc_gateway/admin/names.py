"""The admin API's request fields: resource names, page sizes and tokens, request ids."""

from __future__ import annotations

import base64
import binascii
import json
import re

from svc_gateway.admin import changes
from svc_gateway.validation import REQUEST_ID
from withdrawal_shared.db.operators import OPERATOR_ID
from withdrawal_shared.errors import FieldViolation, invalid_argument, quoted
from withdrawal_shared.ids import is_ulid

DEFAULT_PAGE_SIZE = 50


MAX_PAGE_SIZE = 1000


CREDENTIAL_NAME = re.compile(r"^operators/([a-z][a-z0-9-]{1,62})/credentials/([0-9a-f]{8})$")


STATE_FILTER = re.compile(r"^\s*state\s*=\s*(?:STATE_)?([A-Z]+)\s*$")


def parse_operator_name(name: str, field: str = "name") -> str:
    operator_id = name.removeprefix("operators/")
    if operator_id == name or not OPERATOR_ID.match(operator_id):
        raise invalid_argument(
            [
                FieldViolation(
                    field, f"{quoted(name)} is not an operator name (operators/{{operator}})"
                )
            ]
        )
    return operator_id


def parse_change_name(name: str) -> str:
    change_id = name.removeprefix(changes.CHANGE_PREFIX)
    if change_id == name or not is_ulid(change_id):
        raise invalid_argument(
            [FieldViolation("name", f"{quoted(name)} is not a change name (changes/{{change}})")]
        )
    return change_id


def page_size(size: int) -> int:
    if size < 0:
        raise invalid_argument([FieldViolation("page_size", "must not be negative")])
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(after: str, filter_text: str = "") -> str:
    raw = json.dumps({"a": after, "f": filter_text}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, filter_text: str = "") -> str | None:
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, given = data["a"], data["f"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise invalid_argument(
            [FieldViolation("page_token", "is not a page token this API returned")]
        ) from None
    if given != filter_text or not isinstance(after, str):
        raise invalid_argument(
            [FieldViolation("page_token", "was issued for another filter; use the same one")]
        )
    return after


def request_id_field(value: str, field: str = "request_id") -> str:
    if value and not REQUEST_ID.match(value):
        raise invalid_argument(
            [
                FieldViolation(
                    field,
                    "must be 1-128 letters, digits and . _ : -, starting with a letter or digit",
                )
            ]
        )
    return value


def page_offset(after: str | None) -> int:
    if after is None:
        return 0
    if not after.isdigit():
        raise invalid_argument(
            [FieldViolation("page_token", "is not a page token this API returned")]
        )
    return int(after)


BLOCKED_PREFIX = "blockedAddresses/"


def parse_withdrawal_name(name: str) -> str:
    withdrawal_id = name.removeprefix("withdrawals/")
    if withdrawal_id == name or not is_ulid(withdrawal_id):
        raise invalid_argument(
            [
                FieldViolation(
                    "name", f"{quoted(name)} is not a withdrawal name (withdrawals/{{id}})"
                )
            ]
        )
    return withdrawal_id
