"""GATEWAY_WORKERS: several gateway processes share fixed ports; port 0 cannot be shared."""

from __future__ import annotations

import pytest

from svc_gateway.settings import GatewaySettings
from withdrawal_shared.settings import SettingsError


def test_one_worker_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_WORKERS", raising=False)
    assert GatewaySettings.from_env().workers == 1


def test_several_workers_need_fixed_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WORKERS", "2")
    monkeypatch.setenv("GATEWAY_GRPC_PORT", "0")
    monkeypatch.setenv("GATEWAY_HTTP_PORT", "18080")
    with pytest.raises(SettingsError, match="fixed ports"):
        GatewaySettings.from_env()
    monkeypatch.setenv("GATEWAY_GRPC_PORT", "15051")
    assert GatewaySettings.from_env().workers == 2


def test_workers_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_WORKERS", "0")
    with pytest.raises(SettingsError):
        GatewaySettings.from_env()
