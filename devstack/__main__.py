"""`python -m devstack` (what `make up` runs): the whole system in the foreground.

`--help` prints what it runs (the `devstack` package's documentation); it takes no other
arguments: its settings come from the environment.
"""

from __future__ import annotations

import argparse
import sys

import devstack


def _parse(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description=devstack.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)


if __name__ == "__main__":
    _parse(None)
    from devstack.runner import main  # after --help: it imports web3, which takes a while

    sys.exit(main())
