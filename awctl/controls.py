"""`awctl keys`, `awctl pauses` and `awctl tokens`: partners' API keys, the payout kill switch
and token settings, over the AdminService's existing RPCs.

Imported at the end of `awctl.cli`, whose helpers it uses; it adds its command groups to
`awctl.cli.app` itself."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer
from google.protobuf import field_mask_pb2

from assetwithdrawal.admin.v1 import admin_pb2
from awctl import render
from awctl.cli import JsonFlag, _client, _show, _usage, app, list_all, show_created_secret

keys_app = typer.Typer(help="Partners' API keys for the withdrawal API.", no_args_is_help=True)
pauses_app = typer.Typer(help="The payout kill switch.", no_args_is_help=True)
tokens_app = typer.Typer(help="Tokens paid out, and their settings.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(pauses_app, name="pauses")
app.add_typer(tokens_app, name="tokens")

ONCE_ONLY_KEY_NOTICE = (
    "This is the only time the token is shown: the gateway keeps only its hash. Hand it to the "
    "partner now over a secure channel (never a chat or a ticket); if it is lost, revoke this "
    "key and create another."
)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


# ---------------------------------------------------------------- keys

KEY_COLUMNS = ("key", "scopes", "rate limit", "burst", "created", "last used", "revoked")


def _limit(key: admin_pb2.ApiKey, field: str) -> str:
    return str(getattr(key, field)) if key.HasField(field) else ""  # type: ignore[arg-type]


def key_row(key: admin_pb2.ApiKey) -> list[str]:
    return [
        key.prefix,
        " ".join(key.scopes),
        _limit(key, "rate_limit_per_second"),
        _limit(key, "rate_limit_burst"),
        render.when(key.create_time),
        render.when(key.last_use_time),
        render.when(key.revoke_time),
    ]


def key_fields(key: admin_pb2.ApiKey) -> Any:
    pairs = [
        ("prefix", key.prefix),
        ("scopes", " ".join(key.scopes)),
        ("rate limit per second", _limit(key, "rate_limit_per_second")),
        ("rate limit burst", _limit(key, "rate_limit_burst")),
        ("created", render.when(key.create_time)),
        ("last used", render.when(key.last_use_time)),
        ("revoked", render.when(key.revoke_time)),
    ]
    return render.fields(key.name, [(k, v) for k, v in pairs if v])


def _partner(value: str) -> str:
    """`acme` or `partners/acme` -> `partners/acme`."""
    partner = value.removeprefix("partners/")
    if not partner or "/" in partner:
        _usage(f"{value!r} is not a partner id nor `partners/<id>`")
    return f"partners/{partner}"


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    partner: Annotated[str, typer.Argument(help="Partner id (or partners/<id>).")],
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """List a partner's API keys, revoked ones too (never their tokens)."""
    parent = _partner(partner)
    with _client(ctx) as client:
        found: list[admin_pb2.ApiKey] = list_all(
            client, "ListApiKeys", admin_pb2.ListApiKeysRequest(parent=parent), "api_keys", limit
        )
    _show(
        {"apiKeys": [render.as_dict(k) for k in found]},
        as_json,
        render.table(f"API keys of {parent} ({len(found)})", KEY_COLUMNS, map(key_row, found)),
    )


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    partner: Annotated[str, typer.Argument(help="Partner id (or partners/<id>).")],
    scopes: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="A scope it grants (repeat for more): withdrawals:read, withdrawals:create, "
            "batches:create, webhooks:manage, emergency.",
            show_default=False,
        ),
    ],
    rate_limit: Annotated[
        int | None,
        typer.Option(
            help="Requests per second of this key alone (default: the partner's, else the "
            "gateway's).",
            min=1,
            show_default=False,
        ),
    ] = None,
    burst: Annotated[
        int | None,
        typer.Option(help="Requests it may send at once; needs --rate-limit.", min=1),
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option(help="Idempotency key (default: a fresh one).", show_default=False),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key for a partner and print its token, once."""
    if burst is not None and rate_limit is None:
        _usage("--burst needs --rate-limit")
    key = admin_pb2.ApiKey(scopes=list(dict.fromkeys(scopes)))
    if rate_limit is not None:
        key.rate_limit_per_second = rate_limit
    if burst is not None:
        key.rate_limit_burst = burst
    with _client(ctx) as client:
        request = admin_pb2.CreateApiKeyRequest(
            parent=_partner(partner), api_key=key, request_id=request_id or str(uuid.uuid4())
        )
        created = client.call(client.stub.CreateApiKey, request)
    err = render.stderr()
    if not created.token:
        err.print(
            "[yellow]warning:[/] this request id created the key earlier; its token cannot be "
            "shown again. Revoke it and create another if the token was lost."
        )
    show_created_secret(
        created,
        key_fields(created),
        f"Created {created.name}.",
        ("Token", created.token, ONCE_ONLY_KEY_NOTICE),
        as_json,
    )


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="partners/<partner>/apiKeys/awk_<8 hex>.")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke an API key: every gateway refuses it within moments."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "partners" or parts[2] != "apiKeys":
        _usage(
            f"{name!r} is not an API key name: partners/<partner>/apiKeys/<key>, the key being "
            "its prefix awk_<8 hex> (`awctl keys list PARTNER` shows it)"
        )
    with _client(ctx) as client:
        revoked = client.call(client.stub.RevokeApiKey, admin_pb2.RevokeApiKeyRequest(name=name))
    _show(render.as_dict(revoked), as_json, key_fields(revoked))


# ---------------------------------------------------------------- pauses

PAUSE_COLUMNS = ("scope", "paused", "reason", "by", "since")


def pause_row(pause: admin_pb2.PayoutPause) -> list[str]:
    return [
        pause.scope_key,
        _yes_no(pause.paused),
        pause.reason,
        pause.actor,
        render.when(pause.update_time),
    ]


def pause_fields(pause: admin_pb2.PayoutPause) -> Any:
    return render.fields(
        f"payout pause {pause.scope_key}",
        [
            ("paused", _yes_no(pause.paused)),
            ("reason", pause.reason),
            ("by", pause.actor),
            ("since", render.when(pause.update_time)),
        ],
    )


def _scope(chain: str | None, token: str | None) -> admin_pb2.PayoutScope:
    if token and not chain:
        _usage("--token needs --chain: a token is paused on one chain")
    return admin_pb2.PayoutScope(chain=chain or "", token=token or "")


ChainOption = Annotated[
    str | None,
    typer.Option(help="Only this chain, e.g. polygon (default: everything).", show_default=False),
]
TokenOption = Annotated[
    str | None,
    typer.Option(help="Only this token of --chain, e.g. USDC.", show_default=False),
]


def _list_pauses(client: Any, show_resumed: bool) -> list[admin_pb2.PayoutPause]:
    request = admin_pb2.ListPayoutPausesRequest(show_resumed=show_resumed)
    return list(client.call(client.stub.ListPayoutPauses, request).payout_pauses)


@pauses_app.command("list")
def pauses_list(
    ctx: typer.Context,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also the scopes paused once and resumed since.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """List the payout pauses in force, by scope (`*` is everything)."""
    with _client(ctx) as client:
        found = _list_pauses(client, show_all)
    title = f"payout pauses{'' if show_all else ' in force'} ({len(found)})"
    _show(
        {"payoutPauses": [render.as_dict(p) for p in found]},
        as_json,
        render.table(title, PAUSE_COLUMNS, map(pause_row, found)),
    )


@pauses_app.command("pause")
def pauses_pause(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="Why; shown in the list and the audit trail.")],
    chain: ChainOption = None,
    token: TokenOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Pause payouts: everything, one chain (--chain) or one token (--chain --token). No new
    payout is reserved in the scope from the moment it returns."""
    scope = _scope(chain, token)
    with _client(ctx) as client:
        request = admin_pb2.PausePayoutsRequest(scope=scope, reason=reason)
        pause = client.call(client.stub.PausePayouts, request)
    _show(render.as_dict(pause), as_json, pause_fields(pause))
    if not as_json and pause.reason != reason:
        render.stderr().print(
            "[yellow]note:[/] this scope was already paused; its first reason stays."
        )


@pauses_app.command("resume")
def pauses_resume(
    ctx: typer.Context,
    chain: ChainOption = None,
    token: TokenOption = None,
    all_scopes: Annotated[
        bool,
        typer.Option(
            "--all-scopes",
            help="Resume the pause of everything (scope `*`); required when neither --chain "
            "nor --token is given.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Resume payouts in a scope, named as it was paused. Resuming a chain does not resume a
    token of it paused on its own."""
    if all_scopes and (chain or token):
        _usage("--all-scopes resumes the pause of everything: give it alone, or --chain/--token")
    if not all_scopes and not chain and not token:
        _usage(
            "resuming the pause of everything (scope `*`) needs --all-scopes; to resume one "
            "chain or token give --chain (and --token)"
        )
    scope = _scope(chain, token)
    with _client(ctx) as client:
        request = admin_pb2.ResumePayoutsRequest(scope=scope)
        pause = client.call(client.stub.ResumePayouts, request)
        still = [p for p in _list_pauses(client, False) if p.paused] if not as_json else []
    _show(render.as_dict(pause), as_json, pause_fields(pause))
    if still:
        render.stderr().print(
            "[yellow]note:[/] still paused: "
            + ", ".join(p.scope_key for p in still)
            + " (a wider scope still paused keeps this one from paying)."
        )


# ---------------------------------------------------------------- tokens

TOKEN_COLUMNS = ("token", "contract", "decimals", "enabled", "max amount")


def token_row(token: admin_pb2.Token) -> list[str]:
    return [
        f"{token.chain}/{token.symbol}",
        token.contract_address,
        str(token.decimals),
        _yes_no(token.enabled),
        token.max_amount,
    ]


def _tokens(client: Any, chain: str, limit: int) -> list[admin_pb2.Token]:
    found: list[admin_pb2.Token] = list_all(
        client, "ListTokens", admin_pb2.ListTokensRequest(parent=f"chains/{chain}"), "tokens", limit
    )
    return found


@tokens_app.command("list")
def tokens_list(
    ctx: typer.Context,
    chain: Annotated[
        str | None, typer.Option(help="Only this chain (default: every chain).", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many.", min=1)] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """List the tokens paid out, by chain and symbol, with their settings."""
    with _client(ctx) as client:
        found = _tokens(client, chain or "-", limit)
    _show(
        {"tokens": [render.as_dict(t) for t in found]},
        as_json,
        render.table(f"tokens ({len(found)})", TOKEN_COLUMNS, map(token_row, found)),
    )


@tokens_app.command("update")
def tokens_update(
    ctx: typer.Context,
    chain: Annotated[str, typer.Argument(help="The chain, e.g. polygon.")],
    symbol: Annotated[str, typer.Argument(help="The token's symbol, e.g. USDC.")],
    enabled: Annotated[
        bool | None,
        typer.Option(
            "--enable/--disable",
            help="Accept new withdrawals of it, or not (disabling is not a pause: they are "
            "rejected TOKEN_DISABLED).",
            show_default=False,
        ),
    ] = None,
    max_amount: Annotated[
        str | None,
        typer.Option(
            help="Largest amount per withdrawal, in token units (e.g. 50000 or 2500.5).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Enable or disable a token, or change its maximum amount per withdrawal; shows it before
    and after. Every service applies it within about five seconds."""
    paths = []
    token = admin_pb2.Token(name=f"chains/{chain}/tokens/{symbol}")
    if enabled is not None:
        token.enabled = enabled
        paths.append("enabled")
    if max_amount is not None:
        token.max_amount = max_amount
        paths.append("max_amount")
    if not paths:
        _usage("nothing to update: give --enable/--disable and/or --max-amount")
    with _client(ctx) as client:
        before = next((t for t in _tokens(client, chain, 1000) if t.symbol == symbol), None)
        request = admin_pb2.UpdateTokenRequest(
            token=token, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        after = client.call(client.stub.UpdateToken, request)
    if as_json:
        render.print_json(
            {"before": render.as_dict(before) if before else None, "after": render.as_dict(after)}
        )
        return

    def settings(item: admin_pb2.Token | None) -> tuple[str, str]:
        if item is None:
            return "", ""
        return _yes_no(item.enabled), f"{item.max_amount} {item.symbol}"

    rows = list(zip(("enabled", "max amount"), settings(before), settings(after), strict=True))
    render.stdout().print(render.table(after.name, ("setting", "before", "after"), rows))
    if before is not None and render.as_dict(before) == render.as_dict(after):
        render.stderr().print("[yellow]note:[/] nothing changed: it already had these settings.")
