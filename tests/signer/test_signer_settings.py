"""SignerSettings: documented defaults, environment parsing, and no secrets inside."""

from __future__ import annotations

import pytest

from svc_signer.settings import SignerSettings
from withdrawal_shared.settings import DEFAULT_DATABASE_URL, SettingsError

_VARIABLES = (
    "DATABASE_URL",
    "SIGNER_GRPC_HOST",
    "SIGNER_GRPC_PORT",
    "SIGNER_CHAIN_ID",
    "SIGNER_CHAIN",
    "SIGNER_KEY_BACKEND",
    "SIGNER_KEYSTORE_PATH",
    "SIGNER_KEYSTORE_PASSWORD",
    "SIGNER_KEYSTORE_PASSWORD_FILE",
    "SIGNER_PKCS11_PIN",
    "SIGNER_PKCS11_PIN_FILE",
    "SIGNER_PKCS11_TOKEN_LABEL",
    "SIGNER_PKCS11_KEY_LABEL",
    "SIGNER_PKCS11_KEY_LABELS",
    "SIGNER_KEYSTORE_COUNT",
    "SIGNER_KMS_KEY_IDS",
    "SIGNER_KMS_REGION",
    "SIGNER_KMS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = SignerSettings.from_env()
    assert settings == SignerSettings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert (settings.grpc_host, settings.grpc_port) == ("127.0.0.1", 50052)
    assert (settings.chain_id, settings.chain, settings.key_backend) == (137, "polygon", "keystore")
    assert (settings.keystore_count, settings.pkcs11_key_labels) == (1, ())
    assert settings.key_environ()["SIGNER_KEYSTORE_COUNT"] == "1"


def test_several_hot_wallets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNER_KEYSTORE_COUNT", "3")
    monkeypatch.setenv("SIGNER_PKCS11_KEY_LABELS", "hot-0, hot-1,hot-2")
    settings = SignerSettings.from_env()
    assert settings.keystore_count == 3
    assert settings.pkcs11_key_labels == ("hot-0", "hot-1", "hot-2")
    environ = settings.key_environ()
    assert environ["SIGNER_KEYSTORE_COUNT"] == "3"
    assert environ["SIGNER_PKCS11_KEY_LABELS"] == "hot-0,hot-1,hot-2"


@pytest.mark.parametrize("labels", ["hot-0,,hot-1", "hot-0,hot-0"])
def test_bad_key_labels_are_refused(monkeypatch: pytest.MonkeyPatch, labels: str) -> None:
    monkeypatch.setenv("SIGNER_PKCS11_KEY_LABELS", labels)
    with pytest.raises(SettingsError, match="SIGNER_PKCS11_KEY_LABELS"):
        SignerSettings.from_env()


def test_from_env_and_key_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNER_GRPC_PORT", "0")
    monkeypatch.setenv("SIGNER_CHAIN_ID", "80002")
    monkeypatch.setenv("SIGNER_KEY_BACKEND", "PKCS11")
    monkeypatch.setenv("SIGNER_PKCS11_TOKEN_LABEL", "prod-token")
    monkeypatch.setenv("SIGNER_PKCS11_PIN", "1234-secret")
    settings = SignerSettings.from_env()
    assert (settings.grpc_port, settings.chain_id) == (0, 80002)
    assert (settings.key_backend, settings.pkcs11_token_label) == ("pkcs11", "prod-token")
    assert "1234-secret" not in repr(settings)
    environ = settings.key_environ()
    assert environ["SIGNER_KEY_BACKEND"] == "pkcs11"
    assert environ["SIGNER_PKCS11_TOKEN_LABEL"] == "prod-token"
    assert environ["SIGNER_PKCS11_PIN"] == "1234-secret"  # passed through, never stored
    assert "SIGNER_KEYSTORE_PASSWORD" not in environ


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIGNER_KEY_BACKEND", "kms"),
        ("SIGNER_KMS_KEY_IDS", "some-key"),  # with the default keystore backend
        ("SIGNER_KMS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ("SIGNER_KMS_REGION", "eu-west-1"),
        ("SIGNER_GRPC_PORT", "-1"),
        ("SIGNER_CHAIN_ID", "x"),
        ("SIGNER_KEYSTORE_COUNT", "0"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        SignerSettings.from_env()


def test_aws_kms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNER_KEY_BACKEND", "aws_kms")
    monkeypatch.setenv("SIGNER_KMS_KEY_IDS", "1234abcd-12ab-34cd-56ef-1234567890ab, alias/hot-1")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")  # used when SIGNER_KMS_REGION is unset
    settings = SignerSettings.from_env()
    assert settings.key_backend == "aws_kms"
    assert settings.kms_key_ids == ("1234abcd-12ab-34cd-56ef-1234567890ab", "alias/hot-1")
    assert (settings.kms_region, settings.kms_endpoint_url) == ("eu-central-1", "")
    environ = settings.key_environ()
    assert environ["SIGNER_KMS_KEY_IDS"] == "1234abcd-12ab-34cd-56ef-1234567890ab,alias/hot-1"
    assert environ["SIGNER_KMS_REGION"] == "eu-central-1"
    monkeypatch.setenv("SIGNER_KMS_REGION", "us-east-2")
    monkeypatch.setenv("SIGNER_KMS_ENDPOINT_URL", "http://localhost:4566")
    settings = SignerSettings.from_env()
    assert (settings.kms_region, settings.kms_endpoint_url) == (
        "us-east-2",
        "http://localhost:4566",
    )
    assert SignerSettings().kms_key_ids == ()


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({}, "SIGNER_KMS_KEY_IDS"),
        ({"SIGNER_KMS_KEY_IDS": "a,,b"}, "SIGNER_KMS_KEY_IDS"),
        ({"SIGNER_KMS_KEY_IDS": "a,a"}, "SIGNER_KMS_KEY_IDS"),
        ({"SIGNER_KMS_KEY_IDS": "a", "SIGNER_KMS_REGION": ""}, "SIGNER_KMS_REGION"),
        ({"SIGNER_KMS_KEY_IDS": "a", "SIGNER_KMS_REGION": "Frankfurt"}, "SIGNER_KMS_REGION"),
        ({"SIGNER_KMS_KEY_IDS": "a", "AWS_DEFAULT_REGION": "eu west"}, "AWS_DEFAULT_REGION"),
        (
            {
                "SIGNER_KMS_KEY_IDS": "arn:aws:kms:us-east-1:111122223333:key/k1",
                "SIGNER_KMS_REGION": "eu-west-1",
            },
            "SIGNER_KMS_KEY_IDS",
        ),
        (
            {"SIGNER_KMS_KEY_IDS": "arn:aws:s3:::bucket", "SIGNER_KMS_REGION": "eu-west-1"},
            "SIGNER_KMS_KEY_IDS",
        ),
        (
            {
                "SIGNER_KMS_KEY_IDS": "a",
                "SIGNER_KMS_REGION": "eu-west-1",
                "SIGNER_KMS_ENDPOINT_URL": "http://kms.example.internal",  # clear text off-host
            },
            "SIGNER_KMS_ENDPOINT_URL",
        ),
        (
            {
                "SIGNER_KMS_KEY_IDS": "a",
                "SIGNER_KMS_REGION": "eu-west-1",
                "SIGNER_KMS_ENDPOINT_URL": "kms.eu-west-1.amazonaws.com",
            },
            "SIGNER_KMS_ENDPOINT_URL",
        ),
    ],
)
def test_aws_kms_wrong_combinations_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    monkeypatch.setenv("SIGNER_KEY_BACKEND", "aws_kms")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        SignerSettings.from_env()
