"""PROCESSOR_CONSUMER_NAME: stable per replica, so a restarted processor resumes its own
unacknowledged tasks (svc_processor.consumer.TaskConsumer.resume_own_pending)."""

from __future__ import annotations

import socket

import pytest

from svc_processor.settings import ProcessorSettings
from withdrawal_shared.settings import SettingsError


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROCESSOR_CONSUMER_NAME", raising=False)
    monkeypatch.delenv("PROCESSOR_REPLICA", raising=False)


def test_default_is_host_and_replica_zero_the_same_at_every_start() -> None:
    first = ProcessorSettings.from_env().consumer_name
    assert first == f"{socket.gethostname()}-0"
    assert ProcessorSettings.from_env().consumer_name == first


def test_replica_index_and_explicit_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_REPLICA", "2")
    assert ProcessorSettings.from_env().consumer_name == f"{socket.gethostname()}-2"
    monkeypatch.setenv("PROCESSOR_CONSUMER_NAME", "processor-a")
    assert ProcessorSettings.from_env().consumer_name == "processor-a"


def test_negative_replica_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_REPLICA", "-1")
    with pytest.raises(SettingsError, match="PROCESSOR_REPLICA"):
        ProcessorSettings.from_env()
