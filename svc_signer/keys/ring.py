"""A `KeyRing`: the signer's hot wallets, one `KeyBackend` per wallet, found by address.

Each hot wallet has its own key (and so its own nonce sequence on chain); the ring only maps an
address to the backend holding its key. It is ordered: the first backend is the first wallet
ListWallets names (index 0 of the keystore files, the first PKCS#11 key label).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

from svc_signer.keys.backend import KeyBackend, KeyBackendError


def close_backend(backend: KeyBackend) -> None:
    """Close `backend` when it has a `close()` (PKCS#11 sessions); errors are ignored."""
    close = getattr(backend, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


def close_backends(backends: Iterable[KeyBackend]) -> None:
    for backend in backends:
        close_backend(backend)


class KeyRing:
    """The key backends of the signer's hot wallets, by (case-insensitive) address."""

    def __init__(self, backends: Sequence[KeyBackend]) -> None:
        if not backends:
            raise KeyBackendError("the signer holds no key: configure at least one hot wallet")
        by_address: dict[str, KeyBackend] = {}
        for backend in backends:
            address = backend.address.lower()
            if address in by_address:
                raise KeyBackendError(
                    f"two configured keys are the same wallet {backend.address}; each hot "
                    "wallet needs a key of its own"
                )
            by_address[address] = backend
        self._backends = tuple(backends)
        self._by_address = by_address

    @classmethod
    def of(cls, keys: KeyRing | KeyBackend | Sequence[KeyBackend]) -> KeyRing:
        """`keys` as a ring: a ring as is, one backend or a sequence of backends wrapped."""
        if isinstance(keys, KeyRing):
            return keys
        if isinstance(keys, KeyBackend):
            return cls([keys])
        return cls(list(keys))

    def __repr__(self) -> str:
        return f"KeyRing({[backend.address for backend in self._backends]!r})"

    def __len__(self) -> int:
        return len(self._backends)

    def __iter__(self) -> Iterator[KeyBackend]:
        return iter(self._backends)

    @property
    def backends(self) -> tuple[KeyBackend, ...]:
        """Every backend, in configuration order."""
        return self._backends

    @property
    def first(self) -> KeyBackend:
        """The first configured backend (the only one of a single-wallet signer)."""
        return self._backends[0]

    @property
    def addresses(self) -> tuple[str, ...]:
        """The wallets' checksummed addresses, in configuration order."""
        return tuple(backend.address for backend in self._backends)

    def get(self, address: str) -> KeyBackend | None:
        """The backend holding the key of `address` (any case), or None."""
        return self._by_address.get(address.lower())

    def close(self) -> None:
        """Close every backend that can be closed."""
        close_backends(self._backends)


def add_to_ring(ring: KeyRing, backend: KeyBackend) -> None:
    """Start holding `backend` too (a key created while the signer runs); a key already held
    is left as is (KeyBackendError when another backend holds that address)."""
    address = backend.address.lower()
    held = ring.get(address)
    if held is not None:
        if held is not backend:
            close_backend(backend)
        return
    ring._by_address = {**ring._by_address, address: backend}
    ring._backends = (*ring._backends, backend)
