"""The emergency lane on a congested chain: how many blocks an EMERGENCY withdrawal waits from
its submission until it is mined, with the emergency hot wallet and without it (the baseline),
in the same invocation.

    python -m bench.emergency            # 10,000 STANDARD, 20 EMERGENCY (make bench-emergency)
    python -m bench.emergency --standard 20000 --emergency 40 --interval 3
    python -m bench.emergency --smoke    # 500 STANDARD, 3 EMERGENCY, small payouts (the tests)

Each variant gets a `HarnessStack` of its own (MariaDB database, own redis-server, anvil with
2-second blocks, the services and the treasury Safe's owner signers as processes,
confirmation depth 5). The chain is congested on purpose: anvil's block gas limit
(`HarnessConfig.gas_limit`) is lowered so that exactly one full STANDARD payout fits in a block
(`--payout-items` withdrawals per payout, `PROCESSOR_BATCH_MAX_ITEMS`; the limit is 1.2 times
such a payout's gas limit plus 0.5M gas, at least 3M for the bootstrap's deployments, applied
once the bootstrap, whose treasury Safe takes 6M, is done; `--block-gas-limit` sets it), so a
backlog of `--standard` withdrawals spans `--standard / --payout-items` blocks while an
emergency payout (one withdrawal, about 0.1M gas) still fits beside a standard one.

The run: the STANDARD backlog is uploaded as one CSV batch (fresh recipients, 1 USDC each);
once its first payout is mined, `--emergency` EMERGENCY withdrawals (CreateWithdrawal over
gRPC with PRIORITY_EMERGENCY, the development key holds the `emergency` scope) are
submitted one every `--interval` seconds, each noting the chain head just before it is sent
and how many STANDARD withdrawals were still unmined. The run then waits until every
EMERGENCY withdrawal is mined and the STANDARD backlog is paid, or `--drain` seconds.

Read from the chain afterwards (the token's Transfer logs): the block that paid each
withdrawal, so **blocks waited** = that block - the head at submission (1: the next block),
p50/p95/max over the EMERGENCY withdrawals (one never mined counts as infinitely late); the
wallet that sent each emergency payment (an EMERGENCY-role wallet or a standard one); and the
blocks the STANDARD backlog was mined over (the run counts as congested when that is at
least 5). Also the exactly-once verdict for every withdrawal (`devstack.exactly_once`).

The variants differ only in `HarnessConfig.emergency_wallets` (STACK_EMERGENCY_WALLETS):
`lane` has 1, `baseline` 0, where EMERGENCY withdrawals are paid by the standard wallets
(still leading their payouts) behind those wallets' pending nonces.
Writes JSON to bench/results/emergency.json (emergency-smoke.json for `--smoke`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from web3 import Web3

from bench.batch_upload import (
    FIRST_LINE,
    batch_key,
    csv_bytes,
    recipient_of,
    upload_rest,
)
from bench.e2e import SERVICE_NAMES, percentile
from bench.load import AMOUNT, Submission, exactly_once, sayer, uptime_load, versions

RESULTS = Path(__file__).resolve().parent / "results"
CONFIRMATIONS = 5
GAS_PER_ITEM = 27_000  # a fresh recipient's share of a PayoutVault payout (bench-gas)
GAS_PER_PAYOUT = 60_000  # a payout's own share
GAS_MARGIN = 1.25  # PROCESSOR_GAS_MARGIN_PCT's default: a payout's gas limit over its estimate
# The bootstrap deploys the token and the vault (the harness lifts the limit to 6M for the
# treasury Safe's deployment until the bootstrap is done).
MIN_BLOCK_GAS_LIMIT = 3_000_000
TARGETS = {"blocks_waited_p95_max": 2, "congested_blocks_min": 5}
VARIANTS = (("lane", 1), ("baseline", 0))


def block_gas_limit_for(items: int) -> int:
    """A block gas limit with room for one full STANDARD payout and an emergency one."""
    payout = (items * GAS_PER_ITEM + GAS_PER_PAYOUT) * GAS_MARGIN
    return max(MIN_BLOCK_GAS_LIMIT, int(payout * 1.2) + 500_000)


@dataclass
class Emergency:
    index: int
    request_id: str
    recipient: str
    submitted: float  # epoch seconds, just before the call
    head_at_submit: int
    standard_unmined_at_submit: int
    withdrawal_id: str = ""
    error: str = ""
    block: int | None = None
    sender: str = ""
    blocks_waited: float = math.inf


def _create_emergency(stub: Any, api_key: str, request_id: str, recipient: str) -> tuple[str, str]:
    """(withdrawal id, "") or ("", the error)."""
    import grpc

    from assetwithdrawal.withdrawal.v1 import withdrawal_pb2

    request = withdrawal_pb2.CreateWithdrawalRequest(
        request_id=request_id,
        withdrawal=withdrawal_pb2.Withdrawal(
            token="USDC",
            recipient_address=recipient,
            amount=AMOUNT,
            priority=withdrawal_pb2.PRIORITY_EMERGENCY,
        ),
    )
    try:
        created = stub.CreateWithdrawal(
            request, metadata=(("authorization", f"Bearer {api_key}"),), timeout=30
        )
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "RpcError"
        return "", f"{code} {exc.details() if hasattr(exc, 'details') else ''}".strip()
    return created.name.removeprefix("withdrawals/"), ""


def _standard_unmined(stack: Any, batch_id: str) -> int:
    """STANDARD withdrawals of the backlog whose payout is not mined yet."""
    from withdrawal_shared.db.models import Withdrawal
    from withdrawal_shared.states import State

    unmined = [
        s.value
        for s in (
            State.RECEIVED,
            State.VALIDATED,
            State.QUEUED,
            State.SIGNED,
            State.BROADCAST,
            State.ON_HOLD,
        )
    ]
    with stack.sessions()() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Withdrawal)
                .where(Withdrawal.batch_id == batch_id, Withdrawal.state.in_(unmined))
            )
            or 0
        )


def _payments(w3: Web3, token: str, from_block: int) -> dict[str, tuple[int, str]]:
    """Every Transfer of the token from `from_block` on: recipient -> (block, transaction)."""
    from devstack.exactly_once import TRANSFER_TOPIC

    head = int(w3.eth.block_number)
    found: dict[str, tuple[int, str]] = {}
    start = from_block
    while start <= head:
        end = min(start + 1_999, head)
        for entry in w3.eth.get_logs(
            {
                "address": Web3.to_checksum_address(token),
                "topics": [TRANSFER_TOPIC],
                "fromBlock": start,
                "toBlock": end,
            }
        ):
            recipient = "0x" + bytes(entry["topics"][2])[-20:].hex()
            found.setdefault(
                recipient, (int(entry["blockNumber"]), entry["transactionHash"].to_0x_hex())
            )
        start = end + 1
    return found


def _submit_emergencies(
    stack: Any, args: argparse.Namespace, run_id: str, batch_id: str
) -> list[Emergency]:
    """`--emergency` EMERGENCY creates, one every `--interval` s, each with the head and the
    STANDARD withdrawals still unmined just before it is sent."""
    import grpc

    from assetwithdrawal.withdrawal.v1 import withdrawal_pb2_grpc

    w3 = stack.web3()
    emergencies: list[Emergency] = []
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = withdrawal_pb2_grpc.WithdrawalServiceStub(channel)
        start = time.time()
        for index in range(args.emergency):
            due = start + index * args.interval
            time.sleep(max(0.0, due - time.time()))
            unmined = _standard_unmined(stack, batch_id)
            item = Emergency(
                index,
                f"{run_id}-emergency-{index}",
                recipient_of(run_id, "emergency", index),
                time.time(),
                int(w3.eth.block_number),  # read last: the call follows at once
                unmined,
            )
            item.withdrawal_id, item.error = _create_emergency(
                stub, stack.api_key, item.request_id, item.recipient
            )
            emergencies.append(item)
    return emergencies


def run_variant(args: argparse.Namespace, name: str, emergency_wallets: int) -> dict[str, Any]:
    from devstack.harness import HarnessConfig, HarnessStack

    say = sayer(name)
    var_dir = Path(tempfile.mkdtemp(prefix=f"bench-emergency-{name}-"))
    config = HarnessConfig(
        var_dir=var_dir,
        confirmations=CONFIRMATIONS,
        gas_limit=args.block_gas_limit,
        emergency_wallets=emergency_wallets,
        env={"LOG_LEVEL": args.log_level, "PROCESSOR_BATCH_MAX_ITEMS": str(args.payout_items)},
        service_users=True,
    )
    run_id = secrets.token_hex(4)
    say(f"starting the stack (logs in {var_dir / 'logs'}) ...")
    with HarnessStack(config) as stack:
        w3 = stack.web3()
        token = stack.result.token_address
        emergency_senders = {w.lower() for w in stack.result.emergency_wallets}
        first_block = int(w3.eth.block_number) + 1
        say(f"stack up; {args.standard:,} STANDARD as one batch; load {uptime_load()}")
        body = csv_bytes(run_id, "standard", args.standard)
        answer = upload_rest(stack.rest_base_url, batch_key(stack), f"{run_id}-standard", body)
        if not answer.batch_id:
            raise RuntimeError(f"the STANDARD batch was refused: {answer.status} {answer.error}")
        batch_id = answer.batch_id
        deadline = time.time() + args.drain
        while _payments(w3, token, first_block) == {} and time.time() < deadline:
            time.sleep(0.5)
        say(
            f"first STANDARD payout mined; {_standard_unmined(stack, batch_id):,} unmined; "
            f"submitting {args.emergency} EMERGENCY, one every {args.interval} s"
        )
        emergencies = _submit_emergencies(stack, args, run_id, batch_id)
        wanted = {e.recipient for e in emergencies if e.withdrawal_id}
        wanted |= {recipient_of(run_id, "standard", i) for i in range(answer.accepted_count)}
        while time.time() < deadline:
            paid = _payments(w3, token, first_block)
            if wanted <= set(paid):
                break
            time.sleep(1.0)
        paid = _payments(w3, token, first_block)
        for item in emergencies:
            if item.recipient in paid:
                item.block, tx_hash = paid[item.recipient]
                item.blocks_waited = item.block - item.head_at_submit
                item.sender = str(w3.eth.get_transaction(tx_hash)["from"]).lower()
        standard_blocks = sorted(
            {
                paid[r][0]
                for i in range(answer.accepted_count)
                if (r := recipient_of(run_id, "standard", i)) in paid
            }
        )
        standard_paid = sum(
            1 for i in range(answer.accepted_count) if recipient_of(run_id, "standard", i) in paid
        )
        submissions = [
            Submission(i, e.submitted, e.submitted, e.submitted, e.withdrawal_id, e.recipient)
            for i, e in enumerate(emergencies)
            if e.withdrawal_id
        ]
        submissions += _standard_submissions(stack, run_id, batch_id, answer.started)
        say("exactly-once check against the chain's Transfer logs ...")
        verdict = exactly_once(stack, submissions, drained=False)
        restarts = {service: stack.restarts(service) for service in SERVICE_NAMES}
    waited = [e.blocks_waited for e in emergencies]
    span = standard_blocks[-1] - standard_blocks[0] + 1 if standard_blocks else 0
    result = {
        "variant": name,
        "emergency_wallets": emergency_wallets,
        "standard_accepted": answer.accepted_count,
        "standard_upload_s": round(answer.seconds, 3),
        "standard_paid_at_stop": standard_paid,
        "standard_blocks_spanned": span,
        "standard_blocks_with_payments": len(standard_blocks),
        "congested": span >= TARGETS["congested_blocks_min"],
        "standard_unmined_at_submit": {
            "first": emergencies[0].standard_unmined_at_submit if emergencies else None,
            "min": min((e.standard_unmined_at_submit for e in emergencies), default=None),
            "last": emergencies[-1].standard_unmined_at_submit if emergencies else None,
        },
        "emergency_submitted": len(emergencies),
        "emergency_refused": sum(1 for e in emergencies if not e.withdrawal_id),
        "emergency_mined": sum(1 for e in emergencies if e.block is not None),
        "emergency_paid_by_emergency_wallet": sum(
            1 for e in emergencies if e.sender and e.sender in emergency_senders
        ),
        "blocks_waited": _blocks(waited),
        "emergencies": [
            {**asdict(e), "blocks_waited": _finite(e.blocks_waited)} for e in emergencies
        ],
        "exactly_once": verdict,
        "restarts": restarts,
    }
    say(_line(result))
    return result


def _standard_submissions(
    stack: Any, run_id: str, batch_id: str, submitted: float
) -> list[Submission]:
    from withdrawal_shared.db.models import Withdrawal

    with stack.sessions()() as session:
        rows = session.execute(
            select(Withdrawal.id, Withdrawal.batch_line).where(Withdrawal.batch_id == batch_id)
        ).all()
    return [
        Submission(
            i,
            submitted,
            submitted,
            submitted,
            withdrawal_id,
            recipient_of(run_id, "standard", int(line) - FIRST_LINE),
        )
        for i, (withdrawal_id, line) in enumerate(rows)
    ]


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def _blocks(values: list[float]) -> dict[str, float | int | None]:
    return {
        "p50": _finite(percentile(values, 50)) if values else None,
        "p95": _finite(percentile(values, 95)) if values else None,
        "max": _finite(max(values)) if values else None,
        "never": sum(1 for v in values if math.isinf(v)),
    }


def _line(result: dict[str, Any]) -> str:
    blocks = result["blocks_waited"]
    return (
        f"blocks waited p50 {blocks['p50']} / p95 {blocks['p95']} / max {blocks['max']} "
        f"(never {blocks['never']}); {result['emergency_paid_by_emergency_wallet']} of "
        f"{result['emergency_submitted']} paid by an EMERGENCY wallet; STANDARD backlog "
        f"{result['standard_accepted']:,} over {result['standard_blocks_spanned']} blocks "
        f"(congested: {result['congested']}); exactly once ok="
        f"{result['exactly_once']['ok']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--standard", type=int, default=10_000, help="STANDARD backlog")
    parser.add_argument("--emergency", type=int, default=20, help="EMERGENCY withdrawals")
    parser.add_argument(
        "--interval", type=float, default=3.0, help="seconds between EMERGENCY submissions"
    )
    parser.add_argument("--payout-items", type=int, default=300, help="PROCESSOR_BATCH_MAX_ITEMS")
    parser.add_argument(
        "--block-gas-limit",
        type=int,
        default=None,
        help="anvil's block gas limit (default: room for one full STANDARD payout)",
    )
    parser.add_argument(
        "--drain", type=float, default=300.0, help="s to wait for everything to be mined"
    )
    parser.add_argument(
        "--only", choices=[name for name, _ in VARIANTS], default=None, help="one variant only"
    )
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services")
    parser.add_argument("--smoke", action="store_true", help="small numbers, seconds")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.smoke:
        args.standard, args.emergency, args.interval = 500, 3, 2.0
        args.payout_items, args.drain = 50, 120.0
    if args.block_gas_limit is None:
        args.block_gas_limit = block_gas_limit_for(args.payout_items)
    config = {
        "benchmark": "emergency",
        "standard": args.standard,
        "emergency": args.emergency,
        "interval_s": args.interval,
        "payout_items_max": args.payout_items,
        "block_gas_limit": args.block_gas_limit,
        "block_time_s": 2,
        "confirmations": CONFIRMATIONS,
        "hot_wallets": 2,
        "variants": {name: {"emergency_wallets": n} for name, n in VARIANTS},
        "database_users": "per service",
        "amount": f"{AMOUNT} USDC",
        "drain_s": args.drain,
        "cpus": os.cpu_count(),
        "load_at_start": uptime_load(),
        "versions": versions(),
        "smoke": args.smoke,
    }
    print("configuration:", json.dumps(config), flush=True)
    results = {
        name: run_variant(args, name, wallets)
        for name, wallets in VARIANTS
        if args.only in (None, name)
    }
    for name, result in results.items():
        print(f"{name:>8}: {_line(result)}")
    met: dict[str, Any] = {}
    lane = results.get("lane")
    if lane is not None:
        p95 = lane["blocks_waited"]["p95"]
        met = {
            "blocks_waited_p95": p95 is not None and p95 <= TARGETS["blocks_waited_p95_max"],
            "congested": lane["congested"],
            "exactly_once": lane["exactly_once"]["ok"],
        }
    print("targets:", json.dumps({"targets": TARGETS, "met": met}), flush=True)
    out = args.out or RESULTS / f"emergency{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"config": config, "results": results, "targets": met, "time": time.time()}
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
