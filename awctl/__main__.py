"""`awctl` (the console script) and `python -m awctl`."""

from __future__ import annotations

from awctl.cli import app


def main() -> None:
    app(prog_name="awctl")


if __name__ == "__main__":
    main()
