"""`make up`'s treasury Safe (STACK_TREASURY_SAFE, on by default): three owner signers with
ports of their own (checked before anything starts and scraped like the others); `0` turns it
off. The harness stacks have it too (`HarnessConfig.treasury_safe`)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devstack.config import SAFE_OWNERS, StackConfig, free_ports_in_a_row, port_is_free
from devstack.harness import SAFE_DEPLOYMENT_GAS_LIMIT, HarnessConfig, HarnessStack
from devstack.runner import Stack
from devstack.supervisor import Supervisor


def test_on_by_default_and_off_with_zero(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert StackConfig(var_dir=tmp_path).treasury_safe
    monkeypatch.delenv("STACK_TREASURY_SAFE", raising=False)
    assert StackConfig.from_env().treasury_safe
    monkeypatch.setenv("STACK_TREASURY_SAFE", "0")
    assert not StackConfig.from_env().treasury_safe
    assert HarnessConfig(var_dir=tmp_path).treasury_safe


def test_off_adds_no_port(tmp_path: Path) -> None:
    config = StackConfig(var_dir=tmp_path, treasury_safe=False)
    assert config.safe_owner_ports() == []
    assert not [what for what, _, _ in config.ports() if what.startswith("owner signer")]
    assert not [name for name in config.metrics_ports() if name.startswith("safe_owner")]
    off = StackConfig(var_dir=tmp_path, tls=False, treasury_safe=False)
    assert Stack(off, Supervisor()).owners == []


def test_three_owner_signers_with_their_own_ports(tmp_path: Path) -> None:
    config = StackConfig(var_dir=tmp_path)
    assert config.safe_owner_ports() == [
        (50060, 50063, 9106),
        (50061, 50064, 9107),
        (50062, 50065, 9108),
    ]
    listed = {port for what, _, port in config.ports() if what.startswith("owner signer")}
    assert listed == {50060, 50061, 50062, 50063, 50064, 50065, 9106, 9107, 9108}
    every = [port for _, _, port in config.ports()]
    assert len(every) == len(set(every))  # no port twice
    assert {n: p for n, p in config.metrics_ports().items() if n.startswith("safe_owner")} == {
        "safe_owner_1": 9106,
        "safe_owner_2": 9107,
        "safe_owner_3": 9108,
    }
    plain = StackConfig(var_dir=tmp_path, tls=False)
    owners = Stack(plain, Supervisor()).owners
    assert [(o.name, o.module, o.port, o.health_port) for o in owners] == [
        (f"safe_owner_{i}", "svc_signer", 50059 + i, None) for i in range(1, SAFE_OWNERS + 1)
    ]
    assert plain.safe_owner_dir(2) == tmp_path / "safe_owner_2"


def test_free_ports_in_a_row_are_free_and_not_handed_out_twice() -> None:
    first = free_ports_in_a_row(SAFE_OWNERS)
    assert all(port_is_free(first + i) for i in range(SAFE_OWNERS))
    again = free_ports_in_a_row(SAFE_OWNERS)
    assert not {first + i for i in range(SAFE_OWNERS)} & {again + i for i in range(SAFE_OWNERS)}
    with socket.socket() as taken:  # a run is never handed out over a listening port
        taken.bind(("127.0.0.1", again + SAFE_OWNERS))
        taken.listen()
        assert not port_is_free(again + SAFE_OWNERS)


def test_the_harness_lifts_a_low_gas_limit_only_through_the_bootstrap(tmp_path: Path) -> None:
    low = HarnessStack(HarnessConfig(var_dir=tmp_path, gas_limit=3_000_000))
    assert low.bootstrap_gas_limit == SAFE_DEPLOYMENT_GAS_LIMIT
    off = HarnessStack(HarnessConfig(var_dir=tmp_path, gas_limit=3_000_000, treasury_safe=False))
    assert off.bootstrap_gas_limit == 3_000_000
    assert HarnessStack(HarnessConfig(var_dir=tmp_path)).bootstrap_gas_limit == 60_000_000
