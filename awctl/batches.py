"""`awctl batches`: upload a CSV batch over gRPC (BatchService.CreateBatch, a client stream),
follow it with WatchBatch until it is terminal, and save its report; get, list, report.

BatchService is the partners' API: it takes a partner API key (`--api-key`, `AWCTL_API_KEY`
or the stack file's `api_key`; `awctl.config.resolve_partner`), not an operator credential.

An upload's request_id is, unless `--request-id` gives one, derived from the file's SHA-256
and the policy, so uploading the same file again (a retry after a timeout, a second run of a
script) answers the same batch instead of creating another.

Imported at the end of `awctl.cli`, whose helpers it uses; it adds its command group to
`awctl.cli.app` itself."""

from __future__ import annotations

import csv
import enum
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from assetwithdrawal.withdrawal.v1 import batch_pb2, batch_pb2_grpc, withdrawal_pb2
from awctl import render
from awctl.cli import EXIT_API_ERROR, JsonFlag, Options, _pages, _usage, app
from awctl.client import ApiError, api_error
from awctl.config import Config, ConfigError, resolve_partner

batches_app = typer.Typer(
    help="CSV batches of withdrawals (the partners' BatchService; needs a partner API key).",
    no_args_is_help=True,
)
app.add_typer(batches_app, name="batches")

CHUNK_BYTES = 64 * 1024
"""Bytes per CreateBatch message."""
UPLOAD_TIMEOUT = 600.0
"""Seconds for the upload call (a large file is checked and stored before it answers)."""
REPORT_COLUMNS = (
    "line",
    "client_reference",
    "withdrawal",
    "state",
    "transaction_hash",
    "fee",
    "reason",
    "problems",
)
"""The report's CSV columns (the same as the REST report's `Accept: text/csv`)."""
TERMINAL = frozenset(
    {
        withdrawal_pb2.STATE_COMPLETED,
        withdrawal_pb2.STATE_FAILED,
        withdrawal_pb2.STATE_REJECTED,
        withdrawal_pb2.STATE_CANCELLED,
    }
)

Response = TypeVar("Response")


class Policy(enum.StrEnum):
    ACCEPT_VALID = "accept-valid"
    REJECT_ALL = "reject-all"

    @property
    def proto(self) -> batch_pb2.BatchPolicy.ValueType:
        return batch_pb2.BatchPolicy.Value(f"BATCH_POLICY_{self.name}")


ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="Partner API key (awk_…). Else $AWCTL_API_KEY, else the stack file's api_key.",
        show_default=False,
    ),
]


class BatchClient:
    """The BatchService stub with the partner's API key on every call."""

    def __init__(self, config: Config, channel: grpc.Channel, timeout: float) -> None:
        self.config = config
        self.stub = batch_pb2_grpc.BatchServiceStub(channel)
        self.metadata = (("authorization", f"Bearer {config.credential}"),)
        self.timeout = timeout

    def call(
        self, method: Callable[..., Response], request: Any, timeout: float | None = None
    ) -> Response:
        try:
            return method(request, metadata=self.metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            raise api_error(exc, self.config) from None

    def report(self, name: str) -> list[batch_pb2.BatchReportRow]:
        """Every row of the batch's report, page by page."""

        def fetch(token: str, size: int) -> tuple[list[Any], str]:
            page = self.call(
                self.stub.GetBatchReport,
                batch_pb2.GetBatchReportRequest(
                    name=f"{name}/report", page_size=size, page_token=token
                ),
            )
            return list(page.rows), page.next_page_token

        return _pages(fetch, 10**9)


@contextmanager
def _batch_client(ctx: typer.Context, api_key: str | None) -> Iterator[BatchClient]:
    options: Options = ctx.find_root().obj
    try:
        config = resolve_partner(options.target, api_key)
    except ConfigError as exc:
        _usage(str(exc))
    try:
        with grpc.insecure_channel(config.target) as channel:
            yield BatchClient(config, channel, options.timeout)
    except ApiError as exc:
        render.error(exc)
        raise typer.Exit(EXIT_API_ERROR) from None


def _batch_name(value: str) -> str:
    if value.startswith("batches/"):
        value = value.removeprefix("batches/")
    if not value or "/" in value:
        _usage(f"{value!r} is not a batch id nor `batches/<id>`")
    return f"batches/{value}"


def file_request_id(path: Path, policy: Policy) -> str:
    """`awctl-<SHA-256 of the file, 40 hex>-<policy>`: the same file and policy, the same key."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return f"awctl-{digest.hexdigest()[:40]}-{policy.value}"


def _messages(
    path: Path, header: batch_pb2.CreateBatchHeader
) -> Iterator[batch_pb2.CreateBatchRequest]:
    yield batch_pb2.CreateBatchRequest(header=header)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(CHUNK_BYTES), b""):
            yield batch_pb2.CreateBatchRequest(chunk=chunk)


# ---------------------------------------------------------------- rendering


def _state(value: int) -> str:
    return withdrawal_pb2.State.Name(value).removeprefix("STATE_") if value else ""  # type: ignore[arg-type]


def _batch_state(batch: batch_pb2.Batch) -> str:
    return batch_pb2.BatchState.Name(batch.state).removeprefix("BATCH_STATE_")


def _counts(batch: batch_pb2.Batch) -> str:
    return ", ".join(f"{_state(c.state)} {c.count}" for c in batch.state_counts)


def _totals(batch: batch_pb2.Batch) -> str:
    return ", ".join(f"{t.amount} {t.token} ({t.count})" for t in batch.token_totals)


def _funding(batch: batch_pb2.Batch) -> str:
    """Whether the vault covers the batch (CreateBatch's answer only)."""
    return ", ".join(
        f"{f.token}: covered"
        if not f.shortfall or f.shortfall == "0"
        else f"{f.token}: {f.payable} of {f.amount} payable now, short {f.shortfall} "
        f"({f.reason}; rows wait ON_HOLD until the vault can pay)"
        for f in batch.funding
    )


def _batch_fields(batch: batch_pb2.Batch) -> Any:
    funding = [("vault", _funding(batch))] if batch.funding else []
    return render.fields(
        batch.name,
        [
            ("state", _batch_state(batch)),
            (
                "policy",
                batch_pb2.BatchPolicy.Name(batch.policy).removeprefix("BATCH_POLICY_"),
            ),
            ("rows", str(batch.row_count)),
            ("accepted", str(batch.accepted_count)),
            ("rows with problems", str(batch.problem_row_count)),
            ("withdrawals", _counts(batch)),
            ("totals", _totals(batch)),
            *funding,
            ("request id", batch.request_id),
            ("sha-256", batch.content_sha256),
            ("created", render.when(batch.create_time)),
        ],
    )


def _problem_rows(rows: list[batch_pb2.BatchReportRow]) -> list[list[str]]:
    return [
        [str(r.line), p.column or "(row)", p.reason, p.message, r.client_reference]
        for r in rows
        for p in r.problems
    ]


def _print_problems(rows: list[batch_pb2.BatchReportRow], title: str) -> None:
    problems = _problem_rows(rows)
    if problems:
        render.stdout().print(
            render.table(
                title, ("line", "column", "reason", "message", "client reference"), problems
            )
        )


def write_report(rows: list[batch_pb2.BatchReportRow], out: Path) -> None:
    with out.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\r\n")
        writer.writerow(REPORT_COLUMNS)
        for r in rows:
            writer.writerow(
                (
                    str(r.line),
                    r.client_reference,
                    r.withdrawal,
                    _state(r.state),
                    r.transaction_hash,
                    r.fee,
                    r.reason,
                    "; ".join(f"{p.column}: {p.reason}: {p.message}" for p in r.problems),
                )
            )


def _watch(client: BatchClient, batch: batch_pb2.Batch, quiet: bool) -> batch_pb2.Batch:
    """Follow the batch with WatchBatch until it is terminal, as a progress bar of its rows
    in a terminal state; the last update."""
    last = batch
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=render.stderr(),
        disable=quiet,
    )
    with progress:
        task = progress.add_task(
            "withdrawals done", total=batch.accepted_count, counts=_counts(batch)
        )
        try:
            for update in client.stub.WatchBatch(
                batch_pb2.WatchBatchRequest(name=batch.name), metadata=client.metadata
            ):
                last = update
                done = sum(c.count for c in update.state_counts if c.state in TERMINAL)
                progress.update(task, completed=done, counts=_counts(update))
        except grpc.RpcError as exc:
            raise api_error(exc, client.config) from None
    return last


# ---------------------------------------------------------------- commands


@batches_app.command("upload")
def batches_upload(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(help="The CSV file.", exists=True, dir_okay=False, readable=True),
    ],
    policy: Annotated[
        Policy,
        typer.Option(help="reject-all: any bad row stores nothing; accept-valid: the good rows."),
    ] = Policy.REJECT_ALL,
    request_id: Annotated[
        str | None,
        typer.Option(
            help="Idempotency key (default: derived from the file's content and the policy, "
            "so uploading the same file again answers the same batch).",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Save the report as CSV here once the batch is terminal.", dir_okay=False
        ),
    ] = None,
    allow_duplicate: Annotated[
        bool,
        typer.Option(
            "--allow-duplicate", help="Upload content already accepted under another key."
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait", help="Follow the batch until every withdrawal is terminal."
        ),
    ] = True,
    as_json: JsonFlag = False,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload a CSV batch, follow it until every withdrawal is terminal, save its report.

    A file the gateway refuses (or, under reject-all, whose rows have problems) prints every
    problem as a table and exits 1; with --report the problems are saved too."""
    key = request_id or file_request_id(file, policy)
    header = batch_pb2.CreateBatchHeader(
        request_id=key, policy=policy.proto, allow_duplicate_content=allow_duplicate
    )
    with _batch_client(ctx, api_key) as client:
        try:
            batch = client.stub.CreateBatch(
                _messages(file, header), metadata=client.metadata, timeout=UPLOAD_TIMEOUT
            )
        except grpc.RpcError as exc:
            error = api_error(exc, client.config)
            rejected = error.metadata.get("batch") if error.reason == "BATCH_ROWS_INVALID" else None
            if rejected is None:
                raise error from None
            rows = client.report(rejected)
            if report is not None:
                write_report(rows, report)
            if as_json:
                render.print_json([render.as_dict(r) for r in rows])
            else:
                _print_problems(rows, f"{rejected}: nothing was stored (reject-all)")
            error.violations = []  # the table lists every one
            render.error(error)
            if report is not None:
                render.stderr().print(f"report saved to {report}")
            raise typer.Exit(EXIT_API_ERROR) from None
        if not as_json:
            render.stdout().print(_batch_fields(batch))
        if wait and batch.accepted_count:
            batch = _watch(client, batch, quiet=as_json)
        rows = client.report(batch.name) if (report is not None or not as_json) else []
        if as_json:
            render.print_json(render.as_dict(batch))
        else:
            _print_problems(rows, f"{batch.name}: rows not stored")
            typer.echo(f"{batch.name}: {_batch_state(batch)}; {_counts(batch) or 'no withdrawal'}")
        if report is not None:
            write_report(rows, report)
            render.stderr().print(f"report saved to {report}")


@batches_app.command("get")
def batches_get(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Batch id (or batches/<id>).")],
    as_json: JsonFlag = False,
    api_key: ApiKeyOption = None,
) -> None:
    """Show one batch: its state, counts and totals."""
    with _batch_client(ctx, api_key) as client:
        found = client.call(
            client.stub.GetBatch, batch_pb2.GetBatchRequest(name=_batch_name(batch))
        )
    if as_json:
        render.print_json(render.as_dict(found))
    else:
        render.stdout().print(_batch_fields(found))


@batches_app.command("list")
def batches_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 50,
    as_json: JsonFlag = False,
    api_key: ApiKeyOption = None,
) -> None:
    """The partner's batches, newest first."""
    with _batch_client(ctx, api_key) as client:

        def fetch(token: str, size: int) -> tuple[list[Any], str]:
            page = client.call(
                client.stub.ListBatches,
                batch_pb2.ListBatchesRequest(page_size=size, page_token=token),
            )
            return list(page.batches), page.next_page_token

        found = _pages(fetch, limit)
    if as_json:
        render.print_json({"batches": [render.as_dict(b) for b in found]})
        return
    render.stdout().print(
        render.table(
            "batches",
            ("batch", "state", "rows", "accepted", "problems", "withdrawals", "created"),
            [
                [
                    b.name,
                    _batch_state(b),
                    str(b.row_count),
                    str(b.accepted_count),
                    str(b.problem_row_count),
                    _counts(b),
                    render.when(b.create_time),
                ]
                for b in found
            ],
        )
    )


@batches_app.command("report")
def batches_report(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Batch id (or batches/<id>).")],
    out: Annotated[
        Path | None,
        typer.Option(help="Save the whole report as CSV here.", dir_okay=False),
    ] = None,
    as_json: JsonFlag = False,
    api_key: ApiKeyOption = None,
) -> None:
    """A batch's report: one row per line of the file (its withdrawal, or its problems)."""
    with _batch_client(ctx, api_key) as client:
        rows = client.report(_batch_name(batch))
    if out is not None:
        write_report(rows, out)
        render.stderr().print(f"report saved to {out} ({len(rows)} rows)")
    if as_json:
        render.print_json({"rows": [render.as_dict(r) for r in rows]})
    elif out is None:
        render.stdout().print(
            render.table(
                f"{_batch_name(batch)}/report",
                ("line", "client reference", "withdrawal", "state", "transaction", "problems"),
                [
                    [
                        str(r.line),
                        r.client_reference,
                        render.short(r.withdrawal),
                        _state(r.state),
                        r.transaction_hash,
                        "; ".join(f"{p.column or '(row)'}: {p.reason}" for p in r.problems),
                    ]
                    for r in rows
                ],
            )
        )
