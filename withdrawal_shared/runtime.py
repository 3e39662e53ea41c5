"""How every service process runs: JSON logs, the settings read from the environment, metrics
for Prometheus when `<NAME>_METRICS_PORT` is set (`withdrawal_shared.metrics`), a lower CPU
priority when `<NAME>_NICE` is set (e.g. `PROCESSOR_NICE=10`: on a machine the services share,
the batch work of the processor and the monitor then yields the CPU to the gateway's requests,
whose latency a client sees), a graceful stop on SIGTERM or SIGINT, and, under the stack's
supervisor (`devstack.supervisor`, which sets `STACK_SUPERVISOR_PID`), the same stop once that
supervisor is gone (`stop_when_orphaned`), so a killed benchmark or `make up` leaves no
service running behind it. Each
`svc_*/__main__.py` is one call to `run_service`; each `serve` calls
`freeze_start_up_objects` once its server has started."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from withdrawal_shared import tracing
from withdrawal_shared.errors import WithdrawalSystemError
from withdrawal_shared.logs import configure
from withdrawal_shared.metrics import initialize, serve_metrics
from withdrawal_shared.settings import SUPERVISOR_PID_ENV, env_int, env_str

SettingsT = TypeVar("SettingsT")

ORPHAN_POLL_SECONDS = 0.5
ORPHAN_STOP_SECONDS = 30.0


def stop_when_orphaned(
    poll_seconds: float = ORPHAN_POLL_SECONDS, kill_after: float = ORPHAN_STOP_SECONDS
) -> threading.Thread | None:
    """When `STACK_SUPERVISOR_PID` names this process's parent, watch it from a daemon thread
    and send this process SIGTERM (its graceful stop) once the parent is another process:
    the supervisor died without stopping its children (SIGKILL, a crash), and this process was
    handed to init. The same at once when the supervisor died while this process was still
    starting (no process has its pid). A stop that has not ended `kill_after` seconds later
    ends with SIGKILL, as the supervisor's own would. None, and nothing watched, outside a
    supervisor or when the variable names another live process."""
    supervisor = os.environ.get(SUPERVISOR_PID_ENV, "")
    if not supervisor.isdigit():
        return None
    parent = int(supervisor)
    if os.getppid() != parent and pid_alive(parent):
        return None

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        logging.getLogger(__name__).warning(
            "the supervisor is gone; stopping", extra={"supervisor_pid": parent}
        )
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(kill_after)  # a daemon thread: gone with the process when the stop ends
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="orphan-watch", daemon=True)
    thread.start()
    return thread


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs: False once it has exited, reaped or not (a zombie still
    answers kill(0)); True for a running process of another user."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        status = stat.read_text()
    except FileNotFoundError:  # reaped since kill(0), or a system without /proc
        return not Path("/proc/self").exists()
    return status.rpartition(")")[2].split()[0] != "Z"


def freeze_start_up_objects() -> None:
    """Take every object alive now (modules, descriptors, compiled statements, caches built
    at start-up) out of the garbage collector's reach (`gc.freeze`), after a collection of
    the start-up garbage: called by each `serve` once its server has started.

    A full (generation 2) collection traverses every tracked object. A busy service's short-
    lived objects (a request's, kept alive across a few young collections by its own
    latency) keep reaching the oldest generation, so full collections come every few
    seconds, and with the start-up objects in it each stopped the gateway's event loop and
    its threads for 150-240 ms (wall time, measured with `gc.callbacks` at 600
    CreateWithdrawal/s with the processor on the 2-core benchmark machine): every request
    in flight then waits that long; frozen, they took 6-17 ms. Frozen objects are left out of
    the collector's work: one that becomes garbage is still freed by reference counting,
    unless it is part of a reference cycle (start-up objects live as long as the process);
    objects made later are collected as before."""
    gc.collect()
    gc.freeze()


def run_service(
    name: str,
    load_settings: Callable[[], SettingsT],
    serve: Callable[[SettingsT, asyncio.Event], Awaitable[None]],
) -> None:
    """Run `serve(settings, stop)` until SIGTERM/SIGINT sets `stop`. A configuration error
    (a WithdrawalSystemError at start-up, which says what to fix and never holds a secret)
    is logged and exits with status 2."""
    configure(name)
    log = logging.getLogger(name)
    if tracing.configure(name):  # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT set: before any server
        log.info("tracing exported over OTLP", extra={"service_name": name})

    prefix = name.upper()

    async def main() -> None:
        metrics_port = env_int(f"{prefix}_METRICS_PORT", -1, minimum=-1)
        if metrics_port >= 0:
            serve_metrics(metrics_port, env_str(f"{prefix}_METRICS_HOST", "127.0.0.1"))
            initialize(name)  # every label set known now, at zero
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(load_settings(), stop)

    try:
        # Before any thread starts: on Linux a thread's priority is its own, and the threads
        # started later inherit it.
        nice = env_int(f"{prefix}_NICE", 0, minimum=0)
        if nice:
            os.nice(nice)
        stop_when_orphaned()
        asyncio.run(main())
    except WithdrawalSystemError as exc:
        log.error("the %s cannot start: %s", name, exc)
        raise SystemExit(2) from None
    finally:
        tracing.shutdown()  # export the spans still buffered
