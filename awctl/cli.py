"""The typer commands. Exit status: 0 done, 1 the API refused or failed (or the gateway could
not be reached), 2 a usage error (bad arguments, nothing configured)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import grpc
import typer
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from assetwithdrawal.admin.v1 import admin_pb2
from awctl import render
from awctl.client import DEFAULT_TIMEOUT, AdminClient, ApiError, connect
from awctl.config import (
    CREDENTIAL_ENV,
    TARGET_ENV,
    Config,
    ConfigError,
    resolve,
    stack_json_path,
)

EXIT_API_ERROR = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="awctl",
    no_args_is_help=True,
    add_completion=False,
    # A bug's traceback must never print local variables: one of them holds the credential.
    pretty_exceptions_show_locals=False,
)
operators_app = typer.Typer(help="Operators and their roles.", no_args_is_help=True)
changes_app = typer.Typer(help="Changes under four eyes.", no_args_is_help=True)
credentials_app = typer.Typer(help="Operator credentials.", no_args_is_help=True)
audit_app = typer.Typer(help="The admin audit trail.", no_args_is_help=True)
approvals_app = typer.Typer(help="Withdrawals waiting for approval.", no_args_is_help=True)
blocklist_app = typer.Typer(help="The blocklist of recipients.", no_args_is_help=True)
tiers_app = typer.Typer(help="Limit tiers.", no_args_is_help=True)
app.add_typer(operators_app, name="operators")
app.add_typer(changes_app, name="changes")
app.add_typer(credentials_app, name="credentials")
app.add_typer(audit_app, name="audit")
app.add_typer(approvals_app, name="approvals")
app.add_typer(blocklist_app, name="blocklist")
app.add_typer(tiers_app, name="tiers")


@dataclass(frozen=True)
class Options:
    target: str | None
    credential: str | None
    timeout: float


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


@app.callback()
def main(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Option(
            help=f"Gateway gRPC address, HOST:PORT. Else ${TARGET_ENV}, else the stack file's "
            "grpc_target.",
            show_default=False,
        ),
    ] = None,
    credential: Annotated[
        str | None,
        typer.Option(
            help=f"Operator credential (awo_…). Else ${CREDENTIAL_ENV}, else the stack file's "
            "admin_credential.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per call.", min=0.1)] = DEFAULT_TIMEOUT,
) -> None:
    """Operate the asset withdrawal system through the gateway's AdminService.

    The stack file is $AWCTL_STACK_JSON, else var/stack.json (written by `make up`).
    """
    ctx.obj = Options(target, credential, timeout)


def _usage(message: str) -> NoReturn:
    render.usage(message)
    raise typer.Exit(EXIT_USAGE)


def _config(ctx: typer.Context) -> Config:
    options: Options = ctx.find_root().obj
    try:
        return resolve(options.target, options.credential)
    except ConfigError as exc:
        _usage(str(exc))


@contextmanager
def _client(ctx: typer.Context) -> Iterator[AdminClient]:
    config = _config(ctx)
    options: Options = ctx.find_root().obj
    try:
        with connect(config, options.timeout) as client:
            yield client
    except ApiError as exc:
        render.error(exc)
        raise typer.Exit(EXIT_API_ERROR) from None


def _name(collection: str, value: str) -> str:
    """`alice` or `operators/alice` -> `operators/alice`."""
    if value.startswith(f"{collection}/"):
        return value
    if "/" in value or not value:
        _usage(f"{value!r} is not a {collection[:-1]} id nor `{collection}/<id>`")
    return f"{collection}/{value}"


def _pages(fetch: Callable[[str, int], tuple[list[Any], str]], limit: int) -> list[Any]:
    items: list[Any] = []
    token = ""
    while len(items) < limit:
        page, token = fetch(token, min(limit - len(items), 1000))
        items.extend(page)
        if not token:
            break
    return items[:limit]


def list_all(
    client: AdminClient, method: str, request: Message, field: str, limit: int
) -> list[Any]:
    """Up to `limit` items of a List RPC (`client.stub.<method>`), following its pages: each
    page asks for the items still wanted (at most 1000) with `request`'s other fields."""

    def fetch(token: str, size: int) -> tuple[list[Any], str]:
        page = type(request)()
        page.CopyFrom(request)
        page.page_size = size  # type: ignore[attr-defined]
        page.page_token = token  # type: ignore[attr-defined]
        response = client.call(getattr(client.stub, method), page)
        return list(getattr(response, field)), response.next_page_token

    return _pages(fetch, limit)


def show_created_secret(
    created: Message,
    fields: Any,
    summary: str,
    secret: tuple[str, str, str],
    as_json: bool,
) -> None:
    """A created resource whose secret (`secret`: its label, value and the warning to print)
    is in this response only: its fields, then the secret on a line of its own, written
    plainly and never wrapped so that it can be copied whole."""
    label, value, notice = secret
    if as_json:
        render.print_json(render.as_dict(created))
    else:
        render.stdout().print(fields)
        typer.echo(summary)
        if value:
            typer.echo(f"{label}, shown this once:")
            typer.echo(value)
    if value:
        render.stderr().print(f"[bold yellow]warning:[/] {notice}")


def _show(value: Any, as_json: bool, table: Any) -> None:
    if as_json:
        render.print_json(value)
    else:
        render.stdout().print(table)


# ---------------------------------------------------------------- config


@app.command("config")
def show_config(ctx: typer.Context) -> None:
    """Show the target and credential (by prefix) awctl would use, and where each comes from."""
    config = _config(ctx)
    render.stdout().print(
        render.fields(
            "awctl configuration",
            [
                ("target", f"{config.target}  (from {config.target_source})"),
                ("credential", f"{config.shown_credential}  (from {config.credential_source})"),
                ("stack file", str(stack_json_path())),
            ],
        )
    )


# ---------------------------------------------------------------- operators


@operators_app.command("list")
def operators_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many.", min=1)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """List the operators, by id."""
    with _client(ctx) as client:
        found: list[admin_pb2.Operator] = list_all(
            client, "ListOperators", admin_pb2.ListOperatorsRequest(), "operators", limit
        )
    _show(
        {"operators": [render.as_dict(op) for op in found]},
        as_json,
        render.table(
            f"operators ({len(found)})", render.OPERATOR_COLUMNS, map(render.operator_row, found)
        ),
    )


@operators_app.command("get")
def operators_get(
    ctx: typer.Context,
    operator: Annotated[str, typer.Argument(help="Operator id (or operators/<id>).")],
    as_json: JsonFlag = False,
) -> None:
    """Show one operator."""
    with _client(ctx) as client:
        request = admin_pb2.GetOperatorRequest(name=_name("operators", operator))
        found = client.call(client.stub.GetOperator, request)
    _show(render.as_dict(found), as_json, render.operator_fields(found))


# ---------------------------------------------------------------- changes


class ChangeState(enum.StrEnum):
    proposed = "proposed"
    applied = "applied"
    rejected = "rejected"
    expired = "expired"


class RoleName(enum.StrEnum):
    viewer = "viewer"
    operator = "operator"
    approver = "approver"
    admin = "admin"


@changes_app.command("list")
def changes_list(
    ctx: typer.Context,
    state: Annotated[
        ChangeState | None, typer.Option(help="Only changes in this state.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List changes, newest first."""
    query = f"state = {state.value.upper()}" if state else ""
    with _client(ctx) as client:
        found: list[admin_pb2.Change] = list_all(
            client, "ListChanges", admin_pb2.ListChangesRequest(filter=query), "changes", limit
        )
    title = f"changes{f' {state.value}' if state else ''} ({len(found)})"
    _show(
        {"changes": [render.as_dict(c) for c in found]},
        as_json,
        render.table(title, render.CHANGE_COLUMNS, map(render.change_row, found)),
    )


@changes_app.command("get")
def changes_get(
    ctx: typer.Context,
    change: Annotated[str, typer.Argument(help="Change id (or changes/<id>).")],
    as_json: JsonFlag = False,
) -> None:
    """Show one change, with its payload."""
    with _client(ctx) as client:
        found = client.call(
            client.stub.GetChange, admin_pb2.GetChangeRequest(name=_name("changes", change))
        )
    _show(render.as_dict(found), as_json, render.change_fields(found))


@changes_app.command("propose-operator")
def changes_propose_operator(
    ctx: typer.Context,
    operator: Annotated[str, typer.Argument(help="Operator id.")],
    roles: Annotated[list[RoleName], typer.Argument(help="The roles it should hold.")],
    display_name: Annotated[
        str | None,
        typer.Option(help="Human-readable name (new operators only).", show_default=False),
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option(
            help="Idempotency key: repeat it to retry safely (default: a fresh one).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Propose an operator with these roles: `operator.create` when it does not exist yet,
    else `operator.set_roles`. Another admin must confirm it."""
    name = _name("operators", operator)
    with _client(ctx) as client:
        try:
            client.call(client.stub.GetOperator, admin_pb2.GetOperatorRequest(name=name))
            exists = True
        except ApiError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            exists = False
        if exists and display_name is not None:
            _usage(f"{name} exists: --display-name applies only to a new operator")
        payload: dict[str, Any] = {
            "operator": name.removeprefix("operators/"),
            "roles": [role.value for role in dict.fromkeys(roles)],
        }
        if display_name is not None:
            payload["display_name"] = display_name
        body = struct_pb2.Struct()
        body.update(payload)
        kind = "operator.set_roles" if exists else "operator.create"
        request = admin_pb2.CreateChangeRequest(
            change=admin_pb2.Change(kind=kind, payload=body),
            request_id=request_id or str(uuid.uuid4()),
        )
        change = client.call(client.stub.CreateChange, request)
    if as_json:
        render.print_json(render.as_dict(change))
        return
    out = render.stdout()
    out.print(render.change_fields(change))
    out.print(
        f"Proposed {change.name} ({kind}). Another admin confirms it with "
        f"`awctl changes confirm {render.short(change.name)}`."
    )


@changes_app.command("propose-rotation")
def changes_propose_rotation(
    ctx: typer.Context,
    chain: Annotated[str, typer.Argument(help="Chain name, e.g. polygon.")],
    wallet: Annotated[str, typer.Argument(help="The hot wallet whose key is rotated (0x...).")],
    gas_wei: Annotated[
        str, typer.Argument(help="Native gas the treasury Safe sends the new wallet, in wei.")
    ],
    request_id: Annotated[
        str | None,
        typer.Option(
            help="Idempotency key: repeat it to retry safely (default: a fresh one).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Propose `hot_wallet.rotate`: a new key for the wallet, made operator and funded by the
    treasury Safe, the old key drained, swept and retired. Another admin must confirm it;
    `awctl changes get <id>` then shows each step."""
    body = struct_pb2.Struct()
    body.update({"chain": chain, "wallet": wallet, "gas_wei": gas_wei})
    request = admin_pb2.CreateChangeRequest(
        change=admin_pb2.Change(kind="hot_wallet.rotate", payload=body),
        request_id=request_id or str(uuid.uuid4()),
    )
    with _client(ctx) as client:
        change = client.call(client.stub.CreateChange, request)
    if as_json:
        render.print_json(render.as_dict(change))
        return
    out = render.stdout()
    out.print(render.change_fields(change))
    out.print(
        f"Proposed {change.name} (hot_wallet.rotate). Another admin confirms it with "
        f"`awctl changes confirm {render.short(change.name)}`."
    )


@changes_app.command("confirm")
def changes_confirm(
    ctx: typer.Context,
    change: Annotated[str, typer.Argument(help="Change id (or changes/<id>).")],
    as_json: JsonFlag = False,
) -> None:
    """Confirm another admin's change and apply it."""
    with _client(ctx) as client:
        request = admin_pb2.ConfirmChangeRequest(name=_name("changes", change))
        found = client.call(client.stub.ConfirmChange, request)
    _show(render.as_dict(found), as_json, render.change_fields(found))


@changes_app.command("reject")
def changes_reject(
    ctx: typer.Context,
    change: Annotated[str, typer.Argument(help="Change id (or changes/<id>).")],
    reason: Annotated[
        str, typer.Option(help="Why; recorded on the change and in the audit trail.")
    ] = "",
    as_json: JsonFlag = False,
) -> None:
    """Reject a proposed change (the proposer may withdraw its own); it never takes effect."""
    with _client(ctx) as client:
        request = admin_pb2.RejectChangeRequest(name=_name("changes", change), reason=reason)
        found = client.call(client.stub.RejectChange, request)
    _show(render.as_dict(found), as_json, render.change_fields(found))


# ---------------------------------------------------------------- credentials


ONCE_ONLY_NOTICE = (
    "This is the only time the secret is shown: the gateway keeps only its hash. Store it now "
    "(a secret manager, not a shell history); if it is lost, revoke this credential and create "
    "another."
)


@credentials_app.command("create")
def credentials_create(
    ctx: typer.Context,
    operator: Annotated[str, typer.Argument(help="Operator id (or operators/<id>).")],
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    request_id: Annotated[
        str | None,
        typer.Option(help="Idempotency key (default: a fresh one).", show_default=False),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a credential for an operator and print its secret, once."""
    with _client(ctx) as client:
        request = admin_pb2.CreateOperatorCredentialRequest(
            parent=_name("operators", operator),
            credential=admin_pb2.OperatorCredential(description=description),
            request_id=request_id or str(uuid.uuid4()),
        )
        created = client.call(client.stub.CreateOperatorCredential, request)
    err = render.stderr()
    if not created.secret:
        err.print(
            "[yellow]warning:[/] this request id created the credential earlier; its secret "
            "cannot be shown again. Revoke it and create another if the secret was lost."
        )
    show_created_secret(
        created,
        render.credential_fields(created),
        f"Created {created.name} ({created.prefix}).",
        ("Secret", created.secret, ONCE_ONLY_NOTICE),
        as_json,
    )


@credentials_app.command("revoke")
def credentials_revoke(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="operators/<operator>/credentials/<8 hex of its prefix>.")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Revoke an operator credential; it stops working at once."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "operators" or parts[2] != "credentials":
        _usage(
            f"{name!r} is not a credential name: operators/<operator>/credentials/<id>, the id "
            "being the 8 hex digits after awo_ in its prefix"
        )
    with _client(ctx) as client:
        request = admin_pb2.RevokeOperatorCredentialRequest(name=name)
        revoked = client.call(client.stub.RevokeOperatorCredential, request)
    _show(render.as_dict(revoked), as_json, render.credential_fields(revoked))


# ---------------------------------------------------------------- audit


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List the admin audit trail, newest first."""
    with _client(ctx) as client:
        found: list[admin_pb2.AdminAuditEntry] = list_all(
            client,
            "ListAdminAuditEntries",
            admin_pb2.ListAdminAuditEntriesRequest(),
            "admin_audit_entries",
            limit,
        )
    _show(
        {"adminAuditEntries": [render.as_dict(e) for e in found]},
        as_json,
        render.table(
            f"admin audit trail ({len(found)}, newest first)",
            render.AUDIT_COLUMNS,
            map(render.audit_row, found),
        ),
    )


# ---------------------------------------------------------------- approvals


@approvals_app.command("list")
def approvals_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many, oldest first.", min=1)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """List the withdrawals waiting for approval, oldest first."""
    with _client(ctx) as client:
        found: list[admin_pb2.PendingApproval] = list_all(
            client,
            "ListPendingApprovals",
            admin_pb2.ListPendingApprovalsRequest(),
            "pending_approvals",
            limit,
        )
    _show(
        {"pendingApprovals": [render.as_dict(p) for p in found]},
        as_json,
        render.table(
            f"pending approvals ({len(found)})",
            render.PENDING_COLUMNS,
            map(render.pending_row, found),
        ),
    )


def _decided(decision: admin_pb2.ApprovalDecision, as_json: bool) -> None:
    if as_json:
        render.print_json(render.as_dict(decision))
        return
    render.stdout().print(render.decision_fields(decision))
    if not decision.counted:
        render.stderr().print(
            "[yellow]note:[/] your approval was already recorded; it counts once."
        )


@approvals_app.command("approve")
def approvals_approve(
    ctx: typer.Context,
    withdrawal: Annotated[str, typer.Argument(help="Withdrawal id (or withdrawals/<id>).")],
    reason: Annotated[str, typer.Option(help="Why; recorded with the decision.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Approve a withdrawal; it is queued once enough distinct operators approved."""
    with _client(ctx) as client:
        request = admin_pb2.ApproveWithdrawalRequest(
            name=_name("withdrawals", withdrawal), reason=reason
        )
        decision = client.call(client.stub.ApproveWithdrawal, request)
    _decided(decision, as_json)


@approvals_app.command("reject")
def approvals_reject(
    ctx: typer.Context,
    withdrawal: Annotated[str, typer.Argument(help="Withdrawal id (or withdrawals/<id>).")],
    reason: Annotated[str, typer.Option(help="Why; recorded with the decision.")],
    as_json: JsonFlag = False,
) -> None:
    """Reject a withdrawal waiting for approval; nothing is paid."""
    with _client(ctx) as client:
        request = admin_pb2.RejectWithdrawalRequest(
            name=_name("withdrawals", withdrawal), reason=reason
        )
        decision = client.call(client.stub.RejectWithdrawal, request)
    _decided(decision, as_json)


def _batch_decided(decision: admin_pb2.BatchApprovalDecision, as_json: bool) -> None:
    if as_json:
        render.print_json(render.as_dict(decision))
        return
    render.stdout().print(render.batch_decision_fields(decision))


@approvals_app.command("approve-batch")
def approvals_approve_batch(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Batch id (or batches/<id>).")],
    reason: Annotated[str, typer.Option(help="Why; recorded with each row's decision.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Approve every withdrawal of a batch waiting for approval, as one decision; each is
    queued once enough distinct operators approved it."""
    with _client(ctx) as client:
        request = admin_pb2.ApproveBatchRequest(name=_name("batches", batch), reason=reason)
        decision = client.call(client.stub.ApproveBatch, request)
    _batch_decided(decision, as_json)


@approvals_app.command("reject-batch")
def approvals_reject_batch(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Batch id (or batches/<id>).")],
    reason: Annotated[str, typer.Option(help="Why; recorded with each row's decision.")],
    as_json: JsonFlag = False,
) -> None:
    """Reject every withdrawal of a batch waiting for approval; none of them is paid."""
    with _client(ctx) as client:
        request = admin_pb2.RejectBatchRequest(name=_name("batches", batch), reason=reason)
        decision = client.call(client.stub.RejectBatch, request)
    _batch_decided(decision, as_json)


# ---------------------------------------------------------------- blocklist


@blocklist_app.command("list")
def blocklist_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many, by address.", min=1)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """List the blocked addresses."""
    with _client(ctx) as client:
        found: list[admin_pb2.BlockedAddress] = list_all(
            client,
            "ListBlockedAddresses",
            admin_pb2.ListBlockedAddressesRequest(),
            "blocked_addresses",
            limit,
        )
    _show(
        {"blockedAddresses": [render.as_dict(b) for b in found]},
        as_json,
        render.table(
            f"blocked addresses ({len(found)})",
            render.BLOCKED_COLUMNS,
            map(render.blocked_row, found),
        ),
    )


@blocklist_app.command("add")
def blocklist_add(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="The address, 0x-hex.")],
    reason: Annotated[str, typer.Option(help="Why (e.g. the sanctions list entry).")],
    as_json: JsonFlag = False,
) -> None:
    """Block an address: withdrawals to it are rejected from now on."""
    with _client(ctx) as client:
        request = admin_pb2.BlockAddressRequest(address=address, reason=reason)
        blocked = client.call(client.stub.BlockAddress, request)
    _show(render.as_dict(blocked), as_json, render.blocked_fields(blocked))


@blocklist_app.command("remove")
def blocklist_remove(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="The address, 0x-hex.")],
    as_json: JsonFlag = False,
) -> None:
    """Take an address off the blocklist."""
    name = address if address.startswith("blockedAddresses/") else f"blockedAddresses/{address}"
    with _client(ctx) as client:
        request = admin_pb2.UnblockAddressRequest(name=name)
        result = client.call(client.stub.UnblockAddress, request)
    if as_json:
        render.print_json(render.as_dict(result))
    elif result.was_blocked:
        render.stdout().print(f"Unblocked {result.address}.")
    else:
        render.stdout().print(f"{result.address} was not blocked; nothing changed.")


# ---------------------------------------------------------------- tiers


@tiers_app.command("list")
def tiers_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the tiers with their limits per token."""
    with _client(ctx) as client:
        response = client.call(client.stub.ListTiers, admin_pb2.ListTiersRequest())
    _show(
        {"tiers": [render.as_dict(t) for t in response.tiers]},
        as_json,
        render.table(
            f"tiers ({len(response.tiers)})",
            render.TIER_COLUMNS,
            [row for tier in response.tiers for row in render.tier_rows(tier)],
        ),
    )


@changes_app.command("propose-tier-limits")
def changes_propose_tier_limits(
    ctx: typer.Context,
    tier: Annotated[str, typer.Argument(help="The tier, e.g. standard.")],
    token: Annotated[str, typer.Argument(help="The token symbol, e.g. USDC.")],
    per_withdrawal: Annotated[
        str | None,
        typer.Option(help="Largest amount of one withdrawal (token units).", show_default=False),
    ] = None,
    daily_amount: Annotated[
        str | None,
        typer.Option(help="Most per user in any 24 hours (token units).", show_default=False),
    ] = None,
    daily_count: Annotated[
        int | None,
        typer.Option(help="Most withdrawals per user in any 24 hours.", min=0, show_default=False),
    ] = None,
    chain: Annotated[str, typer.Option(help="The token's chain.")] = "polygon",
    request_id: Annotated[
        str | None,
        typer.Option(help="Idempotency key (default: a fresh one).", show_default=False),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Propose `tier.set_limits`: replace TIER's limits for TOKEN (an omitted limit is none).
    Another admin must confirm it."""
    payload: dict[str, Any] = {"tier": tier, "token": token, "chain": chain}
    if per_withdrawal is not None:
        payload["per_withdrawal_max"] = per_withdrawal
    if daily_amount is not None:
        payload["daily_amount"] = daily_amount
    if daily_count is not None:
        payload["daily_count"] = daily_count
    body = struct_pb2.Struct()
    body.update(payload)
    with _client(ctx) as client:
        request = admin_pb2.CreateChangeRequest(
            change=admin_pb2.Change(kind="tier.set_limits", payload=body),
            request_id=request_id or str(uuid.uuid4()),
        )
        change = client.call(client.stub.CreateChange, request)
    if as_json:
        render.print_json(render.as_dict(change))
        return
    out = render.stdout()
    out.print(render.change_fields(change))
    out.print(
        f"Proposed {change.name} (tier.set_limits). Another admin confirms it with "
        f"`awctl changes confirm {render.short(change.name)}`."
    )


# ---------------------------------------------------------------- command groups of their own

# Each adds itself to `app`, using the helpers above: batches; keys, pauses, tokens; rules.
from awctl import batches, controls, rules  # noqa: E402, F401
