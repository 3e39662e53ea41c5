"""A whole stack of its own, for the chaos harness, the benchmarks and the crash-point tests.

`make up` (`runner.Stack`) is the model: the same start-up order (anvil, Redis, migrations,
signer, bootstrap, gateway, processor, monitor) and the same supervisor that restarts a service
which dies. What differs here is ownership: a `HarnessStack` owns everything it touches, so a
test or a benchmark may kill, flush and restart it freely without harming anything else.

- **Redis**: always its own `redis-server` on a free port (`restart_redis`/`flush_redis` act on
  it alone; the machine's Redis on 6379 is never touched).
- **Database**: a MariaDB database of its own (`aws_harness_<hex>`), created, migrated and
  dropped at `stop()`, or a SQLite file under `var_dir`. On MariaDB each service connects as
  its own least-privileged user (`withdrawal_shared.db.grants`: `aws_harness_<hex>_<service>`
  at the server's loopback address), created after the migrations and dropped at `stop()`;
  `service_users=False` runs them all as the administrator instead. `database_url` (the
  bootstrap, `sessions()`, the tests' checks) stays the administrator's.
- **anvil**: interval mining (`block_time`, 2 s by default like the benchmarks ask) with a
  60M block gas limit; `w3` talks to it directly, never through the fault proxies.
- **RPC**: with `rpc_proxies=n` the services reach anvil only through n fault-injecting
  JSON-RPC proxies (`chaos.fault_proxy`), as a comma-separated
  `CHAIN_RPC_URL`, so they fail over between them; `proxies` lets the caller switch faults on.
- **Services**: the five `svc_*` as real processes under a `Supervisor` polled by a thread of
  its own; `kill(name)` SIGKILLs one (its whole process group), and the supervisor restarts it
  after `restart_delay` seconds. Their output goes to `var_dir/logs/<name>.log`, the
  supervisor's own lines to `var_dir/logs/harness.log`.
- **Treasury Safe** (`treasury_safe`, on by default, as in `make up`): three more signer
  processes, `safe_owner_1..3` (SIGNER_ROLE=safe_owner, one keystore key each under
  `var_dir/safe_owner_<n>/`, ports of their own, the same TLS as the signer), start beside the
  signer; the bootstrap creates a 2-of-3 Safe v1.4.1 of their keys and hands it the
  PayoutVault, and every processor gets PROCESSOR_SAFE_OWNER_SIGNERS. The vault's owner
  functions then run only through treasury changes (`treasury.*`). The owner signers are not
  in `service_names` (the chaos faults leave them alone) but `kill`, `wait_serving` and
  `serving` take their names. The Safe's deployment needs a 6M-gas block: a lower `gas_limit`
  applies from the end of the bootstrap on.

`env` applies to every service, `service_env[name]` to one (e.g. the crash-point variables of
`withdrawal_shared.crash_points` for the processor alone).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TextIO

import pymysql  # type: ignore[import-untyped]
from sqlalchemy import create_engine, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from devstack.anvil import AnvilProcess, set_automine, set_block_gas_limit, set_interval_mining
from devstack.bootstrap import BootstrapResult
from devstack.config import SAFE_OWNERS, StackConfig, free_port, free_ports_in_a_row
from devstack.probes import health_status
from devstack.redis_server import RedisHandle, start_redis_server
from devstack.runner import CHAIN, Service, Stack
from devstack.supervisor import Child, ChildSpec, Supervisor
from svc_signer.keys.keystore import create_keystore, keystore_paths, resolve_password
from withdrawal_shared.chain.types import POLYGON_CHAIN_ID
from withdrawal_shared.db import grants, session_nice
from withdrawal_shared.db.models import Chain
from withdrawal_shared.settings import REPO_ROOT

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from chaos.fault_proxy import FaultProxy

SERVICES = ("signer", "gateway", "processor", "monitor", "webhooks")
REPLICABLE = ("gateway", "processor", "monitor")
"""The services `HarnessConfig.replicas` may run several of."""
MARIADB_DEFAULT = "mysql+pymysql://root:@127.0.0.1:3306/"
KEYSTORE_KDF_ITERATIONS = 2
"""pbkdf2 rounds of the harness's keystores (throwaway keys of a throwaway chain, created before
the signers start): opening one costs nothing, where scrypt's default costs about a second of
CPU per key to create and another to open (`_create_keystores`)."""
SAFE_DEPLOYMENT_GAS_LIMIT = 6_000_000
"""The block gas limit the bootstrap needs with a treasury Safe (deploying SafeL2 takes 5.3M)."""


@dataclass
class HarnessConfig:
    var_dir: Path
    """Logs, keystore and (with `database="sqlite"`) the database file live here."""
    block_time: float = 2.0
    gas_limit: int = 60_000_000
    """The block gas limit (with `treasury_safe`, from the end of the bootstrap on when it is
    below `SAFE_DEPLOYMENT_GAS_LIMIT`)."""
    database: str = "mariadb"
    """`mariadb` (a database of its own on `mariadb_url`'s server) or `sqlite`."""
    mariadb_url: str = field(
        default_factory=lambda: os.environ.get("HARNESS_MARIADB_URL", MARIADB_DEFAULT)
    )
    """Server to create the database on (its path part is ignored)."""
    keep_database: bool = False
    service_users: bool = True
    """On MariaDB, each service connects as its own user with only its grants (dropped at
    `stop()`); False: every service connects as `mariadb_url`'s user."""
    hot_wallets: int = 2
    emergency_wallets: int = 0
    """EMERGENCY-role hot wallets besides `hot_wallets` (STACK_EMERGENCY_WALLETS)."""
    rpc_proxies: int = 0
    """Fault-injecting proxies in front of anvil the services must go through (0: direct)."""
    confirmations: int | None = None
    """The chain's confirmation depth, written to the `chains` row after bootstrap."""
    env: Mapping[str, str] = field(default_factory=dict)
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    restart_delay: float = 0.2
    """Seconds before the supervisor restarts a service that died (no doubling below
    `stable_after`=2 s of uptime; the cap is 2 s)."""
    startup_timeout: float = 120.0
    native_funding_ether: int = 10_000
    """POL each hot wallet holds after start-up (set directly with anvil_setBalance)."""
    tls: bool = True
    """The processor calls the signer over mutual TLS (`StackConfig.tls`), as in `make up`."""
    replicas: Mapping[str, int] = field(default_factory=dict)
    """Processes per service (1 when not named): `gateway`, `processor` and `monitor` may run
    several (`REPLICABLE`). The extra ones are children `<name>-2`, `<name>-3`, … with ports of
    their own and the same database, Redis and chain; a processor replica gets its own
    `PROCESSOR_REPLICA` (so its own consumer name), and the monitors elect their leader by
    their lease."""
    treasury_safe: bool = True
    """A 2-of-3 treasury Safe owns the PayoutVault, its owner keys in three signer processes of
    their own (`StackConfig.treasury_safe`, as `make up` does by default); False: the deployer
    key (anvil dev account 0) owns it."""


class _HarnessRunner(Stack):
    """`runner.Stack` with the harness's anvil, Redis, proxies and service environment."""

    def __init__(self, harness: HarnessStack, config: StackConfig, supervisor: Supervisor):
        super().__init__(config, supervisor)
        self.harness = harness

    def _start_anvil(self) -> None:
        cfg = self.harness.config
        # Whole seconds: automine through the bootstrap (a dozen set-up transactions would
        # each wait for a block), then interval mining (`HarnessStack._after_bootstrap`).
        anvil = AnvilProcess(
            port=self.config.anvil_port,
            chain_id=POLYGON_CHAIN_ID,
            block_time=None if float(cfg.block_time).is_integer() else cfg.block_time,
            gas_limit=self.harness.bootstrap_gas_limit,
            log_path=self.config.logs_dir / "anvil.log",
            quiet=True,
        )
        anvil.start()
        self.anvil = anvil
        self.harness._start_proxies(anvil.rpc_url)

    def _start_redis(self) -> None:
        self.redis = self.harness.redis

    def service_env(self) -> dict[str, str]:
        env = super().service_env()
        env["CHAIN_RPC_URL"] = self.harness.services_rpc_url
        processors = self.harness.config.replicas.get("processor", 1)
        if processors > 1:  # one batching partition each (svc_processor.partitions)
            env["PROCESSOR_PARTITIONS"] = str(processors)
        env.update(self.harness.config.env)
        return env

    def spawn_replica(self, base: Service, index: int) -> tuple[Service, Child]:
        """Replica `index` (2, 3, …) of `base`: its environment with ports of its own."""
        prefix = base.name.upper()
        name = f"{base.name}-{index}"
        port = free_port()
        env = {
            **self.env_for(base),
            **self.harness.config.service_env.get(base.name, {}),
            f"{prefix}_GRPC_PORT": str(port),
            f"{prefix}_METRICS_PORT": str(free_port()),
        }
        if base.name == "gateway":
            env["GATEWAY_HTTP_PORT"] = str(free_port())
        if base.name == "processor":
            env["PROCESSOR_REPLICA"] = str(index - 1)
        spec = ChildSpec(
            name=name,
            argv=(sys.executable, "-m", base.module),
            env=env,
            cwd=REPO_ROOT,
            log_path=self.config.logs_dir / f"{name}.log",
        )
        return Service(name, base.module, port), self.sup.start(spec)

    def _spawn(self, service: Service) -> Child:
        log_path = self.config.logs_dir / f"{service.name}.log"
        env = {**self.env_for(service), **self.harness.config.service_env.get(service.name, {})}
        spec = ChildSpec(
            name=service.name,
            argv=(sys.executable, "-m", service.module),
            env=env,
            cwd=REPO_ROOT,
            log_path=log_path,
        )
        return self.sup.start(spec)


class HarnessStack:
    """See the module docstring. Use as a context manager; `stop()` is idempotent."""

    def __init__(self, config: HarnessConfig) -> None:
        self.config = config
        self.var_dir = config.var_dir
        self.logs_dir = config.var_dir / "logs"
        self.proxies: list[FaultProxy] = []
        self.services_rpc_url = ""
        self.redis: RedisHandle | None = None
        self.database_url = ""
        self._database_name: str | None = None
        self._service_users: tuple[list[str], str] | None = None
        """(user names, account host) to drop at `stop()`."""
        self._runner: _HarnessRunner | None = None
        self._supervisor: Supervisor | None = None
        self._sup_out: TextIO | None = None
        self._sup_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._engine: Engine | None = None
        self.boot: BootstrapResult | None = None
        self.kills: dict[str, int] = {name: 0 for name in SERVICES}
        self.replicas: list[Service] = []
        """The extra processes of `HarnessConfig.replicas`, once started."""
        unknown = set(config.replicas) - set(REPLICABLE)
        if unknown or any(count < 1 for count in config.replicas.values()):
            raise ValueError(
                f"replicas {dict(config.replicas)}: only {', '.join(REPLICABLE)} may run "
                "several processes, at least one each"
            )

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        cfg = self.config
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.redis = start_redis_server(self.logs_dir / "redis.log")
        self.database_url = self._create_database()
        owner_ports = self._owner_ports()
        stack_config = StackConfig(
            var_dir=self.var_dir,
            anvil_port=free_port(),
            http_port=free_port(),
            grpc_port=free_port(),
            signer_port=free_port(),
            processor_port=free_port(),
            monitor_port=free_port(),
            webhooks_port=free_port(),
            signer_health_port=free_port(),
            tls=cfg.tls,
            gateway_metrics_port=free_port(),
            processor_metrics_port=free_port(),
            signer_metrics_port=free_port(),
            monitor_metrics_port=free_port(),
            webhooks_metrics_port=free_port(),
            redis_url=self.redis.url,
            redis_prefix="aws:",
            database_url=self.database_url,
            startup_timeout=cfg.startup_timeout,
            hot_wallets=cfg.hot_wallets,
            emergency_wallets=cfg.emergency_wallets,
            treasury_safe=cfg.treasury_safe,
            safe_owner_port=owner_ports[0],
            safe_owner_health_port=owner_ports[1],
            safe_owner_metrics_port=owner_ports[2],
        )
        self._sup_out = (self.logs_dir / "harness.log").open("a", encoding="utf-8")
        self._supervisor = Supervisor(
            self._sup_out,
            color=False,
            backoff_initial=cfg.restart_delay,
            backoff_max=2.0,
            stable_after=2.0,
            stop_grace=5.0,
        )
        runner = _HarnessRunner(self, stack_config, self._supervisor)
        self._runner = runner
        runner.config.var_dir.mkdir(parents=True, exist_ok=True)
        runner._start_anvil()
        runner._start_redis()
        runner._prepare_database()
        self._create_service_users(runner)
        self._create_keystores(runner)
        wallets, owners = runner._start_signers()
        self.boot = runner._bootstrap(wallets, owners)
        runner._write_stack_json(self.boot)
        self._after_bootstrap()
        # Side by side, as `make up` starts them: each waits for SERVING after all were spawned.
        started = [
            (service, runner._spawn(service))
            for service in (runner.gateway, runner.processor, runner.monitor, runner.webhooks)
        ]
        for service, child in started:
            runner._wait_serving(service, child)
        bases = {s.name: s for s in (runner.gateway, runner.processor, runner.monitor)}
        for name, count in cfg.replicas.items():
            for index in range(2, count + 1):
                replica, child = runner.spawn_replica(bases[name], index)
                runner._wait_serving(replica, child)
                self.replicas.append(replica)
                self.kills[replica.name] = 0
        runner.starting = False
        self._sup_thread = threading.Thread(
            target=self._supervisor.run, args=(self._stop,), name="harness-supervisor", daemon=True
        )
        self._sup_thread.start()
        return self

    def stop(self) -> None:
        """Stop everything started, each step even when an earlier one failed (or a second
        Ctrl-C arrives): services, anvil, proxies, Redis, then drop the database."""
        self._stop.set()
        steps = (
            self._stop_services,
            self._reset_idle_server_threads,
            self._stop_anvil,
            self._stop_proxies,
            self._stop_redis,
            self._dispose_engine,
            self._drop_service_users,
            self._drop_database,
            self._close_log,
        )
        failure: BaseException | None = None
        for step in steps:
            try:
                step()
            except BaseException as exc:  # finish cleaning up, then re-raise the first
                failure = failure or exc
        if failure is not None:
            raise failure

    def _stop_services(self) -> None:
        if self._sup_thread is not None:
            self._sup_thread.join(5.0)
            self._sup_thread = None
        supervisor = self._supervisor
        if supervisor is not None:
            supervisor.stop_all()

    def _stop_anvil(self) -> None:
        runner = self._runner
        if runner is not None and runner.anvil is not None:
            anvil, runner.anvil = runner.anvil, None
            anvil.stop()

    def _stop_proxies(self) -> None:
        proxies, self.proxies = self.proxies, []
        for proxy in proxies:
            proxy.stop()

    def _stop_redis(self) -> None:
        redis_handle, self.redis = self.redis, None
        if redis_handle is not None:
            redis_handle.stop()

    def _dispose_engine(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def _close_log(self) -> None:
        out, self._sup_out = self._sup_out, None
        if out is not None:
            out.close()

    # -- what the caller uses --------------------------------------------------------------

    @property
    def anvil(self) -> AnvilProcess:
        assert self._runner is not None and self._runner.anvil is not None
        return self._runner.anvil

    def web3(self, request_timeout: float = 60.0) -> Web3:
        """A client of anvil itself (never through the proxies)."""
        return self.anvil.web3(request_timeout)

    @property
    def result(self) -> BootstrapResult:
        assert self.boot is not None
        return self.boot

    @property
    def vault_owner(self) -> str | None:
        """Who owns the PayoutVault now, read from the chain: the treasury Safe
        (`result.treasury_safe`) unless `treasury_safe` is off."""
        from withdrawal_shared.chain.payout import payout_vault_contract

        if self.result.payout_vault is None:
            return None
        owner: str = (
            payout_vault_contract(self.web3(), self.result.payout_vault).functions.owner().call()
        )
        return owner

    @property
    def api_key(self) -> str:
        return self.result.api_key

    @property
    def grpc_target(self) -> str:
        assert self._runner is not None
        return self._runner.gateway.target

    @property
    def metrics_targets(self) -> dict[str, str]:
        """Service name -> `host:port` of its Prometheus /metrics endpoint."""
        assert self._runner is not None
        return self._runner.metrics_targets()

    @property
    def rest_base_url(self) -> str:
        assert self._runner is not None
        return self._runner.rest_base_url()

    def sessions(self) -> sessionmaker[Session]:
        if self._engine is None:
            self._engine = create_engine(self.database_url, pool_pre_ping=True)
        return sessionmaker(self._engine, expire_on_commit=False)

    def child(self, name: str) -> Child:
        assert self._supervisor is not None
        return self._supervisor.children[name]

    def pid(self, name: str) -> int | None:
        child = self.child(name)
        return child.pid if child.running else None

    def kill(self, name: str) -> int | None:
        """SIGKILL service `name` (its process group); the supervisor restarts it. The pid."""
        child = self.child(name)
        process = child.process
        if process is None or process.poll() is not None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        self.kills[name] = self.kills.get(name, 0) + 1  # an owner signer's first kill adds it
        return process.pid

    def respawn(self, name: str, env: Mapping[str, str]) -> None:
        """Restart service `name` with `env` added to its environment (kept for later
        restarts too) and wait until it serves again; an empty value removes a variable."""
        child = self.child(name)
        assert child.spec.env is not None
        merged = {**child.spec.env, **env}
        child.spec = replace(child.spec, env={k: v for k, v in merged.items() if v != ""})
        if self.kill(name) is not None:
            self.kills[name] -= 1  # a restart asked for, not a fault
        self.wait_serving(name)

    def wait_serving(self, name: str, timeout: float | None = None) -> None:
        """Block until service `name` runs and reports SERVING (after a restart)."""
        assert self._runner is not None
        service = {s.name: s for s in self._services()}[name]
        deadline = time.monotonic() + (timeout or self.config.startup_timeout)
        while not self.child(name).running:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} was not restarted within the timeout")
            time.sleep(0.05)
        self._runner._wait_serving(service, self.child(name))

    def _services(self) -> list[Service]:
        assert self._runner is not None
        r = self._runner
        return [r.signer, r.gateway, r.processor, r.monitor, r.webhooks, *self.replicas, *r.owners]

    @property
    def owner_names(self) -> list[str]:
        """The treasury Safe's owner signers (`safe_owner_1`, …); none without it."""
        assert self._runner is not None
        return [owner.name for owner in self._runner.owners]

    @property
    def owner_targets(self) -> list[str]:
        """The gRPC address of each owner signer (the processors' PROCESSOR_SAFE_OWNER_SIGNERS)."""
        assert self._runner is not None
        return [owner.target for owner in self._runner.owners]

    @property
    def bootstrap_gas_limit(self) -> int:
        """anvil's block gas limit until the end of the bootstrap."""
        if self.config.treasury_safe:
            return max(self.config.gas_limit, SAFE_DEPLOYMENT_GAS_LIMIT)
        return self.config.gas_limit

    @property
    def service_names(self) -> list[str]:
        """Every service process's name: `SERVICES`, then the replicas (`gateway-2`, …)."""
        return [*SERVICES, *(replica.name for replica in self.replicas)]

    @property
    def gateway_targets(self) -> list[str]:
        """The gRPC address of every gateway process (the first is `grpc_target`)."""
        replicas = [r.target for r in self.replicas if r.name.startswith("gateway-")]
        return [self.grpc_target, *replicas]

    def serving(self, name: str) -> bool:
        """Whether service `name` runs and its gRPC health says SERVING right now."""
        if not self.child(name).running:
            return False
        service = {s.name: s for s in self._services()}[name]
        return health_status(service.probe_target, timeout=2.0) == "SERVING"

    def running(self, name: str) -> bool:
        return self.child(name).running

    def restarts(self, name: str) -> int:
        return self.child(name).restarts

    def flush_redis(self) -> None:
        """FLUSHALL on the harness's own Redis: every stream, group and pending entry is lost."""
        import redis

        assert self.redis is not None
        client = redis.Redis.from_url(self.redis.url)
        try:
            client.flushall()
        finally:
            client.close()

    def restart_redis(self, down_seconds: float = 0.5) -> None:
        """Stop the harness's Redis (keeping nothing) and start an empty one on the same port."""
        assert self.redis is not None and self.redis.process is not None
        port = int(self.redis.url.rsplit(":", 1)[1].split("/")[0])
        self.redis.stop()
        time.sleep(down_seconds)
        fresh = start_redis_server(self.logs_dir / "redis.log", port=port)
        self.redis.process = fresh.process

    def log_tail(self, name: str, lines: int = 40) -> str:
        return "\n".join(list(self.child(name).tail)[-lines:])

    # -- internals -------------------------------------------------------------------------

    def _start_proxies(self, upstream: str) -> None:
        if self.config.rpc_proxies <= 0:
            self.services_rpc_url = upstream
            return
        from chaos.fault_proxy import FaultProxy

        for index in range(self.config.rpc_proxies):
            self.proxies.append(FaultProxy(upstream, seed=index).start())
        self.services_rpc_url = ",".join(p.url for p in self.proxies)

    def _create_keystores(self, runner: _HarnessRunner) -> None:
        """Every key the signer and the owner signers will hold, written before they start
        with a cheap KDF (`KEYSTORE_KDF_ITERATIONS`) under the password each will read; they
        open these like any keystore instead of creating their own."""
        for service in (runner.signer, *runner.owners):
            env = {**runner.env_for(service), **self.config.service_env.get(service.name, {})}
            if env.get("SIGNER_KEY_BACKEND", "keystore") != "keystore":
                continue
            password = resolve_password(
                password_file=Path(env["SIGNER_KEYSTORE_PASSWORD_FILE"]), environ=env
            )
            count = int(env["SIGNER_KEYSTORE_COUNT"])
            for path in keystore_paths(Path(env["SIGNER_KEYSTORE_PATH"]), count):
                if not path.exists():
                    create_keystore(
                        path, password, kdf="pbkdf2", iterations=KEYSTORE_KDF_ITERATIONS
                    )

    def _owner_ports(self) -> tuple[int, int, int]:
        """The first owner signer's (gRPC, health, metrics) ports, each the first of a run of
        `SAFE_OWNERS` free ones (the others take the next); StackConfig's defaults, unused,
        without a treasury Safe."""
        if not self.config.treasury_safe:
            return (
                StackConfig.safe_owner_port,
                StackConfig.safe_owner_health_port,
                StackConfig.safe_owner_metrics_port,
            )
        return (
            free_ports_in_a_row(SAFE_OWNERS),
            free_ports_in_a_row(SAFE_OWNERS),
            free_ports_in_a_row(SAFE_OWNERS),
        )

    def _after_bootstrap(self) -> None:
        cfg = self.config
        w3 = self.web3()
        if self.bootstrap_gas_limit != cfg.gas_limit:
            set_block_gas_limit(w3, cfg.gas_limit)
        if float(cfg.block_time).is_integer():
            set_automine(w3, False)
            set_interval_mining(w3, int(cfg.block_time))
        for wallet in (*self.result.hot_wallets, *self.result.emergency_wallets):
            w3.provider.make_request(
                "anvil_setBalance",  # type: ignore[arg-type]
                [wallet, hex(cfg.native_funding_ether * 10**18)],
            )
        if cfg.confirmations is not None:
            with self.sessions().begin() as session:
                session.execute(
                    update(Chain).where(Chain.name == CHAIN).values(confirmations=cfg.confirmations)
                )

    def _create_database(self) -> str:
        cfg = self.config
        if cfg.database == "sqlite":
            return f"sqlite:///{self.var_dir / f'harness-{secrets.token_hex(4)}.sqlite3'}"
        if cfg.database != "mariadb":
            raise ValueError(f"database must be 'mariadb' or 'sqlite', not {cfg.database!r}")
        name = f"aws_harness_{secrets.token_hex(4)}"
        with contextlib.closing(self._admin()) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        self._database_name = name
        url = make_url(cfg.mariadb_url).set(database=name, query={"charset": "utf8mb4"})
        return url.render_as_string(hide_password=False)

    def _create_service_users(self, runner: _HarnessRunner) -> None:
        if not (self.config.database == "mariadb" and self.config.service_users):
            return
        assert self._database_name is not None
        host = grants.account_host(self.database_url)
        names = grants.user_names(f"{self._database_name}_")
        self._service_users = (list(names.values()), host)  # dropped at stop() whatever happens
        accounts = grants.provision(self.database_url, host=host)
        runner.service_urls = {name: account.database_url for name, account in accounts.items()}

    def service_database_url(self, name: str) -> str:
        """The DATABASE_URL service `name` runs with (its own user's, or `database_url`)."""
        assert self._runner is not None
        return self._runner.service_urls.get(name, self.database_url)

    def _drop_service_users(self) -> None:
        users, self._service_users = self._service_users, None
        if users is not None:
            grants.drop_users(self.database_url, users[0], users[1])

    def _reset_idle_server_threads(self) -> None:
        """Nice 0 again for MariaDB's idle threads that sessions of services killed niced left
        behind (`session_nice.reset_idle_threads`): the server is shared."""
        if self.config.database != "mariadb" or self._database_name is None:
            return
        with contextlib.closing(self._admin()) as conn, conn.cursor() as cur:
            reset = session_nice.reset_idle_threads(cur)
        if reset:
            log.info("MariaDB threads left niced by stopped sessions set back to 0: %d", reset)

    def _drop_database(self) -> None:
        name, self._database_name = self._database_name, None
        if name is None or self.config.keep_database:
            return
        with contextlib.closing(self._admin()) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")

    def _admin(self) -> Any:
        url = make_url(self.config.mariadb_url)
        return pymysql.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 3306,
            user=url.username or "root",
            password=url.password or "",
        )


@contextlib.contextmanager
def harness_stack(config: HarnessConfig) -> Iterator[HarnessStack]:
    with HarnessStack(config) as stack:
        yield stack


__all__: Sequence[str] = ["SERVICES", "HarnessConfig", "HarnessStack", "harness_stack"]
