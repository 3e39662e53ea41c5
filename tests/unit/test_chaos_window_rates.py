"""chaos.faults.window_rates: the RPC windows of a chaos run reach every kind of fault."""

from __future__ import annotations

from chaos.faults import RPC_FAULTS, SEND_DROPS, UNSEEN_RATE, window_rates


def test_the_first_window_drops_every_send() -> None:
    assert window_rates({}) == SEND_DROPS
    assert window_rates({"delay": 3, "reset": 1}) == SEND_DROPS


def test_kinds_not_seen_yet_are_likelier_until_each_happened() -> None:
    rates = window_rates({"drop_tx": 1, "delay": 4})
    assert rates.delay == RPC_FAULTS.delay
    assert rates.drop_tx == RPC_FAULTS.drop_tx
    for kind in ("timeout_after_forward", "http_5xx", "reset"):
        assert getattr(rates, kind) == max(UNSEEN_RATE, getattr(RPC_FAULTS, kind))
        assert getattr(rates, kind) > getattr(RPC_FAULTS, kind)
    # Every kind unseen but the drop: still valid probabilities (FaultRates checks the sum).
    assert window_rates({"drop_tx": 2}).reset == UNSEEN_RATE


def test_once_every_kind_happened_the_windows_use_the_normal_rates() -> None:
    seen = {"delay": 1, "timeout_after_forward": 1, "http_5xx": 1, "reset": 1, "drop_tx": 1}
    assert window_rates(seen) == RPC_FAULTS
