"""`make up`, step by step: ports, anvil, Redis, database, the signer and the treasury Safe's
owner signers, bootstrap, the rest, curls.

`main()` returns the process exit code: 0 after a clean stop (Ctrl-C in the terminal, or
SIGINT or SIGTERM sent to this process alone, once the stack was up), 1 when start-up failed
(the message says what to do), 130 when start-up was interrupted (the step under way ends
first, then start-up goes no further). Whatever was started is stopped in every case: the
services (SIGTERM to each one's process group, up to 10 s, then SIGKILL), then anvil, then a
redis-server the stack started itself.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy.engine import make_url
from web3 import Web3

from devstack.anvil import AnvilError, AnvilProcess, set_automine, set_interval_mining
from devstack.bootstrap import TOKEN_SYMBOL, BootstrapResult, bootstrap
from devstack.config import SAFE_THRESHOLD, StackConfig, background_nice_env, check_ports
from devstack.probes import NotServingError, list_wallets, wait_http_ok, wait_serving
from devstack.redis_server import RedisHandle, resolve_redis
from devstack.supervisor import Child, ChildSpec, Supervisor
from withdrawal_shared.chain.types import POLYGON_CHAIN_ID
from withdrawal_shared.settings import REPO_ROOT, SettingsError
from withdrawal_shared.tls import TlsFiles, issue_local_pki

ANVIL_BLOCK_TIME = 2
ANVIL_GAS_LIMIT = 60_000_000
CHAIN = "polygon"


class StackError(RuntimeError):
    """Start-up cannot go on; the message says what to do next."""


class StopRequested(BaseException):  # like KeyboardInterrupt, not an Exception
    """SIGINT or SIGTERM arrived while the stack was starting: start-up goes no further.

    Raised by the start-up itself between its steps (`Stack._checkpoint`), never from the
    signal handler: a process is always recorded where `_shutdown` finds it before start-up
    can stop."""


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    port: int
    health_port: int | None = None
    """A plaintext port serving only gRPC health, where `port` wants a client certificate."""

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def probe_target(self) -> str:
        """Where its gRPC health answers without a certificate."""
        return f"127.0.0.1:{self.health_port or self.port}"

    def exists(self) -> bool:
        try:
            return importlib.util.find_spec(f"{self.module}.__main__") is not None
        except ImportError:
            return False


TLS_IDENTITIES = ("signer", "processor", "bootstrap")
"""The certificates `make up` issues: the signer's, its caller's, and the bootstrap's (which
lists the signer's wallets to fund them)."""


def redact_url(url: str) -> str:
    """The URL with its password hidden (for messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (e.g. redis://): hide any user info
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` as JSON to `path` with mode 0600, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def read_previous_api_key(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text()).get("api_key")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def read_previous_admin_credentials(path: Path) -> tuple[str | None, str | None]:
    """The admin credentials of the last run's stack.json (None where missing)."""
    try:
        data = json.loads(path.read_text())
        values = (data.get("admin_credential"), data.get("second_admin_credential"))
    except (OSError, ValueError, AttributeError):
        return None, None
    first, second = (v if isinstance(v, str) and v else None for v in values)
    return first, second


def write_private_text(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
    os.chmod(path, 0o600)


# Work on any machine with the project's prerequisites (bash, curl, python3): no uuidgen, no jq.
_NEW_REQUEST_ID = "$(python3 -c 'import uuid; print(uuid.uuid4())')"
_READ_API_KEY = "python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[\"api_key\"])'"
_AUTH_HEADER = '"Authorization: Bearer $KEY"'


@dataclass(frozen=True)
class Curls:
    """Ready-to-paste shell lines: `key` sets $KEY from stack.json, then `create` and `get`."""

    key: str
    create: str
    get: str
    """Replace <id> by the created withdrawal's id."""


def curl_commands(rest_base_url: str, stack_json: Path) -> Curls:
    """Commands that read the API key from `stack_json` (never printed) and create a withdrawal
    of 12.5 USDC to a fresh address under a new request id, then read it back."""
    recipient = Web3.to_checksum_address("0x" + secrets.token_hex(20))
    body = json.dumps(
        {"token": TOKEN_SYMBOL, "recipientAddress": recipient, "amount": "12.5"},
        separators=(",", ":"),
    )
    key = f"KEY=$({_READ_API_KEY} {shlex.quote(str(stack_json))})"
    create = " ".join(
        [
            "curl -sS -X POST",
            shlex.quote(f"{rest_base_url}/v1/withdrawals"),
            "-H",
            _AUTH_HEADER,
            "-H",
            f'"Idempotency-Key: {_NEW_REQUEST_ID}"',
            "-H",
            shlex.quote("Content-Type: application/json"),
            "-d",
            shlex.quote(body),
        ]
    )
    get = " ".join(
        ["curl -sS", shlex.quote(f"{rest_base_url}/v1/withdrawals/<id>"), "-H", _AUTH_HEADER]
    )
    return Curls(key, create, get)


class Stack:
    def __init__(self, config: StackConfig, supervisor: Supervisor) -> None:
        self.config = config
        self.sup = supervisor
        self.stop = threading.Event()
        self.starting = True
        self.anvil: AnvilProcess | None = None
        self.redis: RedisHandle | None = None
        self.database_url = ""
        self.service_urls: dict[str, str] = {}
        """A service's own DATABASE_URL (its own database user), where it has one."""
        self.previous_api_key: str | None = None
        self.previous_admin_credentials: tuple[str | None, str | None] = (None, None)
        # With TLS the signer's gRPC port wants a client certificate: probes use its health port.
        self.signer = Service(
            "signer",
            "svc_signer",
            config.signer_port,
            health_port=config.signer_health_port if config.tls else None,
        )
        self.tls = (
            issue_local_pki(config.tls_dir, TLS_IDENTITIES) if config.tls else dict[str, TlsFiles]()
        )
        self.gateway = Service("gateway", "svc_gateway", config.grpc_port)
        self.processor = Service("processor", "svc_processor", config.processor_port)
        self.monitor = Service("monitor", "svc_monitor", config.monitor_port)
        self.webhooks = Service("webhooks", "svc_webhooks", config.webhooks_port)
        # STACK_TREASURY_SAFE (on by default): the treasury Safe's owners, one signer each.
        self.owners = [
            Service(
                f"safe_owner_{index}",
                "svc_signer",
                grpc_port,
                health_port=health if config.tls else None,
            )
            for index, (grpc_port, health, _metrics) in enumerate(config.safe_owner_ports(), 1)
        ]

    # -- the whole run ---------------------------------------------------------------------

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            try:
                self._start()
                self.starting = False
                self.sup.run(self.stop)
                self.sup.say("stop requested: stopping the stack")
                return 0
            except StopRequested:
                self.sup.say("start-up interrupted: stopping what was started")
                return 130
            except StackError as exc:
                for line in str(exc).splitlines():
                    self.sup.say(f"ERROR: {line}")
                return 1
            except Exception:
                for line in traceback.format_exc().rstrip().splitlines():
                    self.sup.say(line)
                self.sup.say(
                    "ERROR: unexpected failure (a bug in the stack runner); the traceback is "
                    "above: please report it with var/logs/"
                )
                return 1
            finally:
                self.starting = False
                self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop.is_set():
            self.sup.say(f"{name} again: already stopping (children get SIGKILL after 10s)")
            return
        self.stop.set()
        if self.starting:
            self.sup.say(f"{name} received: stopping once the current start-up step ends")
        else:
            self.sup.say(f"{name} received")

    def _checkpoint(self) -> None:
        """Raise `StopRequested` when SIGINT or SIGTERM has arrived."""
        if self.stop.is_set():
            raise StopRequested

    def _progress(self, message: str) -> None:
        self.sup.say(message)
        self._checkpoint()

    def _shutdown(self) -> None:
        self.stop.set()
        self.sup.stop_all()
        if self.anvil is not None:
            self.sup.say("stopping anvil")
            self.anvil.stop()
        if self.redis is not None and self.redis.process is not None:
            self.sup.say("stopping our redis-server")
            self.redis.stop()
        self.sup.say("stack stopped")

    # -- start-up --------------------------------------------------------------------------

    def _start(self) -> None:
        config = self.config
        config.var_dir.mkdir(parents=True, exist_ok=True)
        config.logs_dir.mkdir(parents=True, exist_ok=True)
        problems = check_ports(config)
        if problems:
            raise StackError("\n".join(problems))
        # The ports are free, so no other stack uses this var/: the last run's stack.json goes
        # (the bootstrap may reuse its API key), and stack.json existing means this stack serves.
        self.previous_api_key = read_previous_api_key(config.stack_json)
        self.previous_admin_credentials = read_previous_admin_credentials(config.stack_json)
        config.stack_json.unlink(missing_ok=True)
        services = self._available_services()

        self._checkpoint()
        self._start_anvil()
        self._checkpoint()
        self._start_redis()
        self._checkpoint()
        self._prepare_database()
        self._checkpoint()

        wallets: list[str] = []
        owners: list[str] = []
        if self.signer in services:
            wallets, owners = self._start_signers()
            self._checkpoint()
        if not self.owners:
            self.sup.say(
                "no treasury Safe (STACK_TREASURY_SAFE=0): the deployer key (anvil dev account "
                "0) owns the PayoutVault"
            )
        result = self._bootstrap(wallets, owners)
        self._start_block_interval()
        self._checkpoint()

        children: list[tuple[Service, Child]] = []
        for service in (self.gateway, self.processor, self.monitor, self.webhooks):
            if service in services:
                children.append((service, self._spawn(service)))
        for service, child in children:
            self._wait_serving(service, child)
            if service is self.gateway:
                self._wait_rest(child)
        # Whoever waits for stack.json may use everything it names at once.
        self._write_stack_json(result)
        self._announce(services)

    def _available_services(self) -> list[Service]:
        available: list[Service] = []
        for service in (self.signer, self.gateway, self.processor, self.monitor, self.webhooks):
            if service.exists():
                available.append(service)
                continue
            consequence = {
                "signer": "no hot wallet is registered or funded, and nothing gets signed",
                "gateway": "there is no API to create withdrawals",
                "processor": "withdrawals stay RECEIVED",
                "monitor": "paid withdrawals never reach COMPLETED",
                "webhooks": "no webhook is delivered",
            }[service.name]
            self.sup.say(
                f"WARNING: {service.module}/__main__.py does not exist yet: running without "
                f"the {service.name} ({consequence})"
            )
        return available

    def _start_anvil(self) -> None:
        config = self.config
        log_path = config.logs_dir / "anvil.log"
        self.sup.say(
            f"starting anvil on 127.0.0.1:{config.anvil_port} (chain id {POLYGON_CHAIN_ID}, "
            f"mining each bootstrap transaction at once, then a block every {ANVIL_BLOCK_TIME}s, "
            f"gas limit {ANVIL_GAS_LIMIT:,}); log {log_path}"
        )
        # Automine until the bootstrap is done (its dozen transactions would each wait for the
        # next block), then interval mining: `_start_block_interval`.
        anvil = AnvilProcess(
            port=config.anvil_port,
            chain_id=POLYGON_CHAIN_ID,
            block_time=None,
            gas_limit=ANVIL_GAS_LIMIT,
            log_path=log_path,
        )
        try:
            anvil.start()
        except AnvilError as exc:
            raise StackError(f"anvil did not start: {exc}") from None
        self.anvil = anvil
        self.sup.say(f"anvil is up at {anvil.rpc_url}")

    def _start_block_interval(self) -> None:
        """From the end of the bootstrap on, a block every ANVIL_BLOCK_TIME seconds (and no
        more automine), as on a real chain."""
        assert self.anvil is not None
        w3 = self.anvil.web3()
        set_automine(w3, False)
        set_interval_mining(w3, ANVIL_BLOCK_TIME)
        self.sup.say(f"anvil mines a block every {ANVIL_BLOCK_TIME}s from now on")

    def _start_redis(self) -> None:
        try:
            self.redis = resolve_redis(self.config.redis_url, self.config.logs_dir / "redis.log")
        except RuntimeError as exc:
            raise StackError(str(exc)) from None
        where = {
            "REDIS_URL": "REDIS_URL",
            "system": "the Redis already running on 127.0.0.1:6379",
            "own": "our own redis-server (stopped with the stack)",
        }[self.redis.source]
        self.sup.say(
            f"redis: {redact_url(self.redis.url)} ({where}), key prefix "
            f"{self.config.redis_prefix!r}"
        )

    def _prepare_database(self) -> None:
        from withdrawal_shared.db.migrate import upgrade

        config = self.config
        if config.database_url:
            self.database_url = config.database_url
            self.sup.say(
                f"database: {redact_url(self.database_url)} from DATABASE_URL "
                "(migrating only; nothing is dropped)"
            )
        else:
            # The chain is new on every `make up`, so rows pointing at the last chain's
            # contracts, nonces and transactions would be wrong: start from a new file.
            removed = False
            for suffix in ("", "-wal", "-shm", "-journal"):
                path = Path(f"{config.sqlite_path}{suffix}")
                if path.exists():
                    path.unlink()
                    removed = True
            self.database_url = config.default_database_url
            self.sup.say(
                f"database: {'fresh' if not removed else 'deleted the old one; fresh'} SQLite "
                f"file {config.sqlite_path} (set DATABASE_URL to keep data between runs)"
            )
        self.sup.say("running database migrations ...")
        try:
            upgrade(self.database_url)
        except Exception as exc:
            raise StackError(
                f"migrating {redact_url(self.database_url)} failed: {exc}\n"
                "check DATABASE_URL and that its server is running and reachable "
                "(unset DATABASE_URL to use a local SQLite file)"
            ) from None
        self.sup.say("database is at the newest migration")
        if config.service_users:
            self._service_users()

    def _service_users(self) -> None:
        """Each service its own least-privileged user (`make up` with STACK_SERVICE_USERS)."""
        from withdrawal_shared.db import grants

        if make_url(self.database_url).get_backend_name() == "sqlite":
            self.sup.say(
                "STACK_SERVICE_USERS: SQLite has no users; every service opens the file itself"
            )
            return
        path = self.config.db_users_file
        try:
            accounts = grants.provision(
                self.database_url, passwords=grants.read_passwords(path, self.database_url)
            )
        except (grants.GrantsError, OSError) as exc:
            raise StackError(f"creating the services' database users failed: {exc}") from None
        except Exception as exc:  # the driver's own errors: the server said no
            raise StackError(
                f"creating the services' database users failed ({type(exc).__name__}): the "
                "DATABASE_URL user needs CREATE USER and GRANT OPTION"
            ) from None
        grants.write_credentials(path, accounts)
        self.service_urls = {name: account.database_url for name, account in accounts.items()}
        users = ", ".join(f"{a.user}@{a.host}" for a in accounts.values())
        self.sup.say(
            f"each service connects as its own database user: {users} (passwords in {path})"
        )

    def service_env(self) -> dict[str, str]:
        config = self.config
        assert self.anvil is not None and self.redis is not None
        env = dict(os.environ)
        env.update(
            {
                "AWS_VAR_DIR": str(config.var_dir),
                "PYTHONUNBUFFERED": "1",
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis.url,
                "REDIS_PREFIX": config.redis_prefix,
                "CHAIN": CHAIN,
                "CHAIN_RPC_URL": self.anvil.rpc_url,
                "SIGNER_TARGET": self.signer.target,
                "SIGNER_HEALTH_PORT": str(self.config.signer_health_port),
                "GATEWAY_HTTP_PORT": str(config.http_port),
                "GATEWAY_GRPC_PORT": str(config.grpc_port),
                "SIGNER_GRPC_PORT": str(config.signer_port),
                "PROCESSOR_GRPC_PORT": str(config.processor_port),
                "MONITOR_GRPC_PORT": str(config.monitor_port),
                "WEBHOOKS_GRPC_PORT": str(config.webhooks_port),
                "SIGNER_KEY_BACKEND": "keystore",
                "SIGNER_KEYSTORE_PATH": str(config.keystore_path),
                "SIGNER_KEYSTORE_COUNT": str(config.hot_wallets + config.emergency_wallets),
                "SIGNER_KEYSTORE_PASSWORD_FILE": str(config.keystore_password_file),
            }
        )
        # Tracing stays off unless OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set; the OTEL_*
        # variables pass through, except the service name: each service names itself.
        env.pop("OTEL_SERVICE_NAME", None)
        # Development: partners' endpoints may be http on loopback (a local receiver).
        env.setdefault("WEBHOOKS_ALLOW_HTTP_LOOPBACK", "true")
        if self.tls:  # each service reads its own prefix's files
            env.update(self.tls["signer"].env("SIGNER"))
            env.update(self.tls["processor"].env("PROCESSOR"))
        for variable, value in background_nice_env(config.batch_nice).items():
            env.setdefault(variable, value)
        # ... and their database sessions too, when MariaDB runs on this host.
        env.setdefault("DATABASE_SESSION_NICE", "true")
        for name, port in config.metrics_ports().items():
            env[f"{name.upper()}_METRICS_PORT"] = str(port)
        return env

    def metrics_targets(self) -> dict[str, str]:
        """Service name -> `host:port` of its /metrics (what `make observe` scrapes)."""
        return {name: f"127.0.0.1:{port}" for name, port in self.config.metrics_ports().items()}

    def env_for(self, service: Service) -> dict[str, str]:
        """`service_env()` with the service's own DATABASE_URL where it has one."""
        env = self.service_env()
        if service.name in self.service_urls:
            env["DATABASE_URL"] = self.service_urls[service.name]
        if service in self.owners:
            index = self.owners.index(service) + 1
            directory = self.config.safe_owner_dir(index)
            _grpc, health, metrics = self.config.safe_owner_ports()[index - 1]
            env.update(
                {
                    "SIGNER_ROLE": "safe_owner",
                    "SIGNER_GRPC_PORT": str(service.port),
                    "SIGNER_HEALTH_PORT": str(health),
                    "SIGNER_METRICS_PORT": str(metrics),
                    "SIGNER_KEYSTORE_PATH": str(directory / "keystore.json"),
                    "SIGNER_KEYSTORE_PASSWORD_FILE": str(directory / "keystore.password"),
                    "SIGNER_KEYSTORE_COUNT": "1",
                }
            )
            if "signer" in self.service_urls:  # the signer's database user
                env["DATABASE_URL"] = self.service_urls["signer"]
        if service is self.processor and self.owners:
            env["PROCESSOR_SAFE_OWNER_SIGNERS"] = ",".join(o.target for o in self.owners)
        return env

    def _spawn(self, service: Service) -> Child:
        log_path = self.config.logs_dir / f"{service.name}.log"
        with contextlib.suppress(FileNotFoundError):
            log_path.unlink()  # one log per `make up`
        self.sup.say(f"starting {service.name} (gRPC {service.target}); log {log_path}")
        spec = ChildSpec(
            name=service.name,
            argv=(sys.executable, "-m", service.module),
            env=self.env_for(service),
            cwd=REPO_ROOT,
            log_path=log_path,
        )
        return self.sup.start(spec)

    def _wait_serving(self, service: Service, child: Child) -> None:
        try:
            wait_serving(
                service.probe_target,
                timeout=self.config.startup_timeout,
                alive=lambda: child.running and not self.stop.is_set(),
                what=service.name,
            )
        except NotServingError as exc:
            self._checkpoint()
            code = child.process.poll() if child.process is not None else None
            if code is not None:
                raise StackError(
                    f"{service.name} exited with code {code} during start-up; its output is "
                    f"above and in {child.spec.log_path}: fix the error it reports and run "
                    "`make up` again"
                ) from None
            raise StackError(
                f"{exc}; see {child.spec.log_path}. If the machine is just slow, raise "
                "STACK_STARTUP_TIMEOUT (seconds)"
            ) from None
        self.sup.say(f"{service.name} is SERVING on {service.target}")

    def _wait_rest(self, child: Child) -> None:
        url = f"{self.rest_base_url()}/healthz"
        try:
            wait_http_ok(
                url,
                timeout=self.config.startup_timeout,
                alive=lambda: child.running and not self.stop.is_set(),
                what="the gateway's REST port",
            )
        except NotServingError as exc:
            self._checkpoint()
            raise StackError(
                f"{exc}; see {child.spec.log_path}. If the machine is just slow, raise "
                "STACK_STARTUP_TIMEOUT (seconds)"
            ) from None
        self.sup.say(f"gateway REST answers on {self.rest_base_url()}")

    def _start_service(self, service: Service) -> Child:
        child = self._spawn(service)
        self._wait_serving(service, child)
        return child

    def _signer_wallets(self) -> list[str]:
        import grpc

        try:
            wallets = list_wallets(self.signer.target, tls=self.tls.get("bootstrap"))
        except grpc.RpcError as exc:
            raise StackError(
                f"signer ListWallets failed: {exc}; see {self.config.logs_dir / 'signer.log'}"
            ) from None
        if not wallets:
            raise StackError(
                "the signer holds no wallet: check SIGNER_KEYSTORE_PATH "
                f"({self.config.keystore_path}) and the signer's log"
            )
        if len(wallets) != self.config.hot_wallets + self.config.emergency_wallets:
            self.sup.say(
                f"WARNING: STACK_HOT_WALLETS={self.config.hot_wallets} and "
                f"STACK_EMERGENCY_WALLETS={self.config.emergency_wallets} but the signer holds "
                f"{len(wallets)} wallet(s); registering those"
            )
        for address, backend in wallets:
            self.sup.say(f"signer holds hot wallet {address} ({backend})")
        return [address for address, _backend in wallets]

    def _emergency_wallets(self, wallets: list[str]) -> list[str]:
        """The last STACK_EMERGENCY_WALLETS of the signer's wallets (never all of them)."""
        count = min(self.config.emergency_wallets, max(0, len(wallets) - 1))
        return wallets[len(wallets) - count :] if count else []

    def _start_signers(self) -> tuple[list[str], list[str]]:
        """Start the hot wallets' signer and the treasury Safe's owner signers (with
        STACK_TREASURY_SAFE) side by side, each creating or opening its keystore meanwhile,
        and return (the hot wallets, the owner keys)."""
        started = [(service, self._spawn(service)) for service in (self.signer, *self.owners)]
        for service, child in started:
            self._wait_serving(service, child)
        return self._signer_wallets(), self._owner_keys()

    def _owner_keys(self) -> list[str]:
        """The owner key each owner signer holds (exactly one each), in their order."""
        import grpc

        owners: list[str] = []
        for service in self.owners:
            try:
                held = list_wallets(service.target, tls=self.tls.get("bootstrap"))
            except grpc.RpcError as exc:
                raise StackError(
                    f"{service.name} ListWallets failed: {exc}; see "
                    f"{self.config.logs_dir / (service.name + '.log')}"
                ) from None
            if len(held) != 1:
                raise StackError(f"{service.name} holds {len(held)} keys, not one owner key")
            self.sup.say(f"{service.name} holds treasury Safe owner key {held[0][0]}")
            owners.append(held[0][0])
        return owners

    def _bootstrap(self, wallets: list[str], owners: Sequence[str] = ()) -> BootstrapResult:
        assert self.anvil is not None
        self.sup.say("bootstrapping the chain and the database ...")
        deployer = self.anvil.accounts[0]
        try:
            result = bootstrap(
                self.anvil.web3(),
                deployer,
                self.database_url,
                wallets,
                previous_api_key=self.previous_api_key,
                previous_admin_credentials=self.previous_admin_credentials,
                progress=self._progress,
                emergency_wallets=self._emergency_wallets(wallets),
                treasury_safe_owners=owners,
                treasury_safe_threshold=SAFE_THRESHOLD,
            )
        except FileNotFoundError as exc:  # a contract artifact
            raise StackError(str(exc)) from None
        self.sup.say(
            f"bootstrap done: partner {result.partner_id}, "
            f"{'reused its API key' if result.api_key_reused else 'issued a new API key'} "
            f"(kept only in {self.config.stack_json})"
        )
        return result

    def rest_base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.http_port}"

    def _write_stack_json(self, result: BootstrapResult) -> None:
        assert self.anvil is not None and self.redis is not None
        data: dict[str, Any] = {
            "rest_base_url": self.rest_base_url(),
            "grpc_target": self.gateway.target,
            "api_key": result.api_key,
            # Two development admins, so that one can confirm what the other proposes.
            "admin_credential": result.admin_credentials[0],
            "second_admin_credential": result.admin_credentials[1],
            "rpc_url": self.anvil.rpc_url,
            "chain_id": POLYGON_CHAIN_ID,
            "tokens": {TOKEN_SYMBOL: result.token_address},
            "hot_wallet": result.hot_wallets[0] if result.hot_wallets else None,
            "hot_wallets": list(result.hot_wallets),
            "emergency_wallets": list(result.emergency_wallets),
            "payout_contract": result.payout_vault,
            "treasury_safe": result.treasury_safe,
            "safe_owner_signers": [o.target for o in self.owners],
            "database_url": self.database_url,
            "redis_url": self.redis.url,
            "metrics_targets": self.metrics_targets(),
            "pid": os.getpid(),
        }
        write_private_text(
            self.config.stack_json.with_name("admin-credential"), result.admin_credentials[0] + "\n"
        )
        write_private_json(self.config.stack_json, data)
        self.sup.say(
            f"wrote {self.config.stack_json} (mode 0600: it holds the API key and the admin "
            "credentials of dev-admin and dev-admin-2; dev-admin's is also in "
            f"{self.config.stack_json.with_name('admin-credential')})"
        )

    def _announce(self, services: list[Service]) -> None:
        curls = curl_commands(self.rest_base_url(), self.config.stack_json)
        out = self.sup
        out.say(
            "create a withdrawal (paste into bash; the first line reads the API key from "
            f"{self.config.stack_json}):"
        )
        out.raw(curls.key)
        out.raw(curls.create)
        out.say("read it back (replace <id> with the last part of the returned name):")
        out.raw(curls.get)
        every = (self.signer, self.gateway, self.processor, self.monitor, self.webhooks)
        missing = [s.name for s in every]
        missing = [name for name in missing if name not in {s.name for s in services}]
        note = f" (without: {', '.join(missing)})" if missing else ""
        out.say(
            f"stack is up{note}: REST {self.rest_base_url()}, gRPC {self.gateway.target}, "
            f"chain {self.anvil.rpc_url if self.anvil else '?'}; Ctrl-C stops everything"
        )


def main() -> int:
    supervisor = Supervisor()
    try:
        config = StackConfig.from_env()
    except SettingsError as exc:
        supervisor.say(f"ERROR: {exc}: fix the variable and run `make up` again")
        return 1
    return Stack(config, supervisor).run()
