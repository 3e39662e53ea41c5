"""`python -m svc_gateway`: the edge service (gRPC + REST/JSON). Settings: svc_gateway.settings.

With `GATEWAY_WORKERS=n` (n > 1) this process starts n - 1 more copies of itself on the same
ports (each with `GATEWAY_WORKERS=1` and its `GATEWAY_WORKER_INDEX`, in this process group, so
a supervisor that signals the group stops them all) and serves as the first worker; it stops
the others when it stops. With `GATEWAY_METRICS_PORT=p`, worker i serves its metrics on p + i.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

from svc_gateway.server import serve
from svc_gateway.settings import GatewaySettings
from withdrawal_shared.runtime import run_service
from withdrawal_shared.settings import SettingsError, env_int


@contextlib.contextmanager
def _more_workers() -> Iterator[None]:
    try:
        workers = env_int("GATEWAY_WORKERS", 1, minimum=1)
    except SettingsError:
        workers = 1  # run_service reports the bad value
    children = [
        subprocess.Popen(  # this very module, no shell
            [sys.executable, "-m", "svc_gateway"],
            env={**os.environ, **_worker_env(index)},
        )
        for index in range(1, workers)
    ]
    try:
        yield
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()


def _worker_env(index: int) -> dict[str, str]:
    """What extra worker `index` changes in its environment."""
    env = {"GATEWAY_WORKERS": "1", "GATEWAY_WORKER_INDEX": str(index)}
    metrics = os.environ.get("GATEWAY_METRICS_PORT", "")
    if metrics.isdigit() and int(metrics) > 0:
        env["GATEWAY_METRICS_PORT"] = str(int(metrics) + index)
    return env


def main() -> None:
    with _more_workers():
        run_service("gateway", GatewaySettings.from_env, serve)


if __name__ == "__main__":
    main()
