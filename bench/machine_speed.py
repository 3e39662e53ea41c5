"""How fast this machine runs Python right now: a fixed pure-Python loop's CPU time, and how
long a hand-off between two threads takes (a wake-up of each).

    python -m bench.machine_speed

A virtual machine's cores do not run at one speed from one hour to the next (other guests on
the host share its caches and memory bandwidth), and the API benchmark's figures move with
them: the same commit's gateway has cost 1.0 ms of CPU per request one day and 1.3 ms the
next. `bench.api_load` records the loop at its start and its end and the hand-off at its
start, so that figures taken at different times can be told apart from a change in the code;
compare commits only within one `bench.api_compare` run all the same. The hand-off matters
because the gateway's path is a chain of them (grpc's threads, the event loop, the database
threads), each paying a wake-up.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time

LOOP_ITERATIONS = 1_000_000
RUNS = 5


def _loop() -> int:
    total = 0
    for i in range(LOOP_ITERATIONS):
        total += i * i % 7
    return total


def python_loop_ms(runs: int = RUNS) -> float:
    """The median CPU time, in ms, of `runs` runs of the fixed loop (about 0.1 s each)."""
    times = []
    for _ in range(runs):
        start = time.process_time()
        _loop()
        times.append(1000 * (time.process_time() - start))
    return round(statistics.median(times), 1)


HANDOFFS = 2000


def thread_handoff_us(rounds: int = HANDOFFS) -> float:
    """The median wall time, in µs, of a value sent to another thread and back (two queue
    hand-offs, each a wake-up)."""
    there: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def echo() -> None:
        while (value := there.get()) is not None:
            back.put(value)

    thread = threading.Thread(target=echo, name="handoff-echo", daemon=True)
    thread.start()
    times = []
    try:
        for i in range(rounds):
            start = time.perf_counter()
            there.put(i)
            back.get()
            times.append(1e6 * (time.perf_counter() - start))
    finally:
        there.put(None)
        thread.join(5)
    return round(statistics.median(times), 1)


def main() -> int:
    print(f"a fixed pure-Python loop: {python_loop_ms()} ms of CPU (median of {RUNS} runs)")
    print(f"a hand-off to another thread and back: {thread_handoff_us()} µs (median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
