"""The webhook sender alone: its CPU and the database's per delivery, on a backlog.

    python -m bench.webhooks_sender                      # 1,000 withdrawals, 7,000 events
    python -m bench.webhooks_sender --withdrawals 300 --profile /tmp/prof

A MariaDB database of its own on 127.0.0.1:3306 (created, migrated and dropped here), one
partner with one endpoint (every event type) on `bench.webhooks`' receiver process on
loopback, which verifies every signature. Before the sender starts, `--withdrawals`
withdrawals are moved RECEIVED -> ... -> COMPLETED, one state for all of them at a time, so
the audit trail (the outbox) holds seven events per withdrawal in the order a steady pipeline
writes them. Then the sender (`svc_webhooks.server.WebhooksServer`: the outbox poll and the
sender, in this process) runs until every event was delivered.

Measured between the sender's start and the last delivery: wall time, this process's CPU
(the sender's event loop and database threads; nothing else runs in it then), mariadbd's
(shared with other users of the machine's MariaDB) and the receiver's, each per 1,000
deliveries. A backlog keeps every round and every recording batch full, so the figures are
the sender's floor, not those of `make bench-webhooks`' steady load; they compare two versions
of the sender under the same conditions. `--profile DIR` runs cProfile on the event loop and
on the database threads (several times slower; where the time goes, not how much).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import datetime as dt
import json
import os
import resource
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.api_load import bench_database
from bench.e2e import cpu_seconds
from bench.load import uptime_load
from bench.processes import mariadb_pid
from bench.thread_profiles import ThreadProfiles, write_stats

MARIADB = "mysql+pymysql://root:@127.0.0.1:3306"
"""The server the benchmark makes its own database on (`bench.api_load.bench_database`)."""
PARTNER = "bench-sender"
PATH = ("VALIDATED", "QUEUED", "SIGNED", "BROADCAST", "CONFIRMING", "COMPLETED")


def _seed(url: str, withdrawals: int, hook_url: str, secret: str) -> int:
    """The endpoint, then the withdrawals with their audit trails; the events expected."""
    from withdrawal_shared.db.api_keys import ensure_partner
    from withdrawal_shared.db.engine import make_engine, make_sessionmaker
    from withdrawal_shared.db.models import Token, WebhookEndpoint, Withdrawal
    from withdrawal_shared.db.transitions import Step, move_many, record_creation, utcnow
    from withdrawal_shared.ids import new_ulid
    from withdrawal_shared.states import State
    from withdrawal_shared.webhooks.secrets import SecretBox

    engine = make_engine(url, pool_size=2)
    sessions = make_sessionmaker(engine)
    now = utcnow() - dt.timedelta(seconds=5)
    with sessions.begin() as session:
        ensure_partner(session, PARTNER)
        session.flush()
        session.add(
            WebhookEndpoint(
                id=new_ulid(),
                partner_id=PARTNER,
                url=hook_url,
                description="bench.webhooks_sender",
                event_types="",
                state="ENABLED",
                state_reason="",
                secret=SecretBox().seal(secret),
                previous_secret=None,
                previous_secret_expire_time=None,
                request_id=None,
                create_time=now,
                update_time=now,
                last_success_time=None,
                failing_since=None,
            )
        )
        token = session.scalars(select(Token)).first()
        assert token is not None
        token_id = token.id
    ids: list[str] = []
    for start in range(0, withdrawals, 500):
        with sessions.begin() as session:
            for i in range(start, min(withdrawals, start + 500)):
                created = utcnow()
                row = Withdrawal(
                    id=new_ulid(),
                    partner_id=PARTNER,
                    request_id=secrets.token_hex(8),
                    request_fingerprint=secrets.token_hex(32),
                    client_reference=f"ref-{i}",
                    chain="polygon",
                    token_id=token_id,
                    recipient="0x" + f"{i + 1:040x}",
                    amount=1_000_000 + i,
                    priority="STANDARD",
                    state=State.RECEIVED.value,
                    state_reason="",
                    state_message="Accepted; waiting for the processor.",
                    tx_hash=None,
                    fee_wei=None,
                    confirmations=0,
                    create_time=created,
                    update_time=created,
                    end_time=None,
                )
                record_creation(session, row, actor="bench")
                ids.append(row.id)
    from withdrawal_shared.db.transitions import rows_as_read

    for state in PATH:
        for start in range(0, len(ids), 500):
            with sessions.begin() as session:
                chunk = ids[start : start + 500]
                move_many(
                    session,
                    rows_as_read(session, Withdrawal.id.in_(chunk)),
                    Step(State(state), reason=state),
                    actor="bench",
                )
    engine.dispose()
    return withdrawals * (1 + len(PATH))


async def _run_sender(url: str, expected: int, profile: Path | None, timeout: float) -> float:
    """Run the sender until `expected` deliveries SUCCEEDED; its wall time."""
    from svc_webhooks.server import WebhooksServer
    from svc_webhooks.settings import WebhooksSettings
    from withdrawal_shared.db.models import WebhookDelivery

    settings = WebhooksSettings(
        database_url=url,
        grpc_port=0,
        max_in_flight=64,
        max_in_flight_per_endpoint=64,
        allow_http_loopback=True,
    )
    loop_profile = cProfile.Profile() if profile is not None else None
    server = WebhooksServer(settings)
    started = time.monotonic()
    if loop_profile is not None:
        loop_profile.enable()
    await server.start()
    deadline = started + timeout
    done = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        done = await asyncio.get_running_loop().run_in_executor(
            None, _succeeded, server, WebhookDelivery
        )
        if done >= expected:
            break
    wall = time.monotonic() - started
    if loop_profile is not None:
        loop_profile.disable()
    await server.stop()
    if done < expected:
        raise RuntimeError(f"only {done} of {expected} delivered in {timeout} s")
    if loop_profile is not None and profile is not None:
        write_stats([loop_profile], profile, "sender-loop", lines=70)
    return wall


def _succeeded(server: Any, model: Any) -> int:
    with server._sessions() as session:
        return int(session.scalar(select(func.count()).where(model.state == "SUCCEEDED")) or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--withdrawals", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile output directory")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    os.environ["WEBHOOKS_ENCRYPTION_KEY"] = base64.b64encode(os.urandom(32)).decode()
    from bench.webhooks import ReceiverProcess
    from withdrawal_shared import logs, metrics

    # As `runtime.run_service` sets the service up: JSON logs at INFO, metrics served.
    logs.configure("webhooks", os.environ.get("LOG_LEVEL", "INFO"))
    metrics.serve_metrics(0)
    metrics.initialize("webhooks")
    from withdrawal_shared.webhooks.secrets import new_secret

    threads = ThreadProfiles() if args.profile is not None else None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    var_dir = Path(tempfile.mkdtemp(prefix="bench-sender-"))
    receiver = ReceiverProcess(var_dir)
    try:
        secret = new_secret()
        receiver.set_secret(secret)
        with bench_database(MARIADB) as url:
            expected = _seed(url, args.withdrawals, f"{receiver.base}/hook", secret)
            db_pid = mariadb_pid(url)
            load_start = uptime_load()
            if threads is not None:
                threads.install()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            db0, rx0 = cpu_seconds(db_pid), cpu_seconds(receiver.pid)
            wall = asyncio.run(_run_sender(url, expected, args.profile, args.timeout))
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            db1, rx1 = cpu_seconds(db_pid), cpu_seconds(receiver.pid)
            summary = receiver.summary()
    finally:
        receiver.stop()
    sender_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    per_k = expected / 1000

    def per(used: float | None) -> float | None:
        return None if used is None else round(used / per_k, 3)

    result = {
        "withdrawals": args.withdrawals,
        "deliveries": expected,
        "received": summary,
        "wall_s": round(wall, 2),
        "deliveries_per_s": round(expected / wall, 1),
        "cpu_s_per_1k": {
            "sender": per(sender_cpu),
            "mariadbd": per(None if db0 is None or db1 is None else db1 - db0),
            "receiver": per(None if rx0 is None or rx1 is None else rx1 - rx0),
        },
        "load_at_start": load_start,
        "load_at_end": uptime_load(),
        "profiled": args.profile is not None,
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if threads is not None and args.profile is not None:
        write_stats(threads.collected(), args.profile, "sender-threads", lines=70)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
