"""Which Redis the stack uses: REDIS_URL, else the machine's 127.0.0.1:6379, else its own.

`resolve_redis()` returns a `RedisHandle` whose `stop()` stops a `redis-server` this module
started (and does nothing for a Redis it only uses). Our own server keeps nothing on disk
(`--save "" --appendonly no`) and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from devstack.config import free_port

SYSTEM_REDIS_URL = "redis://127.0.0.1:6379/0"


class RedisUnavailableError(RuntimeError):
    """No usable Redis; the message says what to do."""


def ping(url: str, timeout: float = 1.0) -> bool:
    """True when the Redis at `url` answers PING within `timeout`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


@dataclass
class RedisHandle:
    url: str
    source: str
    """`REDIS_URL`, `system` (127.0.0.1:6379) or `own` (started here)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop our own redis-server (SIGTERM, then SIGKILL); idempotent, no-op otherwise."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def start_redis_server(
    log_path: Path, *, port: int | None = None, startup_timeout: float = 10.0
) -> RedisHandle:
    """Start `redis-server` from PATH on 127.0.0.1 and wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailableError(
            "no Redis: REDIS_URL is unset, nothing answers on 127.0.0.1:6379 and `redis-server` "
            "is not on PATH; install it (`sudo apt-get install redis-server`), start one, or "
            "set REDIS_URL=redis://host:port/0"
        )
    port = port or free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed binary from PATH, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
            process_group=0,  # Ctrl-C in the terminal must not stop it before the services
        )
    handle = RedisHandle(f"redis://127.0.0.1:{port}/0", "own", process, log_path)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            handle.stop()
            raise RedisUnavailableError(
                f"redis-server exited with code {code} on port {port}; see {log_path} "
                "(or set REDIS_URL to a Redis you run yourself)"
            )
        if ping(handle.url, timeout=0.5):
            return handle
        time.sleep(0.05)
    handle.stop()
    raise RedisUnavailableError(
        f"redis-server on port {port} did not answer PING within {startup_timeout:g}s; "
        f"see {log_path} (or set REDIS_URL)"
    )


def resolve_redis(configured_url: str | None, log_path: Path) -> RedisHandle:
    """REDIS_URL when set (it must answer), else the system Redis, else a redis-server."""
    if configured_url:
        if not ping(configured_url, timeout=2.0):
            raise RedisUnavailableError(
                f"REDIS_URL={configured_url} does not answer PING: start that Redis, fix "
                "REDIS_URL, or unset it to let `make up` use or start a local one"
            )
        return RedisHandle(configured_url, "REDIS_URL")
    if ping(SYSTEM_REDIS_URL, timeout=0.5):
        return RedisHandle(SYSTEM_REDIS_URL, "system")
    return start_redis_server(log_path)
