"""CHAIN_RPC_URL: one URL or several, comma-separated, in order of preference."""

from __future__ import annotations

import pytest

from withdrawal_shared.settings import ChainSettings, SettingsError


def test_one_url_is_one_provider() -> None:
    assert ChainSettings().chain_rpc_urls == ("http://127.0.0.1:8545",)
    assert ChainSettings(chain_rpc_url="http://a:1").chain_rpc_urls == ("http://a:1",)


def test_several_urls_split_and_strip_in_order() -> None:
    settings = ChainSettings(chain_rpc_url=" http://b:2 ,http://a:1,, https://c/key ,")
    assert settings.chain_rpc_urls == ("http://b:2", "http://a:1", "https://c/key")
    assert settings.chain_rpc_url == " http://b:2 ,http://a:1,, https://c/key ,"  # kept as is


def test_repeats_are_dropped() -> None:
    assert ChainSettings(chain_rpc_url="http://a:1, http://a:1").chain_rpc_urls == ("http://a:1",)


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAIN_RPC_URL", "http://127.0.0.1:1, http://127.0.0.1:2")
    settings = ChainSettings(**ChainSettings.chain_env())
    assert settings.chain_rpc_urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")


def test_empty_is_refused() -> None:
    with pytest.raises(SettingsError, match="CHAIN_RPC_URL"):
        _ = ChainSettings(chain_rpc_url=" , ").chain_rpc_urls
