"""`withdrawal_shared.runtime.freeze_start_up_objects`: after it, a service's start-up objects
are out of every generation the garbage collector traverses (a full collection walks only
what was made later), and objects made later are still collected. Run in a child process,
so the test process's own heap stays as it is."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import gc, json
import svc_gateway.server  # a service's modules, descriptors and compiled statements
from withdrawal_shared.runtime import freeze_start_up_objects

tracked_before = len(gc.get_objects())
freeze_start_up_objects()
tracked_after = len(gc.get_objects())

class Cycle:
    pass

first, second = Cycle(), Cycle()
first.other, second.other = second, first
del first, second
collected = gc.collect()
print(json.dumps({
    "tracked_before": tracked_before,
    "tracked_after": tracked_after,
    "frozen": gc.get_freeze_count(),
    "collected_later_cycle": collected,
}))
"""


def test_start_up_objects_are_frozen_and_later_garbage_is_still_collected() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["tracked_before"] > 50_000  # the gateway's modules alone
    assert figures["frozen"] >= figures["tracked_before"] * 0.9
    assert figures["tracked_after"] < figures["tracked_before"] / 20
    assert figures["collected_later_cycle"] >= 2  # the two objects of the cycle made later
