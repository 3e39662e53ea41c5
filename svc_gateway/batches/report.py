"""A batch as its API message, and its report's rows (protobuf and CSV)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence

from google.protobuf import timestamp_pb2

from assetwithdrawal.withdrawal.v1 import batch_pb2, withdrawal_pb2
from svc_gateway.batches.funding import Funding
from withdrawal_shared.amounts import format_amount
from withdrawal_shared.db.models import Batch, BatchProblem, Withdrawal
from withdrawal_shared.db.reference import ReferenceData
from withdrawal_shared.states import TERMINAL, State

BATCH_PREFIX = "batches/"
CSV_COLUMNS = (
    "line",
    "client_reference",
    "withdrawal",
    "state",
    "transaction_hash",
    "fee",
    "reason",
    "problems",
)


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.replace(tzinfo=dt.UTC))
    return ts


def batch_state(batch: Batch, states: dict[str, int]) -> int:
    if batch.state == "REJECTED":
        return batch_pb2.BATCH_STATE_REJECTED
    open_rows = sum(n for s, n in states.items() if State(s) not in TERMINAL)
    return batch_pb2.BATCH_STATE_PROCESSING if open_rows else batch_pb2.BATCH_STATE_DONE


def batch_to_proto(
    batch: Batch,
    states: dict[str, int],
    totals: dict[int, tuple[int, int]],
    reference: ReferenceData,
    funded: Sequence[Funding] = (),
) -> batch_pb2.Batch:
    message = batch_pb2.Batch(
        name=BATCH_PREFIX + batch.id,
        state=batch_state(batch, states),  # type: ignore[arg-type]
        policy=batch_pb2.BatchPolicy.Value(f"BATCH_POLICY_{batch.policy}"),
        row_count=batch.row_count,
        accepted_count=batch.accepted_count,
        problem_row_count=batch.problem_row_count,
        content_sha256=batch.content_sha256,
        request_id=batch.request_id,
        create_time=_timestamp(batch.create_time),
    )
    for state in sorted(states):
        message.state_counts.add(
            state=withdrawal_pb2.State.Value(f"STATE_{state}"), count=states[state]
        )
    for token_id, (amount, count) in sorted(totals.items()):
        token = reference.tokens_by_id[token_id]
        message.token_totals.add(
            token=token.symbol, amount=format_amount(amount, token.decimals), count=count
        )
    for funding in funded:
        token = reference.tokens_by_id[funding.token_id]
        message.funding.add(
            token=token.symbol,
            amount=format_amount(funding.amount, token.decimals),
            payable=format_amount(funding.payable, token.decimals),
            shortfall=format_amount(funding.shortfall, token.decimals),
            reason=funding.reason,
            observe_time=_timestamp(funding.observe_time),
        )
    return message


def report_rows(
    withdrawals: Sequence[Withdrawal],
    problems: Sequence[BatchProblem],
    reference: ReferenceData,
    limit: int,
) -> list[batch_pb2.BatchReportRow]:
    """The first `limit` lines among the withdrawals' and the problems', in line order."""
    rows: dict[int, batch_pb2.BatchReportRow] = {}
    for w in withdrawals:
        line = w.batch_line or 0
        row = batch_pb2.BatchReportRow(
            line=line,
            client_reference=w.client_reference,
            withdrawal="withdrawals/" + w.id,
            state=withdrawal_pb2.State.Value(f"STATE_{w.state}"),
            transaction_hash=w.tx_hash or "",
            reason=w.state_reason,
        )
        if w.fee_wei is not None:
            native = reference.chains[w.chain]
            row.fee = format_amount(w.fee_wei, native.native_decimals)
        rows[line] = row
    for p in problems:
        if p.line not in rows:
            rows[p.line] = batch_pb2.BatchReportRow(
                line=p.line, client_reference=p.client_reference, reason=p.reason
            )
        rows[p.line].problems.add(column=p.column_name, reason=p.reason, message=p.message)
    return [rows[line] for line in sorted(rows)[:limit]]


def csv_header() -> str:
    return _csv_lines([CSV_COLUMNS])


def report_csv(rows: Iterable[batch_pb2.BatchReportRow]) -> str:
    return _csv_lines(
        [
            (
                str(r.line),
                r.client_reference,
                r.withdrawal,
                withdrawal_pb2.State.Name(r.state).removeprefix("STATE_") if r.state else "",
                r.transaction_hash,
                r.fee,
                r.reason,
                "; ".join(f"{p.column}: {p.reason}: {p.message}" for p in r.problems),
            )
            for r in rows
        ]
    )


def _csv_lines(rows: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(rows)
    return out.getvalue()
