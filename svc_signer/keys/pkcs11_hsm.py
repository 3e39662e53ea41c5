"""The PKCS#11 (HSM) key backend: a secp256k1 key generated inside the token, never exported.

Locally the token is SoftHSM2; in production any PKCS#11 HSM that supports `CKM_ECDSA` on
secp256k1. The private key is created on the token (`generate_secp256k1_key`) with
CKA_TOKEN=true, CKA_SENSITIVE=true, CKA_EXTRACTABLE=false and a label; the signer finds it by
that label, signs the 32-byte keccak digest with raw `CKM_ECDSA`, normalises `s` to the low half
(EIP-2) and finds the recovery id by recovering both candidates against the public key, which it
reads from CKA_EC_POINT of the matching public key object.

- `Pkcs11Settings`: library path, token label, key label(s) and user PIN (`from_env()`).
- `find_pkcs11_library()`: the configured module, else SoftHSM2's in the usual places.
- `generate_secp256k1_key()`: create the non-extractable key pair in an open R/W session.
- `Pkcs11Backend.open()`: a `KeyBackend` over one labelled key; it refuses a private key that
  is extractable or not sensitive.

The PIN is never logged, printed or put into an error message.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11_errors
from pkcs11.util.ec import encode_named_curve_parameters

from svc_signer.keys.backend import (
    KeyBackendError,
    Signature,
    address_from_public_key,
    check_digest,
    signature_from_raw_rs,
)

SECP256K1_OID = "1.3.132.0.10"
SECP256K1_EC_PARAMS = encode_named_curve_parameters(SECP256K1_OID)

ENV_LIBRARY = "SIGNER_PKCS11_LIBRARY"
ENV_TOKEN_LABEL = "SIGNER_PKCS11_TOKEN_LABEL"  # noqa: S105 - a label, not a secret
ENV_KEY_LABEL = "SIGNER_PKCS11_KEY_LABEL"
ENV_KEY_LABELS = "SIGNER_PKCS11_KEY_LABELS"
ENV_PIN = "SIGNER_PKCS11_PIN"
ENV_PIN_FILE = "SIGNER_PKCS11_PIN_FILE"

DEFAULT_TOKEN_LABEL = "withdrawal-signer"  # noqa: S105 - a label, not a secret
DEFAULT_KEY_LABEL = "hot-wallet-0"

# Where distributions put SoftHSM2's PKCS#11 module.
SOFTHSM2_LIBRARY_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)

_UNCOMPRESSED_POINT_SIZE = 65


class Pkcs11Error(KeyBackendError):
    """The PKCS#11 module, token or key cannot be used; the message says what to do next."""


def parse_key_labels(text: str) -> tuple[str, ...]:
    """Comma-separated key labels (blanks around each ignored); raises Pkcs11Error on an empty
    or repeated label."""
    if not text.strip():
        return ()
    labels = tuple(part.strip() for part in text.split(","))
    if any(not label for label in labels):
        raise Pkcs11Error(f"{ENV_KEY_LABELS}={text!r} has an empty label")
    if len(set(labels)) != len(labels):
        raise Pkcs11Error(f"{ENV_KEY_LABELS}={text!r} names a label more than once")
    return labels


@dataclass(frozen=True)
class Pkcs11Settings:
    """Which PKCS#11 module, token and key(s) the signer uses, and the token's user PIN."""

    pin: str = field(repr=False)
    token_label: str = DEFAULT_TOKEN_LABEL
    key_label: str = DEFAULT_KEY_LABEL
    library_path: str | None = None
    key_labels: tuple[str, ...] = ()
    """Every hot wallet's key label on the token; empty = just `key_label`."""

    @property
    def labels(self) -> tuple[str, ...]:
        """The key labels to open, in order: `key_labels`, else `(key_label,)`."""
        return self.key_labels or (self.key_label,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Pkcs11Settings:
        """Read the settings from the environment.

        `SIGNER_PKCS11_PIN` (or a file named by `SIGNER_PKCS11_PIN_FILE`) is required;
        `SIGNER_PKCS11_TOKEN_LABEL` defaults to `withdrawal-signer`, `SIGNER_PKCS11_KEY_LABEL`
        to `hot-wallet-0`, `SIGNER_PKCS11_KEY_LABELS` (comma-separated, one key pair per hot
        wallet on the same token) to that one label, and `SIGNER_PKCS11_LIBRARY` to
        SoftHSM2's module when found.
        """
        env = os.environ if environ is None else environ
        pin = env.get(ENV_PIN, "")
        pin_file = env.get(ENV_PIN_FILE, "")
        if not pin and pin_file:
            try:
                pin = Path(pin_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise Pkcs11Error(
                    f"cannot read the PIN file {pin_file} named by {ENV_PIN_FILE} ({exc.strerror})"
                ) from None
        if not pin:
            raise Pkcs11Error(f"no PKCS#11 user PIN: set {ENV_PIN} or {ENV_PIN_FILE}")
        return cls(
            pin=pin,
            token_label=env.get(ENV_TOKEN_LABEL, "") or DEFAULT_TOKEN_LABEL,
            key_label=env.get(ENV_KEY_LABEL, "") or DEFAULT_KEY_LABEL,
            library_path=env.get(ENV_LIBRARY, "") or None,
            key_labels=parse_key_labels(env.get(ENV_KEY_LABELS, "")),
        )


def find_pkcs11_library(library_path: str | None = None) -> str:
    """The PKCS#11 module to load: `library_path` when given, else SoftHSM2's module.

    Raises Pkcs11Error with the places it looked when nothing is there.
    """
    if library_path:
        if not Path(library_path).is_file():
            raise Pkcs11Error(
                f"the PKCS#11 module {library_path} does not exist; fix {ENV_LIBRARY} "
                "(for SoftHSM2 run `make softhsm`)"
            )
        return library_path
    for candidate in SOFTHSM2_LIBRARY_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    raise Pkcs11Error(
        "SoftHSM2's PKCS#11 module libsofthsm2.so was not found (looked in "
        f"{', '.join(SOFTHSM2_LIBRARY_CANDIDATES)}): run `make softhsm` to install it, "
        f"or set {ENV_LIBRARY} to your HSM's PKCS#11 module"
    )


def load_library(library_path: str | None = None) -> Any:
    """Load (once per process) and initialise the PKCS#11 module; returns the `pkcs11.lib`."""
    path = find_pkcs11_library(library_path)
    try:
        return pkcs11.lib(path)
    except p11_errors.PKCS11Error as exc:
        raise Pkcs11Error(
            f"cannot initialise the PKCS#11 module {path}: {type(exc).__name__}"
        ) from None


def ec_point_to_public_key(ec_point: bytes) -> bytes:
    """The uncompressed (65-byte) public key held in a CKA_EC_POINT value.

    PKCS#11 says CKA_EC_POINT is a DER OCTET STRING wrapping the SEC1 point; some modules return
    the bare point. Both are accepted; anything else raises Pkcs11Error.
    """
    point = bytes(ec_point)
    if len(point) == _UNCOMPRESSED_POINT_SIZE + 2 and point[:2] == b"\x04\x41":
        point = point[2:]  # DER OCTET STRING, short-form length 65
    elif len(point) == _UNCOMPRESSED_POINT_SIZE + 3 and point[:3] == b"\x04\x81\x41":
        point = point[3:]  # DER OCTET STRING, long-form length 65 (BER-tolerant modules)
    if len(point) != _UNCOMPRESSED_POINT_SIZE or point[0] != 0x04:
        raise Pkcs11Error("CKA_EC_POINT does not hold an uncompressed secp256k1 point")
    return point


def generate_secp256k1_key(session: Any, key_label: str) -> tuple[Any, Any]:
    """Generate a secp256k1 key pair inside the token (R/W session); returns (public, private).

    The private key is CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, not CKA_EXTRACTABLE, can only
    sign, and carries `key_label` (the public key too).
    """
    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: SECP256K1_EC_PARAMS}, local=True
    )
    public, private = params.generate_keypair(
        label=key_label,
        store=True,
        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        public_template={Attribute.TOKEN: True, Attribute.VERIFY: True},
        private_template={
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.DERIVE: False,
        },
    )
    return public, private


def find_key_pair(session: Any, key_label: str) -> tuple[Any, Any] | None:
    """The (public, private) EC key pair labelled `key_label`, or None when there is none."""
    try:
        private = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=key_label
        )
    except p11_errors.NoSuchKey:
        return None
    except p11_errors.MultipleObjectsReturned:
        raise Pkcs11Error(
            f"more than one private key is labelled {key_label!r} on the token; "
            "labels must be unique"
        ) from None
    try:
        public = session.get_key(
            object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC, label=key_label
        )
    except p11_errors.NoSuchKey:
        raise Pkcs11Error(
            f"the private key {key_label!r} has no public key object with the same label; "
            "the signer needs it to derive the address"
        ) from None
    except p11_errors.MultipleObjectsReturned:
        raise Pkcs11Error(
            f"more than one public key is labelled {key_label!r} on the token"
        ) from None
    return public, private


# PKCS#11 login state belongs to the application (process), not to a session: a second
# C_Login fails with CKR_USER_ALREADY_LOGGED_IN and closing any logged-in session logs every
# session out. So each token is logged in once, through an "anchor" session kept open for the
# life of the module, and every other session is opened without a PIN (and never logs out).
_anchors_lock = threading.Lock()
_anchors: dict[tuple[str, str], tuple[Any, bytes]] = {}


def open_token(lib: Any, token_label: str) -> Any:
    """The token labelled `token_label`; raises Pkcs11Error when the module has none."""
    try:
        return lib.get_token(token_label=token_label)
    except p11_errors.NoSuchToken:
        pass
    except p11_errors.MultipleObjectsReturned:
        raise Pkcs11Error(f"more than one token is labelled {token_label!r}") from None
    # SoftHSM2 reads its token directory when the module is initialised: a token created since
    # (by softhsm2-util) is only seen after re-initialising. That would invalidate every open
    # session, so it is only done while this process holds no login.
    with _anchors_lock:
        if not _anchors:
            lib.reinitialize()
    try:
        return lib.get_token(token_label=token_label)
    except p11_errors.NoSuchToken:
        raise Pkcs11Error(
            f"no PKCS#11 token labelled {token_label!r} in {lib.so}; initialise one "
            "(SoftHSM2: svc_signer.keys.softhsm.provision_softhsm, or `softhsm2-util "
            "--init-token`) or fix SIGNER_PKCS11_TOKEN_LABEL"
        ) from None


def _pin_digest(token: Any, pin: str) -> bytes:
    return hashlib.sha256(f"{token.label}\0{pin}".encode()).digest()


def login(token: Any, pin: str, *, rw: bool = False) -> Any:
    """A new session on `token` in the user's logged-in state; a wrong PIN raises Pkcs11Error.

    The first call per token logs in (C_Login) on an anchor session that stays open; later calls
    check the PIN against the one that logged in and open a plain session. Close the returned
    session when done; that never logs the other sessions out.
    """
    key = (str(token.slot.slot_id), str(token.label))
    digest = _pin_digest(token, pin)
    rejected = Pkcs11Error(
        f"the PKCS#11 user PIN was rejected by token {token.label!r}; fix {ENV_PIN}"
    )
    with _anchors_lock:
        anchor = _anchors.get(key)
        if anchor is None:
            try:
                anchor_session = token.open(user_pin=pin)
            except p11_errors.PinIncorrect:
                raise rejected from None
            except p11_errors.PinLocked:
                raise Pkcs11Error(
                    f"the user PIN of token {token.label!r} is locked; "
                    "the security officer must reset it"
                ) from None
            except p11_errors.PKCS11Error as exc:
                raise Pkcs11Error(
                    f"cannot log in to token {token.label!r}: {type(exc).__name__}"
                ) from None
            _anchors[key] = (anchor_session, digest)
        elif not hmac.compare_digest(anchor[1], digest):
            raise rejected
    try:
        return token.open(rw=rw)
    except p11_errors.PKCS11Error as exc:
        raise Pkcs11Error(
            f"cannot open a session on token {token.label!r}: {type(exc).__name__}"
        ) from None


class Pkcs11Backend:
    """A `KeyBackend` over one labelled secp256k1 key pair on a PKCS#11 token.

    One logged-in session is held for the backend's life; signing is serialised on it (one
    PKCS#11 operation per session at a time). Call `close()` when done.
    """

    backend_name = "pkcs11"

    def __init__(self, session: Any, private_key: Any, public_key: bytes, key_label: str) -> None:
        self._session = session
        self._private_key = private_key
        self._public_key = public_key
        self._address = address_from_public_key(public_key)
        self._key_label = key_label
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Pkcs11Backend(address={self._address!r}, key_label={self._key_label!r})"

    @classmethod
    def open(cls, settings: Pkcs11Settings) -> Pkcs11Backend:
        """Log in to the configured token and bind to its key; the key must already exist.

        Raises Pkcs11Error when the module, token or key is missing, the PIN is wrong, the key
        is not secp256k1, or the private key is extractable or not sensitive.
        """
        lib = load_library(settings.library_path)
        token = open_token(lib, settings.token_label)
        session = login(token, settings.pin)
        try:
            pair = find_key_pair(session, settings.key_label)
            if pair is None:
                raise Pkcs11Error(
                    f"no key labelled {settings.key_label!r} on token {settings.token_label!r}; "
                    "generate it inside the token (svc_signer.keys.softhsm.provision_softhsm "
                    "for SoftHSM2) or fix SIGNER_PKCS11_KEY_LABEL"
                )
            public, private = pair
            if bytes(public[Attribute.EC_PARAMS]) != SECP256K1_EC_PARAMS:
                raise Pkcs11Error(f"the key {settings.key_label!r} is not on secp256k1")
            if private[Attribute.EXTRACTABLE] or not private[Attribute.SENSITIVE]:
                raise Pkcs11Error(
                    f"the private key {settings.key_label!r} is extractable or not sensitive; "
                    "refusing to use it: generate a new key inside the token"
                )
            public_key = ec_point_to_public_key(public[Attribute.EC_POINT])
        except BaseException:
            session.close()
            raise
        return cls(session, private, public_key, settings.key_label)

    @property
    def address(self) -> str:
        """The key's checksummed address, derived from CKA_EC_POINT."""
        return self._address

    @property
    def public_key(self) -> bytes:
        """The key's uncompressed (65-byte) public key."""
        return self._public_key

    @property
    def key_label(self) -> str:
        """The CKA_LABEL of the key pair."""
        return self._key_label

    def sign_digest(self, digest: bytes) -> Signature:
        """Sign a 32-byte digest with CKM_ECDSA on the token; low `s`, recovery id in {0, 1}."""
        digest = check_digest(digest)
        try:
            with self._lock:
                raw = bytes(self._private_key.sign(digest, mechanism=Mechanism.ECDSA))
        except p11_errors.PKCS11Error as exc:
            raise Pkcs11Error(
                f"the token failed to sign with key {self._key_label!r}: {type(exc).__name__}"
            ) from None
        if len(raw) != 64:
            raise Pkcs11Error(f"the token returned a {len(raw)}-byte ECDSA signature, not 64")
        r = int.from_bytes(raw[:32], "big")
        s = int.from_bytes(raw[32:], "big")
        return signature_from_raw_rs(digest, r, s, self._public_key)

    def close(self) -> None:
        """Log out and close the session."""
        with self._lock, contextlib.suppress(p11_errors.PKCS11Error):
            self._session.close()

    def __enter__(self) -> Pkcs11Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
