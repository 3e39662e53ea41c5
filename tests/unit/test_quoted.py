"""Error messages quote what the caller sent, cut to a bounded length."""

from __future__ import annotations

from withdrawal_shared.errors import QUOTED_MAX, quoted


def test_short_values_are_quoted_whole() -> None:
    assert quoted("ethereum") == "'ethereum'"
    assert quoted("x" * QUOTED_MAX) == repr("x" * QUOTED_MAX)


def test_long_values_are_cut() -> None:
    assert quoted("y" * 5000) == repr("y" * (QUOTED_MAX - 3) + "...")
    assert len(quoted("z" * 10**6)) == QUOTED_MAX + 2
