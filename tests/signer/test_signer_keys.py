"""Key backends: keystore round trip, HSM key attributes, low-s, recovery, error messages."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import coincurve
import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11 import exceptions as p11_errors

from svc_signer.keys import KeyBackend, backend_from_env
from svc_signer.keys.backend import SECP256K1_HALF_N, recover_address
from svc_signer.keys.keystore import (
    KeystoreBackend,
    KeystoreError,
    create_keystore,
    resolve_password,
)
from svc_signer.keys.pkcs11_hsm import (
    Pkcs11Backend,
    Pkcs11Error,
    Pkcs11Settings,
    ec_point_to_public_key,
    find_pkcs11_library,
    login,
)
from svc_signer.keys.softhsm import SoftHsmToken, provision_softhsm


def test_keystore_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    address = create_keystore(path, "correct horse battery staple")  # default kdf: scrypt
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["crypto"]["kdf"] == "scrypt"
    backend = KeystoreBackend.load(path, "correct horse battery staple")
    assert backend.address == address
    assert backend.backend_name == "keystore"
    assert isinstance(backend, KeyBackend)
    assert "correct horse" not in repr(backend)
    with pytest.raises(KeystoreError, match="refusing to overwrite"):
        create_keystore(path, "another password")


def test_keystore_wrong_password_is_clear_and_does_not_leak(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    create_keystore(path, "the-right-one", kdf="pbkdf2", iterations=2)
    with pytest.raises(KeystoreError) as caught:
        KeystoreBackend.load(path, "hunter2-wrong-password")
    message = str(caught.value)
    assert "wrong password" in message
    assert str(path) in message
    assert "hunter2" not in message
    assert "the-right-one" not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_keystore_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="no keystore at"):
        KeystoreBackend.load(tmp_path / "absent.json", "pw")


def test_password_file_is_generated_0600_and_env_wins(tmp_path: Path) -> None:
    password_file = tmp_path / "var" / "keystore.password"
    first = resolve_password(password_file=password_file, environ={})
    assert len(first) >= 32
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert resolve_password(password_file=password_file, environ={}) == first
    from_env = resolve_password(
        password_file=password_file, environ={"SIGNER_KEYSTORE_PASSWORD": "from-env"}
    )
    assert from_env == "from-env"


def test_backend_from_env_creates_the_dev_keystore_once(tmp_path: Path) -> None:
    env = {
        "SIGNER_KEYSTORE_PATH": str(tmp_path / "var" / "signer" / "keystore.json"),
        "SIGNER_KEYSTORE_PASSWORD_FILE": str(tmp_path / "var" / "signer" / "keystore.password"),
    }
    first = backend_from_env(env)
    second = backend_from_env(env)
    assert first.backend_name == "keystore"
    assert first.address == second.address


def test_hsm_private_key_is_sensitive_and_not_extractable(softhsm_token: SoftHsmToken) -> None:
    settings = softhsm_token.settings
    lib = pkcs11.lib(find_pkcs11_library(settings.library_path))
    token = lib.get_token(token_label=settings.token_label)
    with login(token, settings.pin) as session:
        private = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=settings.key_label
        )
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.LOCAL] is True  # generated inside the token
        assert private[Attribute.LABEL] == settings.key_label
        with pytest.raises(p11_errors.AttributeSensitive):
            private[Attribute.VALUE]


def test_hsm_backend_address_matches_provisioning(
    softhsm_token: SoftHsmToken, hsm_backend: Pkcs11Backend
) -> None:
    assert hsm_backend.address == softhsm_token.address
    assert hsm_backend.backend_name == "pkcs11"
    assert isinstance(hsm_backend, KeyBackend)
    assert softhsm_token.settings.pin not in repr(hsm_backend)
    assert softhsm_token.settings.pin not in repr(softhsm_token.settings)


def test_provisioning_is_idempotent(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    base = softhsm_token.conf_path.parent.parent
    again = provision_softhsm(
        base,
        token_label=softhsm_token.settings.token_label,
        key_label=softhsm_token.settings.key_label,
        pin=softhsm_token.settings.pin,
        so_pin="so-pin-for-tests",
    )
    assert again.address == softhsm_token.address
    assert again.key_created is False


def test_hsm_wrong_pin_and_missing_key_are_clear(softhsm_token: SoftHsmToken) -> None:
    good = softhsm_token.settings
    with pytest.raises(Pkcs11Error, match="no key labelled 'absent-key'"):
        Pkcs11Backend.open(
            Pkcs11Settings(pin=good.pin, token_label=good.token_label, key_label="absent-key")
        )
    with pytest.raises(Pkcs11Error, match="PIN was rejected") as caught:
        Pkcs11Backend.open(
            Pkcs11Settings(pin="wrong-pin-123", token_label=good.token_label, key_label="x")
        )
    assert "wrong-pin-123" not in str(caught.value)
    assert good.pin not in str(caught.value)
    with pytest.raises(Pkcs11Error, match="no PKCS#11 token labelled 'absent-token'"):
        Pkcs11Backend.open(Pkcs11Settings(pin=good.pin, token_label="absent-token"))


def test_pkcs11_settings_from_env_requires_a_pin() -> None:
    with pytest.raises(Pkcs11Error, match="SIGNER_PKCS11_PIN"):
        Pkcs11Settings.from_env({})
    settings = Pkcs11Settings.from_env({"SIGNER_PKCS11_PIN": "1234"})
    assert settings.token_label == "withdrawal-signer"
    assert "1234" not in repr(settings)


def test_missing_library_error_says_make_softhsm(tmp_path: Path) -> None:
    with pytest.raises(Pkcs11Error, match="make softhsm"):
        find_pkcs11_library(str(tmp_path / "libnothing.so"))


def test_ec_point_wrapped_and_raw() -> None:
    point = coincurve.PrivateKey().public_key.format(compressed=False)
    assert ec_point_to_public_key(point) == point
    assert ec_point_to_public_key(b"\x04\x41" + point) == point
    assert ec_point_to_public_key(b"\x04\x81\x41" + point) == point
    with pytest.raises(Pkcs11Error):
        ec_point_to_public_key(b"\x04\x20" + os.urandom(32))


def test_low_s_and_recovery_across_many_signatures(backend: KeyBackend) -> None:
    for _ in range(50):
        digest = os.urandom(32)
        signature = backend.sign_digest(digest)
        assert 0 < signature.s <= SECP256K1_HALF_N
        assert signature.v in (0, 1)
        assert signature.recovery_id == signature.v
        assert recover_address(digest, signature) == backend.address


def test_sign_digest_rejects_wrong_length(backend: KeyBackend) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        backend.sign_digest(b"\x00" * 31)
