"""bench.machine_speed measures: a loop's CPU time and a thread hand-off's wall time, both
positive and finite, and the echo thread ends."""

from __future__ import annotations

import threading

from bench.machine_speed import python_loop_ms, thread_handoff_us


def test_machine_speed_figures() -> None:
    assert 0 < python_loop_ms(runs=1) < 60_000
    assert 0 < thread_handoff_us(rounds=50) < 1_000_000
    assert not [t for t in threading.enumerate() if t.name == "handoff-echo"]
