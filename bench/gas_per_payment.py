"""Gas per payment: one PayoutVault payout to N fresh recipients against N single ERC-20
transfers from a hot wallet, on anvil (chain id 137, 60M gas limit).

    python -m bench.gas_per_payment            # sizes 1, 10, 100, 300 (make bench-gas)
    python -m bench.gas_per_payment --smoke    # sizes 1, 10 (run by make test)

Prints its configuration, then a table, and writes JSON to bench/results/. Gas is
deterministic on the EVM, so one run is the figure; no timing is involved.
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

from withdrawal_shared.chain.anvil import AnvilProcess
from withdrawal_shared.chain.contracts import deploy_test_stablecoin, mint, transfer
from withdrawal_shared.chain.payout import (
    Payment,
    decode_payout_events,
    deploy_payout_vault,
    fund_vault,
    send_payout,
    set_operator,
)
from withdrawal_shared.chain.types import BaseUnits

RESULTS = Path(__file__).resolve().parent / "results"
FULL_SIZES = (1, 10, 100, 300)
SMOKE_SIZES = (1, 10)
ONE_USDC = 10**6


@dataclass(frozen=True)
class Row:
    payments: int
    payout_gas: int
    gas_per_payment_vault: float
    gas_per_payment_single: float
    saved_pct: float


def _recipient(tag: str, index: int) -> str:
    return "0x" + Web3.keccak(text=f"bench-gas/{tag}/{index}")[-20:].hex()


def measure(sizes: tuple[int, ...]) -> list[Row]:
    rows: list[Row] = []
    with AnvilProcess(gas_limit=60_000_000) as anvil:
        w3 = anvil.web3()
        owner, operator, hot = anvil.accounts[0], anvil.accounts[1], anvil.accounts[2]
        token = deploy_test_stablecoin(w3, owner.private_key)
        vault = deploy_payout_vault(w3, owner.private_key, owner.address)
        set_operator(w3, vault, owner.private_key, operator.address)
        fund_vault(w3, token, owner.private_key, vault, BaseUnits(10**12), mint_new=True)
        mint(w3, token, owner.private_key, hot.address, BaseUnits(10**12))
        number = 1
        for size in sizes:
            payments = [
                Payment(number + i, _recipient(f"v{size}", i), ONE_USDC) for i in range(size)
            ]
            number += size
            receipt = send_payout(w3, vault, operator.private_key, token, payments)
            events = decode_payout_events(receipt["logs"], vault)
            if events.executed[0].paid != size:
                raise RuntimeError(f"the payout of {size} paid {events.executed[0].paid}")
            single = sum(
                int(
                    transfer(
                        w3,
                        token,
                        hot.private_key,
                        Web3.to_checksum_address(_recipient(f"s{size}", i)),
                        BaseUnits(ONE_USDC),
                    )["gasUsed"]
                )
                for i in range(size)
            )
            batch = int(receipt["gasUsed"])
            rows.append(Row(size, batch, batch / size, single / size, 100 * (1 - batch / single)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="sizes 1 and 10 only")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    sizes = SMOKE_SIZES if args.smoke else FULL_SIZES
    config = {
        "benchmark": "gas_per_payment",
        "sizes": list(sizes),
        "chain": "anvil, chain id 137, gas limit 60M",
        "token": "TestStablecoin (OpenZeppelin ERC20, 6 decimals)",
        "recipients": "fresh (never held the token)",
        "python": platform.python_version(),
    }
    print("configuration:", json.dumps(config))
    rows = measure(sizes)
    print(
        f"{'payments':>8} | {'payout gas':>11} | {'gas/payment vault':>17} | "
        f"{'gas/payment single':>18} | {'saved':>6}"
    )
    for r in rows:
        print(
            f"{r.payments:8d} | {r.payout_gas:11,d} | {r.gas_per_payment_vault:17,.0f} | "
            f"{r.gas_per_payment_single:18,.0f} | {r.saved_pct:5.1f}%"
        )
    out = args.out or RESULTS / f"gas_per_payment{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"config": config, "rows": [asdict(r) for r in rows], "time": time.time()}, indent=2
        )
        + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
