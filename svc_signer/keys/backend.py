"""The one interface every signing key backend implements, and the helpers they share.

A `KeyBackend` holds exactly one secp256k1 key and never hands it out (design invariant 5): it
exposes the key's checksummed `address`, a short `backend_name` for logs and metrics, and
`sign_digest()`, which signs a 32-byte digest and returns a `Signature` with a recovery id in
{0, 1} and a low `s` (EIP-2). Callers build the digest (e.g. an EIP-1559 signing hash); the
backend never sees anything but the digest.

Also here: `KeyBackendError`, the error every backend raises when it cannot load or use its key,
and the secp256k1 helpers shared by backends that produce raw `(r, s)` signatures (normalising
`s`, finding the recovery id, deriving an address from a public key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import coincurve
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from withdrawal_shared.errors import WithdrawalSystemError

# The order of the secp256k1 group.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2
DIGEST_SIZE = 32


class KeyBackendError(WithdrawalSystemError):
    """A key backend cannot load or use its key; the message says what to do next.

    Messages never contain a private key, a PIN or a password.
    """


@dataclass(frozen=True)
class Signature:
    """An ECDSA secp256k1 signature with its recovery id (`v` in {0, 1}) and a low `s`."""

    v: int
    r: int
    s: int

    @property
    def recovery_id(self) -> int:
        """The recovery id, the same as `v` (typed transactions use the raw y-parity)."""
        return self.v

    def to_bytes(self) -> bytes:
        """The 65-byte `r || s || v` form (v in {0, 1}), as libsecp256k1 recovers it."""
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big") + bytes([self.v])


@runtime_checkable
class KeyBackend(Protocol):
    """One signing key that stays inside its backend."""

    @property
    def address(self) -> str:
        """The key's Ethereum address, EIP-55 checksummed."""
        ...

    @property
    def backend_name(self) -> str:
        """A short name for logs and metrics, e.g. `keystore` or `pkcs11`."""
        ...

    def sign_digest(self, digest: bytes) -> Signature:
        """Sign a 32-byte digest; the result has a low `s` and a recovery id in {0, 1}."""
        ...


def check_digest(digest: bytes) -> bytes:
    """Return `digest` as bytes when it is exactly 32 bytes long, else raise ValueError."""
    if not isinstance(digest, bytes | bytearray) or len(digest) != DIGEST_SIZE:
        raise ValueError(f"a digest to sign must be exactly {DIGEST_SIZE} bytes")
    return bytes(digest)


def address_from_public_key(public_key: bytes) -> str:
    """The checksummed address of a secp256k1 public key in any SEC1 form (33, 64 or 65 bytes)."""
    if len(public_key) == 64:
        public_key = b"\x04" + public_key
    uncompressed = coincurve.PublicKey(public_key).format(compressed=False)
    return str(to_checksum_address(keccak(uncompressed[1:])[-20:]))


def recover_public_key(digest: bytes, signature: Signature) -> bytes:
    """The uncompressed (65-byte) public key that produced `signature` over `digest`."""
    recovered = coincurve.PublicKey.from_signature_and_message(
        signature.to_bytes(), digest, hasher=None
    )
    return bytes(recovered.format(compressed=False))


def recover_address(digest: bytes, signature: Signature) -> str:
    """The checksummed address that produced `signature` over `digest`."""
    return address_from_public_key(recover_public_key(digest, signature))


def signature_from_raw_rs(digest: bytes, r: int, s: int, public_key: bytes) -> Signature:
    """Turn a raw ECDSA `(r, s)` into a `Signature`: low `s` and the right recovery id.

    `public_key` is the signer's uncompressed (65-byte) public key; the recovery id is the one
    of {0, 1} whose recovered key equals it. Raises KeyBackendError when neither does, which
    means the signature is not over `digest` by that key.
    """
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise KeyBackendError("the key backend returned an out-of-range ECDSA signature")
    if s > SECP256K1_HALF_N:
        s = SECP256K1_N - s
    for recovery_id in (0, 1):
        candidate = Signature(v=recovery_id, r=r, s=s)
        try:
            if recover_public_key(digest, candidate) == public_key:
                return candidate
        except ValueError:
            continue
    raise KeyBackendError(
        "the key backend's signature does not recover to its own public key; "
        "check that the configured key label names the key pair you expect"
    )
