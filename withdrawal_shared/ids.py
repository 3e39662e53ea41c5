"""Identifiers: time-ordered, URL-safe withdrawal ids (ULID layout, Crockford base32)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RANDOM_BITS = 80


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class UlidGenerator:
    """Monotonic within a process: ids made in the same millisecond still sort in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_random = 0

    def __call__(self) -> str:
        with self._lock:
            now = time.time_ns() // 1_000_000
            if now <= self._last_ms:
                now = self._last_ms
                self._last_random += 1
            else:
                # Leave headroom so increments within one millisecond never overflow.
                self._last_random = int.from_bytes(os.urandom(10), "big") >> 1
            self._last_ms = now
            random_part = self._last_random & ((1 << _RANDOM_BITS) - 1)
            return _encode(now, 10) + _encode(random_part, 16)


new_ulid = UlidGenerator()
"""A 26-character ULID, lowercase Crockford base32."""


def is_ulid(value: str) -> bool:
    return len(value) == 26 and all(c in _ALPHABET for c in value)
