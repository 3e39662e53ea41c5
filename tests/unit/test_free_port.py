"""`devstack.config.free_port`: ports claimed across processes, so parallel draws never meet."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from devstack import config


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(config, "PORT_CLAIMS", tmp_path / "claims")
    return tmp_path / "claims"


def test_a_claimed_port_is_not_claimed_again_until_the_claim_is_void(claims: Path) -> None:
    assert config._claim(25001)
    assert not config._claim(25001)  # another drawer, a moment later
    old = time.time() - config.PORT_CLAIM_SECONDS - 1
    os.utime(claims / "25001", (old, old))
    assert config._claim(25001)  # void: taken over


def test_ports_drawn_are_distinct_free_and_claimed(claims: Path) -> None:
    ports = [config.free_port() for _ in range(100)]
    assert len(set(ports)) == 100
    assert {int(p.name) for p in claims.iterdir()} == set(ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing listens there


def test_a_port_claimed_elsewhere_is_never_drawn(
    claims: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = iter([21000, 21000, 21001])
    monkeypatch.setattr(config.secrets, "randbelow", lambda _n: next(draws) - 20000)
    monkeypatch.setattr(config, "_ephemeral_range", lambda: (32768, 60999))
    assert config.free_port() == 21000
    assert config.free_port() == 21001  # 21000 drawn again, but claimed
