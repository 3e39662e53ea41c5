"""The store TLS settings: what they turn on, and each misconfiguration refused with a
SettingsError naming the variable (no server needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from svc_signer.settings import SignerSettings
from tests.store_tls.support import Pki, make_pki
from withdrawal_shared.db import migrate
from withdrawal_shared.db.engine import make_engine
from withdrawal_shared.settings import SettingsError, StoreSettings
from withdrawal_shared.store_tls import DatabaseTls, redis_client, redis_tls_kwargs

MYSQL = "mysql+pymysql://u:p@db.internal:3306/withdrawals?charset=utf8mb4"
VARIABLES = (
    "DATABASE_URL",
    "DATABASE_TLS_CA",
    "DATABASE_TLS_CERT",
    "DATABASE_TLS_KEY",
    "REDIS_URL",
    "REDIS_TLS_CA",
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _store(monkeypatch: pytest.MonkeyPatch, **env: str) -> StoreSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return StoreSettings(**StoreSettings.store_env())


def test_unset_means_no_tls_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _store(monkeypatch, DATABASE_URL=MYSQL)
    assert settings.database_tls is None
    assert settings.redis_tls_ca == ""
    assert redis_tls_kwargs(settings.redis_url) == {}


def test_the_settings_are_read(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    settings = _store(
        monkeypatch,
        DATABASE_URL=MYSQL,
        DATABASE_TLS_CA=str(pki.ca),
        DATABASE_TLS_CERT=str(pki.client.cert),
        DATABASE_TLS_KEY=str(pki.client.key),
        REDIS_URL="rediss://redis.internal:6379/0",
        REDIS_TLS_CA=str(pki.ca),
    )
    assert settings.database_tls == DatabaseTls(pki.ca, pki.client.cert, pki.client.key)
    context = settings.database_tls.ssl_context()
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"
    assert settings.redis_tls_ca == str(pki.ca)
    kwargs = redis_tls_kwargs(settings.redis_url, settings.redis_tls_ca)
    assert kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_check_hostname"] is True
    assert kwargs["ssl_ca_certs"] == str(pki.ca)
    # rediss:// without a CA of its own verifies against the system's CAs
    assert redis_tls_kwargs("rediss://redis.internal:6379/0")["ssl_cert_reqs"] == "required"


def test_the_signer_reads_the_database_tls_settings(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    monkeypatch.setenv("DATABASE_URL", MYSQL)
    monkeypatch.setenv("DATABASE_TLS_CA", str(pki.ca))
    assert SignerSettings.from_env().database_tls == DatabaseTls(pki.ca)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"DATABASE_URL": "sqlite:///x.sqlite3", "DATABASE_TLS_CA": "{ca}"}, "SQLite"),
        ({"DATABASE_URL": MYSQL, "DATABASE_TLS_CA": "{missing}"}, "DATABASE_TLS_CA="),
        ({"DATABASE_URL": MYSQL, "DATABASE_TLS_CA": "{key}"}, "DATABASE_TLS_CA="),
        (
            {"DATABASE_URL": MYSQL, "DATABASE_TLS_CERT": "{cert}", "DATABASE_TLS_KEY": "{key}"},
            "DATABASE_TLS_CA",
        ),
        (
            {"DATABASE_URL": MYSQL, "DATABASE_TLS_CA": "{ca}", "DATABASE_TLS_CERT": "{cert}"},
            "DATABASE_TLS_KEY",
        ),
        (
            {
                "DATABASE_URL": MYSQL,
                "DATABASE_TLS_CA": "{ca}",
                "DATABASE_TLS_CERT": "{missing}",
                "DATABASE_TLS_KEY": "{key}",
            },
            "DATABASE_TLS_CERT=",
        ),
        (
            {
                "DATABASE_URL": MYSQL,
                "DATABASE_TLS_CA": "{ca}",
                "DATABASE_TLS_CERT": "{ca}",
                "DATABASE_TLS_KEY": "{key}",
            },
            "DATABASE_TLS_CERT=",
        ),
        (
            {"DATABASE_URL": MYSQL + "&ssl_disabled=true", "DATABASE_TLS_CA": "{ca}"},
            "DATABASE_URL carries ssl_disabled",
        ),
        ({"DATABASE_URL": "postgresql://u@h/db", "DATABASE_TLS_CA": "{ca}"}, "uses postgresql"),
        (
            {"REDIS_URL": "redis://redis.internal:6379/0", "REDIS_TLS_CA": "{ca}"},
            "REDIS_TLS_CA is set but REDIS_URL",
        ),
        ({"REDIS_URL": "rediss://r:6379/0?ssl_cert_reqs=none"}, "REDIS_URL carries ssl_cert_reqs"),
        ({"REDIS_URL": "rediss://r:6379/0", "REDIS_TLS_CA": "{missing}"}, "REDIS_TLS_CA="),
    ],
    ids=[
        "sqlite",
        "missing CA",
        "CA not a certificate",
        "client certificate without CA",
        "certificate without key",
        "missing certificate",
        "key not matching",
        "ssl option in the URL",
        "not PyMySQL",
        "redis CA with redis://",
        "ssl option in rediss://",
        "missing redis CA",
    ],
)
def test_misconfigurations_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, tmp_path: Path, env: dict[str, str], names: str
) -> None:
    files = {
        "ca": str(pki.ca),
        "cert": str(pki.client.cert),
        "key": str(pki.client.key),
        "missing": str(tmp_path / "nothing.pem"),
    }
    with pytest.raises(SettingsError, match=names):
        _store(monkeypatch, **{k: v.format(**files) for k, v in env.items()})


def test_the_factories_refuse_what_the_settings_refuse(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SQLite"):
        make_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}", tls=DatabaseTls(pki.ca))
    with pytest.raises(SettingsError, match="REDIS_TLS_CA is set"):
        redis_client(
            "redis://127.0.0.1:1/0", tls_ca=str(pki.ca), socket_connect_timeout=1, socket_timeout=1
        )


def test_migrate_stops_on_a_misconfiguration(
    monkeypatch: pytest.MonkeyPatch, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["migrate", f"sqlite:///{tmp_path / 'x.sqlite3'}"])
    monkeypatch.setenv("DATABASE_TLS_CA", str(pki.ca))
    with pytest.raises(SystemExit) as stopped:
        migrate.main()
    assert stopped.value.code == 2
    assert "DATABASE_TLS_CA is set but DATABASE_URL is a SQLite file" in capsys.readouterr().err
    assert not (tmp_path / "x.sqlite3").exists()
