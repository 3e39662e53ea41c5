"""Gas of one large withdrawal paid through the treasury Safe against the same payment by a hot
wallet: `execTransaction` (2 of 3 owner signatures) calling `vault.payout` with one payment,
beside the hot wallet's own `vault.payout` of one payment, in the same run, on anvil (chain id
137) with the OpenZeppelin ERC20 test token. Both singletons are measured: `SafeL2`, the one
the treasury uses (`devstack.safe.SINGLETON`), and `Safe`, to show what SafeL2's
`SafeMultiSigTransaction` event costs.

    python -m bench.safe_gas            # make bench-safe-gas

Each Safe has executed one transaction before (its nonce slot is no longer zero) and the
vault has paid a number in the same bitmap slot, as on a running system. Recipients are fresh
(never held the token: a new balance slot) or warm (already hold some). Each figure is the
mean of `REPEATS` payments: the EVM's work is deterministic and must agree between them
(`execution_gas`, the gas used less 21,000 and the calldata's 4 gas per zero byte and 16 per
other byte), but the calldata's cost moves by a few gas with the zero bytes of the recipient
and of the signatures.

Prints its configuration, then a table, and writes JSON to bench/results/safe_gas.json.
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
from web3.types import TxReceipt

from devstack.anvil import AnvilProcess, DevAccount
from devstack.safe import SafeContractName, create_safe, deploy_safe_contracts, execute_safe_tx
from devstack.stablecoin import deploy_test_stablecoin, mint
from devstack.vault import (
    deploy_payout_vault,
    fund_vault,
    send_payout,
    set_operator,
    transfer_vault_ownership,
)
from withdrawal_shared.chain.payout import (
    Payment,
    decode_payout_events,
    encode_payout,
)
from withdrawal_shared.chain.safe import execution_result, safe_nonce
from withdrawal_shared.chain.safe_tx import SafeTx
from withdrawal_shared.chain.types import BaseUnits, ChecksumAddress, PrivateKey

RESULTS = Path(__file__).resolve().parent / "results"
ONE_USDC = 10**6
LARGE = BaseUnits(250_000 * ONE_USDC)
REPEATS = 3
PATHS = ("hot wallet", "SafeL2 2-of-3", "Safe 2-of-3")


@dataclass(frozen=True)
class Row:
    path: str  # hot wallet | SafeL2 2-of-3 | Safe 2-of-3
    recipients: str  # fresh | warm
    gas: float  # mean gas used by the transaction
    over_hot_wallet: float
    execution_gas: int  # gas less 21,000 and the calldata's gas: the same in every run
    calldata_bytes: int


def _address(tag: str) -> str:
    return "0x" + Web3.keccak(text=f"bench-safe-gas/{tag}")[-20:].hex()


class _Bench:
    def __init__(self, anvil: AnvilProcess) -> None:
        self.w3 = anvil.web3()
        self.deployer, self.hot = anvil.accounts[0], anvil.accounts[4]
        self.owners: tuple[DevAccount, ...] = tuple(anvil.accounts[i] for i in (1, 2, 3))
        self.token = deploy_test_stablecoin(self.w3, self.deployer.private_key)
        self.vault = deploy_payout_vault(self.w3, self.deployer.private_key, self.deployer.address)
        fund_vault(
            self.w3,
            self.token,
            self.deployer.private_key,
            self.vault,
            BaseUnits(10**15),
            mint_new=True,
        )
        set_operator(self.w3, self.vault, self.deployer.private_key, self.hot.address)
        self.safes: dict[str, ChecksumAddress] = {}
        singletons: dict[str, SafeContractName] = {"SafeL2 2-of-3": "SafeL2", "Safe 2-of-3": "Safe"}
        for path, singleton in singletons.items():
            deployment = deploy_safe_contracts(
                self.w3, self.deployer.private_key, singleton=singleton
            )
            safe = create_safe(
                self.w3,
                self.deployer.private_key,
                deployment,
                [owner.address for owner in self.owners],
                2,
                salt=0,
            )
            set_operator(self.w3, self.vault, self.deployer.private_key, safe)
            self.safes[path] = safe
        # The last Safe owns the vault; the other one is an operator, enough for `payout`.
        transfer_vault_ownership(
            self.w3, self.vault, self.deployer.private_key, self.safes["Safe 2-of-3"]
        )
        self.number = 1
        self.calldata_bytes: dict[str, int] = {}
        # A running system: each Safe's nonce already non-zero, the bitmap slot already written.
        for path, safe in self.safes.items():
            self._exec(safe, encode_payout(self.token, [self._payment(f"warm-up/{path}")]))
        send_payout(
            self.w3, self.vault, self.hot.private_key, self.token, [self._payment("warm-up")]
        )

    def _keys(self) -> list[PrivateKey]:
        return [self.owners[0].private_key, self.owners[2].private_key]

    def _payment(self, tag: str) -> Payment:
        payment = Payment(self.number, _address(tag), LARGE)
        self.number += 1
        return payment

    def _exec(self, safe: ChecksumAddress, data: bytes) -> TxReceipt:
        tx = SafeTx.call(self.vault, data, safe_nonce(self.w3, safe))
        digest, receipt = execute_safe_tx(self.w3, safe, tx, self._keys(), self.hot.private_key)
        result = execution_result(receipt["logs"], safe, digest)
        if result is None or not result.success:
            raise RuntimeError(f"the Safe {safe} did not execute {digest.hex()}")
        return receipt

    def pay(self, path: str, recipients: str, round_: int) -> tuple[int, int]:
        """(gas used, execution gas) of one payment of LARGE on `path`."""
        payment = self._payment(f"{path}/{recipients}/{round_}")
        if recipients == "warm":
            mint(
                self.w3,
                self.token,
                self.deployer.private_key,
                Web3.to_checksum_address(payment.recipient),
                BaseUnits(1),
            )
        if path == "hot wallet":
            receipt = send_payout(self.w3, self.vault, self.hot.private_key, self.token, [payment])
        else:
            receipt = self._exec(self.safes[path], encode_payout(self.token, [payment]))
        sent = self.w3.eth.get_transaction(receipt["transactionHash"])
        events = decode_payout_events(receipt["logs"], self.vault)
        if [(e.paid, e.total_amount) for e in events.executed] != [(1, LARGE)]:
            raise RuntimeError(f"{path}: the payout did not pay {payment}")
        calldata = bytes(sent["input"])
        self.calldata_bytes[path] = len(calldata)
        calldata_gas = sum(4 if byte == 0 else 16 for byte in calldata)
        return int(receipt["gasUsed"]), int(receipt["gasUsed"]) - 21_000 - calldata_gas


def measure() -> list[Row]:
    rows: list[Row] = []
    with AnvilProcess(quiet=True) as anvil:
        bench = _Bench(anvil)
        for recipients in ("fresh", "warm"):
            figures: dict[str, tuple[float, int, int]] = {}
            for path in PATHS:
                runs = [bench.pay(path, recipients, round_) for round_ in range(REPEATS)]
                executions = {execution for _gas, execution in runs}
                if len(executions) != 1:
                    raise RuntimeError(f"{path}, {recipients}: execution gas moved: {runs}")
                mean = sum(gas for gas, _execution in runs) / len(runs)
                figures[path] = (mean, executions.pop(), bench.calldata_bytes[path])
            hot_gas = figures["hot wallet"][0]
            for path in PATHS:
                gas, execution, size = figures[path]
                rows.append(Row(path, recipients, gas, gas - hot_gas, execution, size))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    config = {
        "benchmark": "safe_gas",
        "payment": f"one withdrawal of {LARGE // ONE_USDC:,} USDC per transaction",
        "paths": list(PATHS),
        "signatures": "2 of 3 owners, 65-byte ECDSA (v 27/28) each",
        "safe": "Safe v1.4.1 (npm @safe-global/safe-contracts 1.4.1), safeTxGas 0, gasPrice 0",
        "recipients": ["fresh", "warm"],
        "repeats": REPEATS,
        "chain": "anvil 1.7.1, chain id 137",
        "token": "TestStablecoin (OpenZeppelin ERC20 5.x, 6 decimals)",
        "python": platform.python_version(),
    }
    print("configuration:", json.dumps(config))
    rows = measure()
    print(
        f"{'path':>14} | {'recipients':>10} | {'gas':>9} | {'over hot wallet':>15} | "
        f"{'execution gas':>13} | {'calldata bytes':>14}"
    )
    for r in rows:
        print(
            f"{r.path:>14} | {r.recipients:>10} | {r.gas:9,.0f} | {r.over_hot_wallet:+15,.0f} | "
            f"{r.execution_gas:13,d} | {r.calldata_bytes:14d}"
        )
    out = args.out or RESULTS / "safe_gas.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"config": config, "rows": [asdict(r) for r in rows], "time": time.time()}
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
