"""New trace ids (`withdrawal_shared.logs.new_trace_id`): W3C-shaped, unique, and not repeated
by a forked child (the PRNG is reseeded at fork, as for OpenTelemetry's own ids)."""

from __future__ import annotations

import os
import re

from withdrawal_shared.logs import new_trace_id, trace_id_from_traceparent


def test_trace_ids_are_w3c_shaped_and_unique() -> None:
    ids = [new_trace_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) and i != "0" * 32 for i in ids)
    assert len(set(ids)) == len(ids)
    assert trace_id_from_traceparent(None) != trace_id_from_traceparent(None)
    header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert trace_id_from_traceparent(header) == "0af7651916cd43dd8448eb211c80319c"


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then exit without pytest's teardown
        os.close(read)
        os.write(write, "".join(new_trace_id() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    parent = "".join(new_trace_id() for _ in range(8))
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    assert len(child) == len(parent) == 8 * 32
    assert child != parent
