"""Every ErrorInfo reason is declared once, carries the product's domain, and is documented."""

from __future__ import annotations

import ast
from pathlib import Path

from google.api import resource_pb2
from google.rpc import error_details_pb2

import svc_gateway.errors as gateway_errors
import withdrawal_shared.errors as shared_errors
from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from svc_gateway.errors import METHOD_ERRORS
from withdrawal_shared.errors import (
    ERROR_DOMAIN,
    ApiError,
    Code,
    ErrorReason,
    FieldViolation,
    invalid_argument,
    not_found,
)

ROOT = Path(__file__).resolve().parents[2]


def error_info(err: ApiError) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert err.to_status().details[0].Unpack(info)
    return info


def test_error_domain_is_the_product_domain() -> None:
    assert ERROR_DOMAIN == "withdrawals.assetwithdrawal.dev"
    assert "example" not in ERROR_DOMAIN
    for err in (not_found("withdrawals/x"), invalid_argument([FieldViolation("a", "b")])):
        assert error_info(err).domain == ERROR_DOMAIN


def test_resource_types_use_the_error_domain() -> None:
    """AIP-123: a resource type is `{service name}/{Type}`, the same name as ErrorInfo's."""
    options = withdrawal_pb2.Withdrawal.DESCRIPTOR.GetOptions()
    resource = options.Extensions[resource_pb2.resource]
    assert resource.type == f"{ERROR_DOMAIN}/Withdrawal"
    name = withdrawal_pb2.GetWithdrawalRequest.DESCRIPTOR.fields_by_name["name"]
    reference = name.GetOptions().Extensions[resource_pb2.resource_reference]
    assert reference.type == resource.type
    proto = (ROOT / "proto/assetwithdrawal/withdrawal/v1/withdrawal.proto").read_text()
    assert "example.com" not in proto


def test_error_domain_is_defined_once() -> None:
    """No other source spells a domain of its own."""
    for path in [*ROOT.glob("svc_*/**/*.py"), *ROOT.glob("withdrawal_shared/*.py")]:
        text = path.read_text()
        assert "example.com" not in text, path
        if path.name != "errors.py" or path.parent.name != "withdrawal_shared":
            assert ERROR_DOMAIN not in text, path


def _literal_reasons(path: Path) -> list[str]:
    """String literals given as an ErrorInfo reason: `ApiError(code, "X", ...)`,
    `checks.bad(field, text, "X")` or `invalid_argument(..., reason="X")`."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        args = list(node.args)
        if name == "ApiError" and len(args) > 1 and isinstance(args[1], ast.Constant):
            found.append(f"{path.name}: ApiError {args[1].value!r}")
        if name == "bad" and len(args) > 2 and isinstance(args[2], ast.Constant):
            found.append(f"{path.name}: bad {args[2].value!r}")
        for kw in node.keywords:
            if (
                name == "invalid_argument"
                and kw.arg == "reason"
                and isinstance(kw.value, ast.Constant)
            ):
                found.append(f"{path.name}: reason={kw.value.value!r}")
    return found


def test_gateway_code_raises_only_declared_reasons() -> None:
    literals = [hit for path in ROOT.glob("svc_gateway/**/*.py") for hit in _literal_reasons(path)]
    assert literals == []


def test_every_declared_reason_is_listed_for_some_method() -> None:
    declared = {
        value.reason
        for module in (gateway_errors, shared_errors)
        for value in vars(module).values()
        if isinstance(value, ErrorReason)
    }
    listed = {reason.reason for reasons in METHOD_ERRORS.values() for reason in reasons}
    # Transport errors about a URL that matches no operation are not an operation's, nor is
    # the portal's refusal of a request without its CSRF token.
    assert declared - listed == {"METHOD_NOT_ALLOWED", "CSRF_TOKEN_INVALID"}
    for reasons in METHOD_ERRORS.values():
        assert {"INVALID_ARGUMENT", "UNAUTHENTICATED", "INTERNAL", "UNAVAILABLE"} <= {
            r.reason for r in reasons
        }


def test_reason_error_carries_code_and_http_status() -> None:
    err = gateway_errors.BODY_TOO_LARGE.error("too big", [FieldViolation("body", "is big")])
    assert (err.code, err.reason, err.http_status) == (Code.INVALID_ARGUMENT, "BODY_TOO_LARGE", 413)
    assert gateway_errors.BODY_TOO_LARGE.status == 413
    assert gateway_errors.IDEMPOTENCY_KEY_REUSED.status == 409
    assert not_found("x").http_status is None


def test_with_field_names_renames_violations_and_the_listing_message() -> None:
    err = invalid_argument(
        [
            FieldViolation("withdrawal.recipient_address", "is bad"),
            FieldViolation("request_id", "x"),
        ]
    )
    plain = err.with_field_names(str.upper)
    assert [v.field for v in plain.field_violations] == [
        "WITHDRAWAL.RECIPIENT_ADDRESS",
        "REQUEST_ID",
    ]
    assert "WITHDRAWAL.RECIPIENT_ADDRESS: is bad; REQUEST_ID: x" in plain.message
    assert "recipient_address" in err.message  # the original is unchanged
    custom = ApiError(Code.INVALID_ARGUMENT, "X", "own words", (FieldViolation("a", "b"),))
    assert custom.with_field_names(str.upper).message == "own words"
    assert not_found("x").with_field_names(str.upper) == not_found("x")


def test_every_signer_reason_is_documented_in_its_module_and_the_operations_guide() -> None:
    """The signer's reasons (`svc_signer.reasons.Reason`) are each named in the module
    docstring of the policy that raises them and are exactly the rows of the operations
    guide's 'Signer refusals' table."""
    import svc_signer.core as signer_core
    from svc_signer import safe_owner
    from svc_signer.reasons import Reason
    from tests.docs import scan

    documented = f"{signer_core.__doc__}\n{safe_owner.__doc__}"
    undocumented = [reason.value for reason in Reason if reason.value not in documented]
    assert undocumented == [], "name them in svc_signer/core.py or svc_signer/safe_owner.py"
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    rows = scan.first_column_names(scan.section(guide, "Signer refusals"))
    assert sorted(rows) == sorted(reason.value for reason in Reason)
    assert len(rows) == len(set(rows))
