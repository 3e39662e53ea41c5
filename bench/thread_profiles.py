"""cProfile on every thread a process starts, and the text reports of a profile: what the
profiling benchmarks share (`bench.profiled_gateway`, `bench.webhooks_sender --profile`).

cProfile slows Python down several times over: a profiled run says where the time goes,
relative to the rest, not how much there is.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import threading
from pathlib import Path


class ThreadProfiles:
    """Once `install()`ed, every thread started afterwards runs under a cProfile of its own."""

    def __init__(self) -> None:
        self._profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        self._original = threading.Thread.run

    def install(self) -> None:
        original, profiles, lock = self._original, self._profiles, self._lock

        def run(thread: threading.Thread) -> None:
            profile = cProfile.Profile()
            with lock:
                profiles.append(profile)
            profile.enable()
            try:
                original(thread)
            finally:
                profile.disable()

        threading.Thread.run = run  # type: ignore[method-assign,assignment]

    def collected(self) -> list[cProfile.Profile]:
        """The profiles of the threads that ran any Python code."""
        with self._lock:
            return [profile for profile in self._profiles if profile.getstats()]


def write_stats(profiles: list[cProfile.Profile], out: Path, name: str, lines: int = 60) -> None:
    """`out/name.pstats` (the profiles merged), and the top `lines` functions by cumulative
    and by own time in `out/name-cumulative.txt` and `out/name-tottime.txt`."""
    if not profiles:
        return
    stats = pstats.Stats(profiles[0])
    for extra in profiles[1:]:
        stats.add(extra)
    stats.dump_stats(out / f"{name}.pstats")
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        stats.stream = text  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(lines)
        (out / f"{name}-{key}.txt").write_text(text.getvalue())
