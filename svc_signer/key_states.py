"""The hot signer's keys and their states (`signer_keys`, written by the signer alone), the
creation of a new hot-wallet key (CreateWallet), its retirement (RetireWallet), and the rules a
retired key and a gas sweep sign under. `svc_signer.core` documents the refusals:

- WALLET_RETIRED: the key is RETIRED and the request is a new payout or Safe execution, or a
  replacement / nonce release at a nonce it never signed at;
- INVALID_GAS_SWEEP (`problem` = items, to, data, value, gas, nonce, treasury): a
  PURPOSE_GAS_SWEEP that is not a plain transfer of positive value, with empty calldata and at
  most SWEEP_MAX_GAS gas, to the chain's treasury Safe, at a nonce where only sweeps were
  signed;
- GAS_SWEEP_ALREADY_SIGNED: the wallet's sweep was already signed at another nonce;
- KEY_CREATION_UNSUPPORTED: CreateWallet on a backend that cannot create keys here (AWS KMS:
  keys are created in AWS and configured in SIGNER_KMS_KEY_IDS).

Keys the configuration names are recorded ACTIVE (locator "") when the signer starts; keys
created by CreateWallet are recorded with their locator (the keystore file, the PKCS#11 label)
and opened again from it at every start, so a restart holds them too.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from svc_signer.keys import ENV_BACKEND, KeyBackend, KeyBackendError
from svc_signer.ledger import LedgerEntry
from svc_signer.reasons import Reason, refusal
from withdrawal_shared.db.models import SignerKey, SignerLedger
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.errors import ApiError, Code, FieldViolation, invalid_argument
from withdrawal_shared.ids import new_ulid

SWEEP_MAX_GAS = 100_000
"""A sweep is a plain transfer; to the Safe's proxy (its `receive` emits an event) it costs a
little above 21,000, never this much."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class KeyState(enum.StrEnum):
    """`signer_keys.state`."""

    ACTIVE = "ACTIVE"
    RETIRED = "RETIRED"


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    address: str  # lowercase
    backend: str
    locator: str
    state: KeyState


def _record(row: SignerKey) -> KeyRecord:
    return KeyRecord(row.address, row.backend, row.locator, KeyState(row.state))


def record_configured(session: Session, chain: str, backends: list[KeyBackend]) -> None:
    """Record every configured key not yet recorded, ACTIVE."""
    now = utcnow()
    for backend in backends:
        address = backend.address.lower()
        if session.get(SignerKey, address) is None:
            session.add(
                SignerKey(
                    address=address,
                    chain=chain,
                    backend=backend.backend_name,
                    locator="",
                    state=KeyState.ACTIVE.value,
                    request_id=None,
                    create_time=now,
                    update_time=now,
                )
            )
    session.flush()


def created_keys(session: Session, chain: str) -> list[KeyRecord]:
    """The keys CreateWallet made on this chain (to open again at start), oldest first."""
    rows = session.scalars(
        select(SignerKey)
        .where(SignerKey.chain == chain, SignerKey.locator != "")
        .order_by(SignerKey.create_time, SignerKey.address)
    )
    return [_record(row) for row in rows]


def states(session: Session, addresses: list[str]) -> dict[str, KeyState]:
    """The recorded state of each of these addresses (lowercase); unrecorded ones are absent
    (treated as ACTIVE: a key the configuration names)."""
    rows = session.scalars(
        select(SignerKey).where(SignerKey.address.in_([a.lower() for a in addresses]))
    )
    return {row.address: KeyState(row.state) for row in rows}


def lock_state(session: Session, address: str) -> KeyState:
    """The key's state, its row share-locked until the signing transaction ends (a
    RetireWallet waits for signatures in progress, and none starts after it)."""
    state = session.scalar(
        select(SignerKey.state)
        .where(SignerKey.address == address.lower())
        .with_for_update(read=True)
    )
    return KeyState.ACTIVE if state is None else KeyState(state)


def by_request(session: Session, request_id: str) -> KeyRecord | None:
    row = session.scalar(select(SignerKey).where(SignerKey.request_id == request_id))
    return None if row is None else _record(row)


def parse_request_id(request_id: str) -> str:
    if not _REQUEST_ID.match(request_id):
        raise invalid_argument(
            [FieldViolation("request_id", "must be 1-64 characters of [A-Za-z0-9._:-]")]
        )
    return request_id


def record_created(
    session: Session, chain: str, backend: KeyBackend, locator: str, request_id: str
) -> KeyRecord:
    now = utcnow()
    row = SignerKey(
        address=backend.address.lower(),
        chain=chain,
        backend=backend.backend_name,
        locator=locator,
        state=KeyState.ACTIVE.value,
        request_id=request_id,
        create_time=now,
        update_time=now,
    )
    session.add(row)
    session.flush()
    return _record(row)


def retire(session: Session, chain: str, address: str, backend_name: str) -> KeyRecord:
    """Mark the key RETIRED (its row exclusively locked: signatures in progress end first)."""
    address = address.lower()
    row = session.scalar(select(SignerKey).where(SignerKey.address == address).with_for_update())
    now = utcnow()
    if row is None:
        row = SignerKey(
            address=address,
            chain=chain,
            backend=backend_name,
            locator="",
            state=KeyState.RETIRED.value,
            request_id=None,
            create_time=now,
            update_time=now,
        )
        session.add(row)
    elif row.state != KeyState.RETIRED:
        row.state = KeyState.RETIRED.value
        row.update_time = now
    session.flush()
    return _record(row)


# --- creating a key in the backend -----------------------------------------------------------


def create_key(environ: Mapping[str, str], request_id: str) -> tuple[KeyBackend, str]:
    """Generate a new key in the configured backend; (its backend, its locator). Raises
    ApiError KEY_CREATION_UNSUPPORTED for AWS KMS, KeyBackendError when the backend fails."""
    from svc_signer.keys import (
        ENV_KEYSTORE_PASSWORD_FILE,
        ENV_KEYSTORE_PATH,
        Pkcs11Backend,
        Pkcs11Settings,
        keystore,
    )
    from svc_signer.keys.keystore import KeystoreBackend

    kind = (environ.get(ENV_BACKEND, "") or "keystore").strip().lower()
    suffix = new_ulid().lower()
    if kind == "keystore":
        password_file = Path(
            environ.get(ENV_KEYSTORE_PASSWORD_FILE, "") or keystore.DEFAULT_PASSWORD_FILE
        )
        password = keystore.resolve_password(password_file=password_file, environ=environ)
        first = Path(environ.get(ENV_KEYSTORE_PATH, "") or keystore.DEFAULT_KEYSTORE_PATH)
        path = first.with_name(f"{first.stem}-rotated-{suffix}.json")
        keystore.create_keystore(path, password)
        return KeystoreBackend.load(path, password), str(path)
    if kind == "pkcs11":
        from svc_signer.keys import pkcs11_hsm

        settings = Pkcs11Settings.from_env(environ)
        label = f"{settings.labels[0]}-{suffix}"[:64]
        lib = pkcs11_hsm.load_library(settings.library_path)
        token = pkcs11_hsm.open_token(lib, settings.token_label)
        session = pkcs11_hsm.login(token, settings.pin, rw=True)
        try:
            pkcs11_hsm.generate_secp256k1_key(session, label)
        finally:
            session.close()
        return Pkcs11Backend.open(dataclasses.replace(settings, key_label=label)), label
    if kind == "aws_kms":
        raise refusal(
            Code.FAILED_PRECONDITION,
            Reason.KEY_CREATION_UNSUPPORTED,
            "This signer's keys are in AWS KMS: create the new key in AWS (a secp256k1 "
            "ECC_SECG_P256K1 SIGN_VERIFY key), add it to SIGNER_KMS_KEY_IDS and restart the "
            "signer; it does not create keys itself.",
            backend=kind,
        )
    raise KeyBackendError(f"{ENV_BACKEND}={kind!r} is not a key backend")


def is_own(environ: Mapping[str, str], record: KeyRecord) -> bool:
    """Whether a created key is this signer's: its backend, and beside its first keystore or
    labelled after its first PKCS#11 label (several signers may share a database)."""
    from svc_signer.keys import ENV_KEYSTORE_PATH, Pkcs11Settings, keystore

    kind = (environ.get(ENV_BACKEND, "") or "keystore").strip().lower()
    if record.backend != kind:
        return False
    if kind == "keystore":
        first = Path(environ.get(ENV_KEYSTORE_PATH, "") or keystore.DEFAULT_KEYSTORE_PATH)
        path = Path(record.locator)
        return path.parent == first.parent and path.name.startswith(f"{first.stem}-rotated-")
    if kind == "pkcs11":
        return record.locator.startswith(Pkcs11Settings.from_env(environ).labels[0] + "-")
    return False


def open_created(environ: Mapping[str, str], record: KeyRecord) -> KeyBackend:
    """Open a key CreateWallet made, from its locator."""
    from svc_signer.keys import Pkcs11Backend, Pkcs11Settings, keystore
    from svc_signer.keys.keystore import KeystoreBackend

    if record.backend == "keystore":
        from svc_signer.keys import ENV_KEYSTORE_PASSWORD_FILE

        password_file = Path(
            environ.get(ENV_KEYSTORE_PASSWORD_FILE, "") or keystore.DEFAULT_PASSWORD_FILE
        )
        password = keystore.resolve_password(password_file=password_file, environ=environ)
        return KeystoreBackend.load(Path(record.locator), password)
    if record.backend == "pkcs11":
        settings = Pkcs11Settings.from_env(environ)
        return Pkcs11Backend.open(dataclasses.replace(settings, key_label=record.locator))
    raise KeyBackendError(f"a created key of backend {record.backend!r} cannot be opened")


# --- the rules -------------------------------------------------------------------------------


def check_retired(purpose: str, nonce: int, entries: list[LedgerEntry], wallet: str) -> None:
    """A RETIRED key signs only replacements and nonce releases at a nonce it already signed
    at, and gas sweeps (checked by `check_sweep`)."""
    if purpose == "GAS_SWEEP":
        return
    if purpose in ("REPLACEMENT", "NONCE_RELEASE") and entries:
        return
    raise refusal(
        Code.FAILED_PRECONDITION,
        Reason.WALLET_RETIRED,
        f"The key of wallet {wallet} is retired: it signs no new payout, only replacements and "
        f"nonce releases at nonces it already signed at (not {nonce}) and its gas sweep.",
        wallet=wallet,
        nonce=nonce,
    )


def _sweep_refusal(problem: str, message: str) -> ApiError:
    return refusal(
        Code.PERMISSION_DENIED,
        Reason.INVALID_GAS_SWEEP,
        f"Refused gas sweep: {message}.",
        problem=problem,
    )


def check_sweep_form(*, to: str, data: bytes, value: int, gas: int, items: int) -> None:
    """A sweep is a plain transfer of positive value, no calldata, no items, bounded gas."""
    if items:
        raise _sweep_refusal("items", "a gas sweep pays no withdrawal")
    if data:
        raise _sweep_refusal("data", "a gas sweep carries no calldata")
    if value <= 0:
        raise _sweep_refusal("value", "a gas sweep moves a positive native value")
    if gas > SWEEP_MAX_GAS:
        raise _sweep_refusal("gas", f"a gas sweep needs at most {SWEEP_MAX_GAS} gas, not {gas}")
    del to


def check_sweep(
    session: Session,
    *,
    wallet: str,
    nonce: int,
    to: str,
    treasury: str | None,
    entries: list[LedgerEntry],
) -> None:
    """To the chain's treasury Safe only, at a nonce where only sweeps were signed, and the
    wallet's only sweep (a replacement at the same nonce is allowed)."""
    if treasury is None:
        raise _sweep_refusal("treasury", "this chain has no treasury Safe to sweep to")
    if to.lower() != treasury.lower():
        raise _sweep_refusal("to", f"a gas sweep goes to the treasury Safe {treasury} only")
    if any(entry.purpose != "GAS_SWEEP" for entry in entries):
        raise _sweep_refusal("nonce", f"nonce {nonce} was signed for something else")
    other = session.scalar(
        select(SignerLedger.nonce)
        .where(
            SignerLedger.wallet == wallet,
            SignerLedger.purpose == "GAS_SWEEP",
            SignerLedger.nonce != nonce,
        )
        .limit(1)
    )
    if other is not None:
        raise refusal(
            Code.FAILED_PRECONDITION,
            Reason.GAS_SWEEP_ALREADY_SIGNED,
            f"Wallet {wallet}'s gas sweep was already signed at nonce {other}; a wallet is "
            "swept once (a replacement of it goes at that nonce).",
            wallet=wallet,
            nonce=other,
        )
