"""Gas per withdrawal: one PayoutVault payout of N withdrawals against the naive way (one
ERC-20 `transfer` transaction per withdrawal from the hot wallet), in the same run, on anvil
(chain id 137, 60M gas limit) with the OpenZeppelin ERC20 test token; to fresh recipients
(zero balance: the expensive case) and to warm ones (already holding the token).

    python -m bench.gas_per_payment            # N = 1, 10, 50, 100, 200  (make bench-gas)
    python -m bench.gas_per_payment --smoke    # N = 1, 10                 (run by make test)

Prints its configuration, then a table, and writes JSON to bench/results/. Gas is
deterministic on the EVM, so one run is the figure; no timing is involved.
Targets, at N = 100: fresh <= 27,500 gas and <= 0.54 x naive; warm <= 11,000 gas
and <= 0.33 x naive.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from web3 import Web3

from devstack.anvil import AnvilProcess
from devstack.stablecoin import deploy_test_stablecoin, mint, transfer
from devstack.vault import deploy_payout_vault, fund_vault, send_payout, set_operator
from withdrawal_shared.chain.payout import Payment, decode_payout_events
from withdrawal_shared.chain.types import BaseUnits

RESULTS = Path(__file__).resolve().parent / "results"
FULL_SIZES = (1, 10, 50, 100, 200)
SMOKE_SIZES = (1, 10)
ONE_USDC = 10**6
TARGETS = {"fresh": (27_500, 0.54), "warm": (11_000, 0.33)}


@dataclass(frozen=True)
class Row:
    recipients: str  # fresh | warm
    withdrawals: int
    payout_gas: int
    gas_per_withdrawal: float
    naive_gas_per_withdrawal: float
    ratio: float


def _address(tag: str, index: int) -> str:
    return "0x" + Web3.keccak(text=f"bench-gas/{tag}/{index}")[-20:].hex()


def measure(sizes: tuple[int, ...]) -> list[Row]:
    rows: list[Row] = []
    with AnvilProcess(gas_limit=60_000_000) as anvil:
        w3 = anvil.web3()
        owner, operator, hot = anvil.accounts[0], anvil.accounts[1], anvil.accounts[2]
        token = deploy_test_stablecoin(w3, owner.private_key)
        vault = deploy_payout_vault(w3, owner.private_key, owner.address)
        set_operator(w3, vault, owner.private_key, operator.address)
        fund_vault(w3, token, owner.private_key, vault, BaseUnits(10**15), mint_new=True)
        mint(w3, token, owner.private_key, hot.address, BaseUnits(10**15))
        # Warm the payout numbers' bitmap slots like a long-running vault: the first slot
        # write is paid once per 256 withdrawals, not per payout.
        number = 1
        send_payout(w3, vault, operator.private_key, token, [Payment(number, _address("w", 0), 1)])
        number += 1
        for kind in ("fresh", "warm"):
            for size in sizes:
                vault_to = [_address(f"{kind}-v{size}", i) for i in range(size)]
                naive_to = [_address(f"{kind}-n{size}", i) for i in range(size)]
                if kind == "warm":
                    for address in vault_to + naive_to:
                        mint(
                            w3,
                            token,
                            owner.private_key,
                            Web3.to_checksum_address(address),
                            BaseUnits(1),
                        )
                payments = [Payment(number + i, a, ONE_USDC) for i, a in enumerate(vault_to)]
                number += size
                receipt = send_payout(w3, vault, operator.private_key, token, payments)
                executed = decode_payout_events(receipt["logs"], vault).executed[0]
                if executed.paid != size:
                    raise RuntimeError(f"the payout of {size} paid {executed.paid}")
                naive = sum(
                    int(
                        transfer(
                            w3,
                            token,
                            hot.private_key,
                            Web3.to_checksum_address(a),
                            BaseUnits(ONE_USDC),
                        )["gasUsed"]
                    )
                    for a in naive_to
                )
                batch = int(receipt["gasUsed"])
                rows.append(Row(kind, size, batch, batch / size, naive / size, batch / naive))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="N = 1 and 10 only")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    sizes = SMOKE_SIZES if args.smoke else FULL_SIZES
    config = {
        "benchmark": "gas_per_payment",
        "withdrawals_per_transaction": list(sizes),
        "recipients": ["fresh", "warm"],
        "amount": "1 USDC each",
        "chain": "anvil 1.7.1, chain id 137, gas limit 60M",
        "token": "TestStablecoin (OpenZeppelin ERC20 5.x, 6 decimals)",
        "naive": "one ERC-20 transfer transaction per withdrawal from the hot wallet",
        "python": platform.python_version(),
    }
    print("configuration:", json.dumps(config))
    rows = measure(sizes)
    print(
        f"{'recipients':>10} | {'N':>4} | {'payout gas':>11} | {'gas/withdrawal':>14} | "
        f"{'naive gas/withdrawal':>20} | {'ratio':>5}"
    )
    for r in rows:
        print(
            f"{r.recipients:>10} | {r.withdrawals:4d} | {r.payout_gas:11,d} | "
            f"{r.gas_per_withdrawal:14,.0f} | {r.naive_gas_per_withdrawal:20,.0f} | {r.ratio:5.3f}"
        )
    verdicts = {}
    for r in rows:
        if r.withdrawals == 100:
            gas_target, ratio_target = TARGETS[r.recipients]
            verdicts[r.recipients] = {
                "gas_per_withdrawal": round(r.gas_per_withdrawal),
                "gas_target": gas_target,
                "ratio": round(r.ratio, 3),
                "ratio_target": ratio_target,
                "met": r.gas_per_withdrawal <= gas_target and r.ratio <= ratio_target,
            }
            print(f"target at N=100, {r.recipients}: {verdicts[r.recipients]}")
    out = args.out or RESULTS / f"gas_per_payment{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "config": config,
        "rows": [asdict(r) for r in rows],
        "targets": verdicts,
        "time": time.time(),
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
