"""The database's own work for a CSV batch's rows: the same prebuilt rows inserted as the
batch ingest inserts them, into a fresh database on the machine's MariaDB server, with the
CPU seconds of the server thread that ran them and of `mariadbd` as a whole (whatever else
uses the server is counted there too; the thread's figure is this connection's alone).

    python -m bench.insert_cost [--rows 100000] [--rounds 3] [--drop-index NAME ...]

Each round creates a database, brings it to the newest migration, inserts `--rows` rows in
chunks of `INSERT_ROWS` in one transaction (each chunk's multi-row INSERT of withdrawals,
rendered by `SqlValues`, then its audit rows with `audit_rows`), commits and drops the
database. `--drop-index` drops a secondary index of `withdrawals` first (to weigh what one
costs). No Python work is timed: the rows are rendered before the first round.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import statistics
import time
from typing import Any

import pymysql  # type: ignore[import-untyped]
from sqlalchemy import create_engine
from sqlalchemy.dialects import mysql

from svc_gateway.batches.sql_rows import WITHDRAWAL_COLUMNS, SqlValues, audit_rows, insert_sql
from svc_gateway.batches.storage import INSERT_ROWS
from svc_gateway.store import ACTOR_PARTNER, _Plan
from svc_gateway.validation import NewWithdrawal
from withdrawal_shared.amounts import BaseUnits
from withdrawal_shared.db.migrate import upgrade
from withdrawal_shared.db.reference import TokenInfo
from withdrawal_shared.states import Priority

HOST, PORT, USER = "127.0.0.1", 3306, "root"
PARTNER = "bench-insert"
BATCH = "01jbench0000000000000000ba"
TICK = os.sysconf("SC_CLK_TCK")


def _cpu(path: str) -> float:
    with open(path) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _mariadbd() -> int:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() == "mariadbd":
                    return int(pid)
        except OSError:
            continue
    raise SystemExit("no mariadbd process on this machine")


def _connect(database: str | None = None) -> Any:
    return pymysql.connect(host=HOST, port=PORT, user=USER, database=database, charset="utf8mb4")


def statements(rows: int, token_id: int) -> list[tuple[str, str]]:
    """Each chunk's two statements as the ingest sends them on MariaDB."""
    now = dt.datetime(2026, 12, 7, 11, 0, 0, 123456)
    values = SqlValues(PARTNER, BATCH, now, None, no_backslash_escapes=False)
    token = TokenInfo(token_id, "polygon", "USDC", None, 6, 10**30, True)
    plan = _Plan(Priority.STANDARD, None, None)
    dialect = mysql.dialect()
    chunks = []
    for first in range(0, rows, INSERT_ROWS):
        lines = range(first + 2, min(first + INSERT_ROWS, rows) + 2)
        tuples = [
            values.row(
                line,
                NewWithdrawal(
                    request_id=f"batches/{BATCH}/{line}",
                    fingerprint=f"{line:064x}",
                    client_reference=f"bench-{line}",
                    chain="polygon",
                    token=token,
                    recipient=f"0x{line * 7919:040x}"[-42:],
                    amount=BaseUnits(1_000_000),
                    priority=None,
                ),
                plan,
            )
            for line in lines
        ]
        audit = audit_rows(BATCH, lines[0], lines[-1], ACTOR_PARTNER + PARTNER).compile(
            dialect=dialect, compile_kwargs={"literal_binds": True}
        )
        chunks.append((insert_sql("withdrawals", WITHDRAWAL_COLUMNS, tuples), str(audit)))
    return chunks


_RENDERED: dict[tuple[int, int], list[tuple[str, str]]] = {}


def one_round(pid: int, drop: list[str], rows: int) -> dict[str, float]:
    name = f"bench_insert_{secrets.token_hex(4)}"
    admin = _connect()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        url = f"mysql+pymysql://{USER}:@{HOST}:{PORT}/{name}?charset=utf8mb4"
        upgrade(url)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO partners (id, display_name, enabled, create_time) "
                f"VALUES ('{PARTNER}', '{PARTNER}', 1, NOW())"
            )
            for index in drop:
                conn.exec_driver_sql(f"ALTER TABLE withdrawals DROP INDEX `{index}`")
            token_id = conn.exec_driver_sql("SELECT id FROM tokens LIMIT 1").scalar_one()
        engine.dispose()
        chunks = _RENDERED.get((rows, token_id)) or _RENDERED.setdefault(
            (rows, token_id), statements(rows, token_id)
        )
        conn = _connect(name)
        with conn.cursor() as cur:
            cur.execute("SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
            thread = f"/proc/{pid}/task/{cur.fetchone()[0]}/stat"
        with open("/proc/loadavg") as load:
            load1 = float(load.read().split()[0])
        conn.begin()
        t0, server0, thread0 = time.perf_counter(), _cpu(f"/proc/{pid}/stat"), _cpu(thread)
        with conn.cursor() as cur:
            for withdrawals, audits in chunks:
                cur.execute(withdrawals)
                cur.execute(audits)
        conn.commit()
        t1, server1, thread1 = time.perf_counter(), _cpu(f"/proc/{pid}/stat"), _cpu(thread)
        conn.close()
        return {
            "seconds": round(t1 - t0, 2),
            "thread_cpu_seconds": round(thread1 - thread0, 2),
            "mariadbd_cpu_seconds": round(server1 - server0, 2),
            "load_at_start": load1,
        }
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--drop-index", action="append", default=[], metavar="NAME")
    args = parser.parse_args(argv)
    pid = _mariadbd()
    runs = []
    for number in range(args.rounds):
        run = one_round(pid, args.drop_index, args.rows)
        runs.append(run)
        print(f"round {number + 1}: {json.dumps(run)}", flush=True)
    medians = {
        key: statistics.median(r[key] for r in runs)
        for key in ("seconds", "thread_cpu_seconds", "mariadbd_cpu_seconds")
    }
    print(json.dumps({"rows": args.rows, "dropped": args.drop_index, "median": medians}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
