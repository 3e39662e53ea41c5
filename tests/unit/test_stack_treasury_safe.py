"""`make up` with STACK_TREASURY_SAFE: three owner signers with ports of their own (checked
before anything starts and scraped like the others); off by default."""

from __future__ import annotations

from pathlib import Path

from devstack.config import SAFE_OWNERS, StackConfig
from devstack.runner import Stack
from devstack.supervisor import Supervisor


def test_off_by_default_adds_no_port(tmp_path: Path) -> None:
    config = StackConfig(var_dir=tmp_path)
    assert not config.treasury_safe
    assert config.safe_owner_ports() == []
    assert not [what for what, _, _ in config.ports() if what.startswith("owner signer")]
    assert not [name for name in config.metrics_ports() if name.startswith("safe_owner")]
    assert Stack(StackConfig(var_dir=tmp_path, tls=False), Supervisor()).owners == []


def test_three_owner_signers_with_their_own_ports(tmp_path: Path) -> None:
    config = StackConfig(var_dir=tmp_path, treasury_safe=True)
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
    plain = StackConfig(var_dir=tmp_path, treasury_safe=True, tls=False)
    owners = Stack(plain, Supervisor()).owners
    assert [(o.name, o.module, o.port, o.health_port) for o in owners] == [
        (f"safe_owner_{i}", "svc_signer", 50059 + i, None) for i in range(1, SAFE_OWNERS + 1)
    ]
    assert plain.safe_owner_dir(2) == tmp_path / "safe_owner_2"
