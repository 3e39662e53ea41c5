"""`python -m bench.profiled_gateway OUT_DIR`: the gateway (`python -m svc_gateway`) with
cProfile on its event loop thread and on every thread it starts (the database threads), for
`python -m bench.api_load --profile OUT_DIR`. At a graceful stop it writes
`OUT_DIR/gateway-loop.pstats` and `OUT_DIR/gateway-threads.pstats` (all threads merged) and
prints the top functions of each by cumulative and by own time to OUT_DIR/*.txt.

cProfile slows Python down several times over, so the figures of a profiled run are not the
benchmark's; what matters is where the time goes, relative to the rest.
"""

from __future__ import annotations

import cProfile
import sys
from pathlib import Path

from bench.thread_profiles import ThreadProfiles, write_stats


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    threads = ThreadProfiles()
    threads.install()
    from svc_gateway.__main__ import main as gateway_main

    loop_profile = cProfile.Profile()
    loop_profile.enable()
    try:
        gateway_main()
    finally:
        loop_profile.disable()
        write_stats([loop_profile], out, "gateway-loop")
        write_stats(threads.collected(), out, "gateway-threads")


if __name__ == "__main__":
    main()
