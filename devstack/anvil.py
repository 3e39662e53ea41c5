"""A local Polygon stand-in: the pinned anvil binary as a managed process, plus its RPC extras.

`AnvilProcess` starts anvil from `node_modules` (npm package `@foundry-rs/anvil`) on 127.0.0.1
with chain id 137, waits until it answers `eth_chainId`, exposes its URL and funded dev accounts,
and stops it (terminate, then kill) when the `with` block ends.

The module-level helpers (`mine`, `set_automine`, `reorg`, `drop_transaction`, `snapshot`,
`revert`, `set_balance`, ...) are thin typed wrappers over anvil's non-standard JSON-RPC methods,
called through any `Web3` connected to an anvil.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from web3 import Web3
from web3.types import RPCEndpoint

from devstack.config import free_port
from withdrawal_shared.chain.types import (
    POLYGON_CHAIN_ID,
    ChecksumAddress,
    HexStr,
    PrivateKey,
    SnapshotId,
    Wei,
)

__all__ = [
    "ANVIL_DEFAULT_MNEMONIC",
    "AnvilError",
    "AnvilProcess",
    "AnvilRpcError",
    "DevAccount",
    "drop_all_transactions",
    "drop_transaction",
    "find_anvil_binary",
    "mine",
    "reorg",
    "revert",
    "rpc",
    "set_automine",
    "set_balance",
    "set_block_gas_limit",
    "set_interval_mining",
    "set_next_block_base_fee",
    "snapshot",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The repository root: the directory holding `devstack/` and `node_modules/`."""

# Anvil's (and Hardhat's) well-known default mnemonic. Its keys are public: fine for local tests,
# never to be funded on a real network.
ANVIL_DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"

DEFAULT_GAS_LIMIT = 60_000_000
_LISTENING = re.compile(r"Listening on [0-9.]+:(\d+)")
_PLATFORM_PACKAGES = {
    ("Linux", "x86_64"): "anvil-linux-amd64",
    ("Linux", "aarch64"): "anvil-linux-arm64",
    ("Darwin", "x86_64"): "anvil-darwin-amd64",
    ("Darwin", "arm64"): "anvil-darwin-arm64",
}


class AnvilError(RuntimeError):
    """Anvil could not be found, started or stopped."""


class AnvilRpcError(AnvilError):
    """An anvil JSON-RPC call answered with an error."""

    def __init__(self, method: str, error: Any) -> None:
        super().__init__(f"{method} failed: {error}")
        self.method = method
        self.error = error


@dataclass(frozen=True, slots=True)
class DevAccount:
    """One of anvil's pre-funded accounts (derived from the mnemonic it was started with)."""

    address: ChecksumAddress
    private_key: PrivateKey = field(repr=False)


def find_anvil_binary(repo_root: Path = REPO_ROOT) -> Path:
    """Return the native anvil binary shipped by the npm package, or explain how to get it.

    The native binary is used instead of `node_modules/.bin/anvil` (a node wrapper) so that
    terminating the process really stops anvil. `ANVIL_BIN` overrides the lookup.
    """
    override = os.environ.get("ANVIL_BIN")
    if override:
        path = Path(override)
        if not path.is_file():
            raise AnvilError(f"ANVIL_BIN={override} is not a file")
        return path
    scope = repo_root / "node_modules" / "@foundry-rs"
    preferred = _PLATFORM_PACKAGES.get((platform.system(), platform.machine()))
    candidates = [scope / preferred / "bin" / "anvil"] if preferred else []
    candidates += sorted(scope.glob("anvil-*/bin/anvil"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise AnvilError(
        f"anvil binary not found under {scope}: run `make deps` (npm install) in {repo_root} "
        "to install the pinned @foundry-rs/anvil package, or set ANVIL_BIN"
    )


def _tail(path: Path, max_chars: int = 2000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-max_chars:]


class AnvilProcess:
    """A running anvil on 127.0.0.1, as a context manager.

    >>> with AnvilProcess() as anvil:  # doctest: +SKIP
    ...     w3 = anvil.web3()
    ...     deployer = anvil.accounts[0]

    `block_time=None` (the default) automines: every transaction gets its own block at once,
    which suits tests. A number of seconds (fractions allowed) switches to interval mining,
    closer to a real chain. Output goes to `log_path` (a temporary file when not given, removed
    after a clean stop); `quiet=True` passes anvil's `--quiet` (alias `--silent`).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        chain_id: int = POLYGON_CHAIN_ID,
        block_time: float | None = None,
        gas_limit: int = DEFAULT_GAS_LIMIT,
        mnemonic: str = ANVIL_DEFAULT_MNEMONIC,
        accounts: int = 10,
        balance_ether: int = 10_000,
        quiet: bool = False,
        log_path: Path | None = None,
        startup_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        binary: Path | None = None,
    ) -> None:
        if block_time is not None and block_time <= 0:
            raise ValueError("block_time must be positive (None means automine)")
        self.host = "127.0.0.1"
        self.chain_id = chain_id
        self.block_time = block_time
        self.gas_limit = gas_limit
        self.mnemonic = mnemonic
        self.account_count = accounts
        self.balance_ether = balance_ether
        self.quiet = quiet
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self._binary = binary
        self._requested_port = port
        self._given_log_path = log_path
        self._port: int | None = None
        self._log_path: Path | None = None
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._accounts: tuple[DevAccount, ...] = ()

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start anvil and block until it answers `eth_chainId` with the expected chain id."""
        if self._process is not None:
            raise AnvilError("anvil is already running")
        binary = self._binary or find_anvil_binary()
        self.stop()  # clears the work directory a failed start left behind
        # Kept when start-up fails, so the log named in the error can still be read.
        workdir = self._workdir = Path(tempfile.mkdtemp(prefix="anvil-"))
        self._log_path = self._given_log_path or workdir / "anvil.log"
        config_out = workdir / "config.json"
        # With no port asked for, anvil picks a free one itself (--port 0) and prints it, which
        # avoids the probe-then-bind race; when quiet there is no print, so probe for one.
        port = self._requested_port
        if port is None and self.quiet:
            port = free_port()
        argv = [
            str(binary),
            "--host",
            self.host,
            "--port",
            str(port if port is not None else 0),
            "--chain-id",
            str(self.chain_id),
            "--gas-limit",
            str(self.gas_limit),
            "--mnemonic",
            self.mnemonic,
            "--accounts",
            str(self.account_count),
            "--balance",
            str(self.balance_ether),
            "--config-out",
            str(config_out),
        ]
        if self.block_time is not None:
            argv += ["--block-time", f"{self.block_time:g}"]
        if self.quiet:
            argv.append("--quiet")
        argv += self.extra_args
        with self._log_path.open("wb") as log:
            # Its own session: a terminal's Ctrl-C reaches the owner, which stops anvil
            # last, after the services that use it.
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._port = self._wait_until_ready(port, config_out)
            self._accounts = self._read_accounts(config_out)
        except BaseException:
            self._kill()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate anvil (kill it if it does not exit within `timeout`); idempotent."""
        self._kill(timeout)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _kill(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def _wait_until_ready(self, port: int | None, config_out: Path) -> int:
        assert self._process is not None and self._log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise AnvilError(
                    f"anvil exited with code {code} during start-up; log {self._log_path}:\n"
                    f"{_tail(self._log_path)}"
                )
            if port is None:
                match = _LISTENING.search(_tail(self._log_path, 100_000))
                port = int(match.group(1)) if match else None
            if port is not None and config_out.exists():
                chain_id = self._probe_chain_id(port)
                if chain_id is not None:
                    if chain_id != self.chain_id:
                        raise AnvilError(
                            f"127.0.0.1:{port} answered chain id {chain_id}, "
                            f"expected {self.chain_id} (another node on that port?)"
                        )
                    return port
            time.sleep(0.05)
        raise AnvilError(
            f"anvil did not answer eth_chainId within {self.startup_timeout:g}s; "
            f"log {self._log_path}:\n{_tail(self._log_path)}"
        )

    def _probe_chain_id(self, port: int) -> int | None:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        request = urllib.request.Request(  # always http://127.0.0.1
            f"http://{self.host}:{port}",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=1.0) as response:  # noqa: S310
                answer = json.load(response)
        except (OSError, urllib.error.URLError, ValueError):
            return None
        result = answer.get("result")
        return int(result, 16) if isinstance(result, str) else None

    def _read_accounts(self, config_out: Path) -> tuple[DevAccount, ...]:
        config = json.loads(config_out.read_text())
        return tuple(
            DevAccount(Web3.to_checksum_address(address), PrivateKey(key))
            for address, key in zip(
                config["available_accounts"], config["private_keys"], strict=True
            )
        )

    # -- what a running anvil offers -------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        return self._require_process().pid

    @property
    def port(self) -> int:
        self._require_process()
        assert self._port is not None
        return self._port

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        """Where anvil's output goes (None after a stop removed the temporary log)."""
        if self._given_log_path is not None:
            return self._given_log_path
        return self._log_path if self._workdir is not None else None

    @property
    def accounts(self) -> tuple[DevAccount, ...]:
        """The pre-funded dev accounts, as anvil reported them (address and private key)."""
        self._require_process()
        return self._accounts

    def web3(self, request_timeout: float = 30.0) -> Web3:
        """A new synchronous `Web3` over HTTP to this anvil."""
        return Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": request_timeout}))

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise AnvilError("anvil is not running: use `with AnvilProcess() as anvil:`")
        return self._process

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._process is not None else "stopped"
        return f"AnvilProcess({where}, chain_id={self.chain_id}, block_time={self.block_time})"


# -- anvil's RPC extras ----------------------------------------------------------------------


def rpc(w3: Web3, method: str, params: Sequence[Any] = ()) -> Any:
    """Call a JSON-RPC method directly and return its result, raising `AnvilRpcError`."""
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    if "error" in response and response["error"] is not None:
        raise AnvilRpcError(method, response["error"])
    return response.get("result")


def mine(w3: Web3, blocks: int = 1, *, interval_seconds: int | None = None) -> None:
    """Mine `blocks` blocks now (`anvil_mine`), optionally `interval_seconds` apart in time."""
    if blocks < 1:
        raise ValueError("blocks must be at least 1")
    params = [hex(blocks)] if interval_seconds is None else [hex(blocks), hex(interval_seconds)]
    rpc(w3, "anvil_mine", params)


def set_automine(w3: Web3, enabled: bool) -> None:
    """Turn automine (one block per transaction, at once) on or off (`evm_setAutomine`)."""
    rpc(w3, "evm_setAutomine", [enabled])


def set_interval_mining(w3: Web3, seconds: int) -> None:
    """Mine a block every `seconds` (`evm_setIntervalMining`); 0 turns interval mining off."""
    rpc(w3, "evm_setIntervalMining", [seconds])


def set_block_gas_limit(w3: Web3, gas_limit: int) -> None:
    """The gas limit of the blocks mined from now on (`evm_setBlockGasLimit`)."""
    rpc(w3, "evm_setBlockGasLimit", [hex(gas_limit)])


def reorg(
    w3: Web3, depth: int, tx_block_pairs: Sequence[tuple[HexStr | dict[str, Any], int]] = ()
) -> None:
    """Replace the last `depth` blocks with new ones (`anvil_reorg`).

    The transactions of the replaced blocks are gone (not returned to the mempool). Each
    `(transaction, offset)` pair puts a transaction (raw signed hex, or a request object that
    anvil signs for an unlocked account) into the new block at `offset` (0 = the first
    replacement block, depth - 1 = the new head).
    """
    if depth < 1:
        raise ValueError("depth must be at least 1")
    rpc(w3, "anvil_reorg", [depth, [[tx, offset] for tx, offset in tx_block_pairs]])


def drop_transaction(w3: Web3, tx_hash: HexStr | bytes) -> None:
    """Remove a pending transaction from anvil's mempool (`anvil_dropTransaction`)."""
    as_hex = Web3.to_hex(tx_hash) if isinstance(tx_hash, bytes) else Web3.to_hex(hexstr=tx_hash)
    rpc(w3, "anvil_dropTransaction", [as_hex])


def drop_all_transactions(w3: Web3) -> None:
    """Empty anvil's mempool (`anvil_dropAllTransactions`)."""
    rpc(w3, "anvil_dropAllTransactions")


def snapshot(w3: Web3) -> SnapshotId:
    """Snapshot the chain state (`evm_snapshot`); hand the id to `revert`."""
    return SnapshotId(str(rpc(w3, "evm_snapshot")))


def revert(w3: Web3, snapshot_id: SnapshotId) -> bool:
    """Return to a snapshot (`evm_revert`); False if it is unknown. The snapshot is used up."""
    return bool(rpc(w3, "evm_revert", [snapshot_id]))


def set_balance(w3: Web3, address: ChecksumAddress, amount: Wei) -> None:
    """Set an account's native (POL) balance (`anvil_setBalance`)."""
    rpc(w3, "anvil_setBalance", [address, hex(amount)])


def set_next_block_base_fee(w3: Web3, base_fee: Wei) -> None:
    """Set the next block's EIP-1559 base fee (`anvil_setNextBlockBaseFeePerGas`)."""
    rpc(w3, "anvil_setNextBlockBaseFeePerGas", [hex(base_fee)])
