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
import io
import pstats
import sys
import threading
from pathlib import Path
from typing import Any

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _thread_profiling() -> None:
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile()
        with _lock:
            _profiles.append(profile)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]


def _write(stats: pstats.Stats, out: Path, name: str) -> None:
    stats.dump_stats(out / f"{name}.pstats")
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        stats.stream = text  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(60)
        (out / f"{name}-{key}.txt").write_text(text.getvalue())


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    _thread_profiling()
    from svc_gateway.__main__ import main as gateway_main

    loop_profile = cProfile.Profile()
    loop_profile.enable()
    try:
        gateway_main()
    finally:
        loop_profile.disable()
        _write(pstats.Stats(loop_profile), out, "gateway-loop")
        with _lock:
            profiles: list[Any] = [p for p in _profiles if p.getstats()]
        if profiles:
            _write(pstats.Stats(*profiles), out, "gateway-threads")


if __name__ == "__main__":
    main()
