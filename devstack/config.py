"""The stack's one settings object, read from the environment (defaults documented here).

Ports are checked before anything starts, so a taken port fails at once with the variable to
set instead of as a crash loop of the service that cannot bind it.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from withdrawal_shared import settings as shared_settings
from withdrawal_shared.settings import SettingsError, env_bool, env_int, env_str


def _port(stack_var: str, service_var: str | None, default: int) -> int:
    """`stack_var` wins, then the service's own variable (e.g. SIGNER_GRPC_PORT), then default."""
    if os.environ.get(stack_var):
        return env_int(stack_var, default, minimum=1)
    if service_var and os.environ.get(service_var):
        return env_int(service_var, default, minimum=1)
    return default


SAFE_OWNERS = 3
"""The treasury Safe's owners (STACK_TREASURY_SAFE, on by default), one signer process each."""
SAFE_THRESHOLD = 2
"""The owners' signatures the treasury Safe needs."""

BACKGROUND_SERVICES = ("processor", "monitor", "signer", "webhooks")
"""Services off the API's request path: they run at `StackConfig.batch_nice`."""


def background_nice_env(nice: int) -> dict[str, str]:
    """`<NAME>_NICE` for every background service (`withdrawal_shared.runtime` applies it)."""
    return {f"{name.upper()}_NICE": str(nice) for name in BACKGROUND_SERVICES}


@dataclass(frozen=True)
class StackConfig:
    var_dir: Path
    """AWS_VAR_DIR: where the SQLite file, logs, keystore and stack.json live (default var/)."""
    anvil_port: int = 8545
    """STACK_ANVIL_PORT: anvil's JSON-RPC port."""
    http_port: int = 8080
    """STACK_HTTP_PORT (or GATEWAY_HTTP_PORT): the gateway's REST/JSON port."""
    grpc_port: int = 50051
    """STACK_GRPC_PORT (or GATEWAY_GRPC_PORT): the gateway's gRPC port."""
    signer_port: int = 50052
    """STACK_SIGNER_PORT (or SIGNER_GRPC_PORT)."""
    processor_port: int = 50053
    """STACK_PROCESSOR_PORT (or PROCESSOR_GRPC_PORT)."""
    monitor_port: int = 50054
    """STACK_MONITOR_PORT (or MONITOR_GRPC_PORT)."""
    webhooks_port: int = 50055
    """STACK_WEBHOOKS_PORT (or WEBHOOKS_GRPC_PORT): the webhook sender's health port."""
    signer_health_port: int = 50056
    """STACK_SIGNER_HEALTH_PORT (or SIGNER_HEALTH_PORT): with TLS on, the signer's plaintext
    gRPC health port (its gRPC port then requires a client certificate)."""
    tls: bool = True
    """STACK_TLS: the processor calls the signer over mutual TLS with certificates of a local CA
    issued under `<var>/tls/` (`withdrawal_shared.tls`), and the signer answers only the
    processor (and the bootstrap's ListWallets); false: plaintext, as in Kubernetes."""
    gateway_metrics_port: int = 9101
    """STACK_GATEWAY_METRICS_PORT (or GATEWAY_METRICS_PORT): the gateway's /metrics."""
    processor_metrics_port: int = 9102
    """STACK_PROCESSOR_METRICS_PORT (or PROCESSOR_METRICS_PORT)."""
    signer_metrics_port: int = 9103
    """STACK_SIGNER_METRICS_PORT (or SIGNER_METRICS_PORT)."""
    monitor_metrics_port: int = 9104
    """STACK_MONITOR_METRICS_PORT (or MONITOR_METRICS_PORT)."""
    webhooks_metrics_port: int = 9105
    """STACK_WEBHOOKS_METRICS_PORT (or WEBHOOKS_METRICS_PORT): the webhook sender's /metrics."""
    redis_url: str | None = None
    """REDIS_URL: use this Redis; unset means 127.0.0.1:6379 if it answers, else our own."""
    redis_prefix: str = "aws:"
    """REDIS_PREFIX: prefix of every Redis key the stack uses."""
    database_url: str | None = None
    """DATABASE_URL: use (and only migrate) this database; unset means a fresh SQLite file."""
    startup_timeout: float = 90.0
    """STACK_STARTUP_TIMEOUT: seconds each service gets to report SERVING."""
    hot_wallets: int = 2
    """STACK_HOT_WALLETS: how many hot wallets (keystore keys, each with its own nonce sequence)
    the signer holds; passed to it as SIGNER_KEYSTORE_COUNT. All are registered and funded."""
    emergency_wallets: int = 1
    """STACK_EMERGENCY_WALLETS: how many more keystore keys the signer holds as EMERGENCY-role
    hot wallets (the last ones it lists): registered, funded and made vault operators like the
    others, they pay only EMERGENCY withdrawals. 0: EMERGENCY withdrawals share the standard
    wallets."""
    batch_nice: int = 10
    """STACK_BATCH_NICE: the services off the API's request path (`BACKGROUND_SERVICES`: the
    processor, the monitor, the signer and the webhook sender) run at this nice value (their
    `<NAME>_NICE`, unless that is set), so that on cores they share with the gateway an API
    request is served before work that can wait a few milliseconds (a batch waits up to a
    second for company anyway); 0 runs all at the same priority."""
    treasury_safe: bool = True
    """STACK_TREASURY_SAFE (on by default; `0` turns it off): a 2-of-3 treasury Safe (v1.4.1)
    owns the PayoutVault (the bootstrap's `treasury_safe_owners`), its three owner keys each in
    its own signer process (`safe_owner_1..3`, SIGNER_ROLE=safe_owner, one keystore key under
    `<var>/safe_owner_<n>/`), and the processor's treasury executor calls them
    (PROCESSOR_SAFE_OWNER_SIGNERS): the vault's owner functions (operators, pause, outflow
    cap, sweep) then run only through treasury changes (`treasury.*`, `awctl changes`). Off:
    no Safe and no owner signers; the deployer key (anvil dev account 0) owns the vault."""
    safe_owner_port: int = 50060
    """STACK_SAFE_OWNER_PORT: the first owner signer's gRPC port; the others take the next
    two (with STACK_TREASURY_SAFE)."""
    safe_owner_health_port: int = 50063
    """STACK_SAFE_OWNER_HEALTH_PORT: with TLS on, the first owner signer's plaintext health
    port; the others take the next two."""
    safe_owner_metrics_port: int = 9106
    """STACK_SAFE_OWNER_METRICS_PORT: the first owner signer's /metrics; the others take the
    next two."""
    service_users: bool = False
    """STACK_SERVICE_USERS: with a MySQL/MariaDB DATABASE_URL, each service connects as its own
    least-privileged user (`withdrawal_shared.db.grants`), created after the migrations; the
    passwords are kept in `<var>/db-users.json`. SQLite has no users."""

    @classmethod
    def from_env(cls) -> StackConfig:
        timeout_raw = env_str("STACK_STARTUP_TIMEOUT", "90")
        try:
            timeout = float(timeout_raw)
        except ValueError:
            raise SettingsError(f"STACK_STARTUP_TIMEOUT={timeout_raw!r} is not a number") from None
        return cls(
            var_dir=shared_settings.VAR_DIR,
            anvil_port=_port("STACK_ANVIL_PORT", None, 8545),
            http_port=_port("STACK_HTTP_PORT", "GATEWAY_HTTP_PORT", 8080),
            grpc_port=_port("STACK_GRPC_PORT", "GATEWAY_GRPC_PORT", 50051),
            signer_port=_port("STACK_SIGNER_PORT", "SIGNER_GRPC_PORT", 50052),
            processor_port=_port("STACK_PROCESSOR_PORT", "PROCESSOR_GRPC_PORT", 50053),
            monitor_port=_port("STACK_MONITOR_PORT", "MONITOR_GRPC_PORT", 50054),
            webhooks_port=_port("STACK_WEBHOOKS_PORT", "WEBHOOKS_GRPC_PORT", 50055),
            signer_health_port=_port("STACK_SIGNER_HEALTH_PORT", "SIGNER_HEALTH_PORT", 50056),
            tls=env_bool("STACK_TLS", True),
            gateway_metrics_port=_port("STACK_GATEWAY_METRICS_PORT", "GATEWAY_METRICS_PORT", 9101),
            processor_metrics_port=_port(
                "STACK_PROCESSOR_METRICS_PORT", "PROCESSOR_METRICS_PORT", 9102
            ),
            signer_metrics_port=_port("STACK_SIGNER_METRICS_PORT", "SIGNER_METRICS_PORT", 9103),
            monitor_metrics_port=_port("STACK_MONITOR_METRICS_PORT", "MONITOR_METRICS_PORT", 9104),
            webhooks_metrics_port=_port(
                "STACK_WEBHOOKS_METRICS_PORT", "WEBHOOKS_METRICS_PORT", 9105
            ),
            redis_url=os.environ.get("REDIS_URL") or None,
            redis_prefix=env_str("REDIS_PREFIX", "aws:"),
            database_url=os.environ.get("DATABASE_URL") or None,
            startup_timeout=timeout,
            hot_wallets=env_int("STACK_HOT_WALLETS", 2, minimum=1),
            emergency_wallets=env_int("STACK_EMERGENCY_WALLETS", 1, minimum=0),
            batch_nice=env_int("STACK_BATCH_NICE", 10, minimum=0),
            service_users=env_bool("STACK_SERVICE_USERS", False),
            treasury_safe=env_bool("STACK_TREASURY_SAFE", True),
            safe_owner_port=_port("STACK_SAFE_OWNER_PORT", None, 50060),
            safe_owner_health_port=_port("STACK_SAFE_OWNER_HEALTH_PORT", None, 50063),
            safe_owner_metrics_port=_port("STACK_SAFE_OWNER_METRICS_PORT", None, 9106),
        )

    # -- derived paths ---------------------------------------------------------------------

    @property
    def logs_dir(self) -> Path:
        return self.var_dir / "logs"

    @property
    def tls_dir(self) -> Path:
        """The local CA and the services' certificates (`withdrawal_shared.tls`)."""
        return self.var_dir / "tls"

    @property
    def sqlite_path(self) -> Path:
        return self.var_dir / "withdrawals.sqlite3"

    @property
    def default_database_url(self) -> str:
        return f"sqlite:///{self.sqlite_path}"

    @property
    def stack_json(self) -> Path:
        return self.var_dir / "stack.json"

    @property
    def db_users_file(self) -> Path:
        return self.var_dir / "db-users.json"

    @property
    def keystore_path(self) -> Path:
        return self.var_dir / "signer" / "keystore.json"

    @property
    def keystore_password_file(self) -> Path:
        return self.var_dir / "signer" / "keystore.password"

    def safe_owner_dir(self, index: int) -> Path:
        """The keystore directory of owner signer `index` (1-based)."""
        return self.var_dir / f"safe_owner_{index}"

    def safe_owner_ports(self) -> list[tuple[int, int, int]]:
        """(gRPC, health, metrics) port of each owner signer; none without STACK_TREASURY_SAFE."""
        if not self.treasury_safe:
            return []
        return [
            (
                self.safe_owner_port + i,
                self.safe_owner_health_port + i,
                self.safe_owner_metrics_port + i,
            )
            for i in range(SAFE_OWNERS)
        ]

    def ports(self) -> list[tuple[str, str, int]]:
        """(what, variable to change it, port) for every port the stack listens on."""
        owners: list[tuple[str, str, int]] = []
        for index, (grpc_port, health, metrics) in enumerate(self.safe_owner_ports(), 1):
            owners += [
                (f"owner signer {index} gRPC", "STACK_SAFE_OWNER_PORT", grpc_port),
                (f"owner signer {index} metrics", "STACK_SAFE_OWNER_METRICS_PORT", metrics),
            ]
            if self.tls:
                owners.append(
                    (f"owner signer {index} health", "STACK_SAFE_OWNER_HEALTH_PORT", health)
                )
        return [
            ("anvil JSON-RPC", "STACK_ANVIL_PORT", self.anvil_port),
            ("gateway REST", "STACK_HTTP_PORT", self.http_port),
            ("gateway gRPC", "STACK_GRPC_PORT", self.grpc_port),
            ("signer gRPC", "STACK_SIGNER_PORT", self.signer_port),
            ("processor gRPC", "STACK_PROCESSOR_PORT", self.processor_port),
            ("monitor gRPC", "STACK_MONITOR_PORT", self.monitor_port),
            ("webhooks gRPC", "STACK_WEBHOOKS_PORT", self.webhooks_port),
            ("signer health", "STACK_SIGNER_HEALTH_PORT", self.signer_health_port),
            ("gateway metrics", "STACK_GATEWAY_METRICS_PORT", self.gateway_metrics_port),
            ("processor metrics", "STACK_PROCESSOR_METRICS_PORT", self.processor_metrics_port),
            ("signer metrics", "STACK_SIGNER_METRICS_PORT", self.signer_metrics_port),
            ("monitor metrics", "STACK_MONITOR_METRICS_PORT", self.monitor_metrics_port),
            ("webhooks metrics", "STACK_WEBHOOKS_METRICS_PORT", self.webhooks_metrics_port),
            *owners,
        ]

    def metrics_ports(self) -> dict[str, int]:
        """Service name -> the port of its Prometheus endpoint."""
        return {
            "gateway": self.gateway_metrics_port,
            "processor": self.processor_metrics_port,
            "signer": self.signer_metrics_port,
            "monitor": self.monitor_metrics_port,
            "webhooks": self.webhooks_metrics_port,
            **{
                f"safe_owner_{index}": metrics
                for index, (_grpc, _health, metrics) in enumerate(self.safe_owner_ports(), 1)
            },
        }


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


PORT_CLAIMS = Path(tempfile.gettempdir()) / "aws-port-claims"
"""Where `free_port` notes the ports it handed out, one empty file each,
so that processes drawing ports at the same time (parallel test workers, several stacks) never
get the same one between the draw and the bind."""
PORT_CLAIM_SECONDS = 900
"""A claim older than this is void: the port's server had time to bind it or is gone."""


def _claim(port: int) -> bool:
    """Claim `port` for this caller across processes; False when another claim holds it."""
    PORT_CLAIMS.mkdir(parents=True, exist_ok=True)
    path = PORT_CLAIMS / str(port)
    for _ in range(2):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if age < PORT_CLAIM_SECONDS:
                return False
            path.unlink(missing_ok=True)  # void: take it over
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now, for a server started a moment later.

    Drawn at random below the kernel's ephemeral range, not picked by the OS (`bind(0)`):
    the OS hands out ports of the ephemeral range, which outgoing connections also take, so
    a port it reported free could be some client's local port by the time the server binds
    it (seen with several stacks starting at once). Each port handed out is claimed in
    `PORT_CLAIMS` for `PORT_CLAIM_SECONDS`, so two processes drawing at once never get the
    same one. Falls back to the OS's pick."""
    low, _ = _ephemeral_range()
    floor = min(20000, max(1024, low - 1024))
    for _ in range(50):
        port = floor + secrets.randbelow(low - floor)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        if _claim(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        found: int = sock.getsockname()[1]
        return found


def free_ports_in_a_row(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive ports nothing listens on, each claimed like
    `free_port`'s (for settings such as STACK_SAFE_OWNER_PORT, whose next ports go to the
    next owner signers)."""
    for _ in range(50):
        first = free_port(host)
        taken = [first]
        for port in range(first + 1, first + count):
            if port > 65535 or not port_is_free(port, host) or not _claim(port):
                break
            taken.append(port)
        if len(taken) == count:
            return first
        for port in taken:  # give back what this try claimed
            (PORT_CLAIMS / str(port)).unlink(missing_ok=True)
    raise OSError(f"found no {count} free consecutive ports on {host}")


def check_ports(config: StackConfig) -> list[str]:
    """One message per taken or duplicated port, each naming the variable to set."""
    problems: list[str] = []
    seen: dict[int, str] = {}
    for what, variable, port in config.ports():
        if port in seen:
            problems.append(
                f"{what} and {seen[port]} are both configured on port {port}: set {variable}"
            )
            continue
        seen[port] = what
        if not port_is_free(port):
            problems.append(
                f"port {port} ({what}) is taken: stop whatever listens there (another "
                f"`make up`?) or set {variable} to a free port, e.g. {variable}={free_port()}"
            )
    return problems
