"""`python -m chaos [--short] [--replicas] [--withdrawals N] [--seed S]`: exit 0 only when
every invariant held (see `chaos/__init__.py`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys

from .config import FULL, REPLICAS, SHORT, SHORT_REPLICAS
from .run import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the small variant of make test")
    parser.add_argument("--withdrawals", type=int)
    parser.add_argument("--rate", type=float, help="withdrawals submitted per second")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--replicas",
        action="store_true",
        help="two gateways, two processors and two monitors (make chaos-replicas)",
    )
    args = parser.parse_args(argv)
    config = SHORT if args.short else FULL
    if args.replicas:
        config = SHORT_REPLICAS if args.short else dataclasses.replace(FULL, replicas=REPLICAS)
    changes = {
        key: value
        for key, value in (
            ("withdrawals", args.withdrawals),
            ("submit_rate", args.rate),
            ("seed", args.seed),
        )
        if value is not None
    }
    config = dataclasses.replace(config, **changes)
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM (a CI timeout, `timeout`, kill) unwinds like Ctrl-C, so the stack of our own
    # (services, anvil, proxies, Redis, database) is stopped and dropped, never left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    report = run(config)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
