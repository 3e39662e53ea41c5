"""`awctl rules`: the approval rules, listed, and changed only under four eyes (the change
kinds `rule.upsert` and `rule.delete`, confirmed by another admin with `awctl changes
confirm`).

Imported at the end of `awctl.cli`, whose helpers it uses; it adds its command group to
`awctl.cli.app` itself."""

from __future__ import annotations

import enum
import json
import uuid
from typing import Annotated, Any

import typer
from google.protobuf import json_format, struct_pb2

from assetwithdrawal.admin.v1 import admin_pb2
from awctl import render
from awctl.cli import JsonFlag, _client, _usage, app, list_all
from awctl.client import AdminClient

rules_app = typer.Typer(help="Approval rules (changed under four eyes).", no_args_is_help=True)
app.add_typer(rules_app, name="rules")

RULE_COLUMNS = ("position", "rule", "action", "approvals", "enabled", "conditions")


class RuleAction(enum.StrEnum):
    AUTO_APPROVE = "AUTO_APPROVE"
    REQUIRE_APPROVALS = "REQUIRE_APPROVALS"
    REJECT = "REJECT"


def rule_dict(rule: admin_pb2.ApprovalRule) -> dict[str, Any]:
    """The rule as a `rule.upsert` payload carries it (snake_case; conditions unset left out)."""
    conditions = json_format.MessageToDict(rule.conditions, preserving_proto_field_name=True)
    return {
        "name": render.short(rule.name),
        "position": rule.position,
        "action": admin_pb2.ApprovalRule.Action.Name(rule.action).removeprefix("ACTION_"),
        "approvals_required": rule.approvals_required,
        "enabled": rule.enabled,
        "conditions": conditions,
    }


def _conditions_text(conditions: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in conditions.items()
    )


def rule_row(rule: admin_pb2.ApprovalRule) -> list[str]:
    value = rule_dict(rule)
    return [
        str(value["position"]),
        value["name"],
        value["action"],
        str(value["approvals_required"]) if value["approvals_required"] else "",
        "yes" if value["enabled"] else "no",
        _conditions_text(value["conditions"]) or "(any withdrawal)",
    ]


def _list_rules(client: AdminClient, limit: int = 10_000) -> list[admin_pb2.ApprovalRule]:
    found: list[admin_pb2.ApprovalRule] = list_all(
        client, "ListApprovalRules", admin_pb2.ListApprovalRulesRequest(), "approval_rules", limit
    )
    return found


@rules_app.command("list")
def rules_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many, by position.", min=1)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """List the approval rules by position, disabled ones too: the first enabled rule whose
    every condition holds decides a withdrawal."""
    with _client(ctx) as client:
        found = _list_rules(client, limit)
    if as_json:
        render.print_json({"approvalRules": [render.as_dict(r) for r in found]})
        return
    render.stdout().print(
        render.table(f"approval rules ({len(found)})", RULE_COLUMNS, map(rule_row, found))
    )


def _propose(
    client: AdminClient,
    kind: str,
    payload: dict[str, Any],
    request_id: str | None,
) -> admin_pb2.Change:
    body = struct_pb2.Struct()
    body.update(payload)
    request = admin_pb2.CreateChangeRequest(
        change=admin_pb2.Change(kind=kind, payload=body),
        request_id=request_id or str(uuid.uuid4()),
    )
    change: admin_pb2.Change = client.call(client.stub.CreateChange, request)
    return change


def _proposed(
    change: admin_pb2.Change,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    as_json: bool,
) -> None:
    if as_json:
        render.print_json({"change": render.as_dict(change), "before": before, "after": after})
        return
    out = render.stdout()
    out.print(render.change_fields(change))
    keys = list(dict.fromkeys([*(before or {}), *(after or {})]))

    def shown(value: dict[str, Any] | None, key: str) -> str:
        if value is None:
            return "(none)" if key == keys[0] else ""
        item = value.get(key)
        return _conditions_text(item or {}) if key == "conditions" else str(item)

    rows = [(key, shown(before, key), shown(after, key)) for key in keys]
    out.print(render.table(change.target, ("field", "now", "once confirmed"), rows))
    out.print(
        f"Proposed {change.name} ({change.kind}); nothing changes until another admin confirms "
        f"it with `awctl changes confirm {render.short(change.name)}`."
    )


RequestIdOption = Annotated[
    str | None,
    typer.Option(
        help="Idempotency key: repeat it to retry safely (default: a fresh one).",
        show_default=False,
    ),
]


@rules_app.command("propose-upsert")
def rules_propose_upsert(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The rule's name (a new one adds a rule).")],
    position: Annotated[
        int, typer.Option(help="Its place: lower positions are tried first.", min=0)
    ],
    action: Annotated[RuleAction, typer.Option(help="What it does with what it matches.")],
    approvals: Annotated[
        int,
        typer.Option(help="Distinct operators' approvals needed (REQUIRE_APPROVALS).", min=0),
    ] = 0,
    enabled: Annotated[
        bool, typer.Option("--enabled/--disabled", help="In force, or kept but skipped.")
    ] = True,
    token_symbol: Annotated[
        str | None, typer.Option(help="Condition: the token, e.g. USDC.", show_default=False)
    ] = None,
    min_amount: Annotated[
        str | None,
        typer.Option(
            help="Condition: amount at least this, in the token's BASE UNITS (1 USDC is 1000000).",
            show_default=False,
        ),
    ] = None,
    max_amount: Annotated[
        str | None,
        typer.Option(
            help="Condition: amount below this, in the token's BASE UNITS.", show_default=False
        ),
    ] = None,
    partner: Annotated[
        str | None, typer.Option(help="Condition: this partner.", show_default=False)
    ] = None,
    tier: Annotated[
        str | None, typer.Option(help="Condition: the partner's tier.", show_default=False)
    ] = None,
    first_payment: Annotated[
        bool | None,
        typer.Option(
            "--first-payment/--not-first-payment",
            help="Condition: no completed withdrawal of the partner to this address yet (or one).",
            show_default=False,
        ),
    ] = None,
    allowlisted: Annotated[
        bool | None,
        typer.Option(
            "--allowlisted/--not-allowlisted",
            help="Condition: the address is on the partner's allowlist (or not).",
            show_default=False,
        ),
    ] = None,
    velocity_hours: Annotated[
        int | None,
        typer.Option(help="Condition, with --velocity-min-count: window in hours.", min=1),
    ] = None,
    velocity_min_count: Annotated[
        int | None,
        typer.Option(help="Condition: at least this many to the address in the window.", min=1),
    ] = None,
    request_id: RequestIdOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Propose `rule.upsert`: add the rule NAME, or replace it whole (a condition not given is
    not checked). Another admin must confirm it before it is in force."""
    if action is RuleAction.REQUIRE_APPROVALS and approvals < 1:
        _usage("--action REQUIRE_APPROVALS needs --approvals N (at least 1)")
    if action is not RuleAction.REQUIRE_APPROVALS and approvals:
        _usage(f"--approvals is for REQUIRE_APPROVALS only, not {action.value}")
    if (velocity_hours is None) != (velocity_min_count is None):
        _usage("--velocity-hours and --velocity-min-count go together")
    given = {
        "token_symbol": token_symbol,
        "min_amount": min_amount,
        "max_amount": max_amount,
        "partner_id": partner,
        "tier": tier,
        "first_payment": first_payment,
        "allowlisted": allowlisted,
        "velocity_hours": velocity_hours,
        "velocity_min_count": velocity_min_count,
    }
    payload: dict[str, Any] = {
        "name": name,
        "position": position,
        "action": action.value,
        "approvals_required": approvals,
        "enabled": enabled,
        "conditions": {k: v for k, v in given.items() if v is not None},
    }
    with _client(ctx) as client:
        current = next((r for r in _list_rules(client) if render.short(r.name) == name), None)
        change = _propose(client, "rule.upsert", payload, request_id)
    before = rule_dict(current) if current is not None else None
    _proposed(change, before, payload, as_json)


@rules_app.command("propose-delete")
def rules_propose_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The rule's name (or approvalRules/<name>).")],
    request_id: RequestIdOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Propose `rule.delete`: remove the rule NAME. Another admin must confirm it."""
    name = name.removeprefix("approvalRules/")
    with _client(ctx) as client:
        current = next((r for r in _list_rules(client) if render.short(r.name) == name), None)
        if current is None:
            render.stderr().print(
                f"[yellow]warning:[/] there is no rule named {name!r} now; the change can be "
                "applied only if one exists when it is confirmed."
            )
        change = _propose(client, "rule.delete", {"name": name}, request_id)
    before = rule_dict(current) if current is not None else None
    _proposed(change, before, None, as_json)
