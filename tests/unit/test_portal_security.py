"""The portal's CSRF checks and security headers, on requests built in memory (the browser
tests in tests/portal drive the same code end to end)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from svc_gateway.portal import csrf
from svc_gateway.portal.headers import CSP, add_security_headers
from svc_gateway.settings import GatewaySettings
from withdrawal_shared.errors import ApiError
from withdrawal_shared.settings import SettingsError

TOKEN = "t" * 43


def _request(method: str, headers: dict[str, str], path: str = "/portal/api/v1/x") -> web.Request:
    return make_mocked_request(method, path, headers={"Host": "127.0.0.1:8080", **headers})


def _refused(request: web.Request) -> ApiError:
    with pytest.raises(ApiError) as caught:
        csrf.check_token(request, TOKEN)
    return caught.value


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-CSRF-Token": "wrong"},
        {"X-CSRF-Token": TOKEN, "Origin": "http://evil.example"},
        {"X-CSRF-Token": TOKEN, "Sec-Fetch-Site": "cross-site"},
        {"X-CSRF-Token": TOKEN, "Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_state_changing_request_needs_the_token_from_the_same_origin(
    headers: dict[str, str],
) -> None:
    for method in ("POST", "PATCH", "DELETE", "PUT"):
        err = _refused(_request(method, headers))
        status = err.to_status()
        assert status.code == 7  # PERMISSION_DENIED
        assert "X-CSRF-Token" in err.message or "refused" in err.message


def test_the_token_from_the_same_origin_passes_and_reads_need_none() -> None:
    same = {
        "X-CSRF-Token": TOKEN,
        "Origin": "http://127.0.0.1:8080",
        "Sec-Fetch-Site": "same-origin",
    }
    csrf.check_token(_request("POST", same), TOKEN)
    csrf.check_token(_request("POST", {"X-CSRF-Token": TOKEN}), TOKEN)
    csrf.check_token(_request("GET", {}), TOKEN)


def test_sign_in_must_be_json() -> None:
    with pytest.raises(ApiError):
        csrf.check_json(_request("POST", {"Content-Type": "application/x-www-form-urlencoded"}))
    csrf.check_json(_request("POST", {"Content-Type": "application/json"}))


def test_portal_responses_get_the_security_headers_and_others_do_not() -> None:
    async def headers_of(path: str) -> dict[str, str]:
        response = web.Response()
        await add_security_headers(_request("GET", {}, path), response)
        return dict(response.headers)

    portal = asyncio.run(headers_of("/portal/withdrawals"))
    assert portal["Content-Security-Policy"] == CSP
    assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert "form-action 'self'" in CSP and "unsafe-inline" not in CSP
    assert portal["X-Content-Type-Options"] == "nosniff"
    assert portal["Referrer-Policy"] == "no-referrer"
    assert portal["Cache-Control"] == "no-store"
    asset = asyncio.run(headers_of("/portal/static/portal.js"))
    assert "Cache-Control" not in asset and asset["Content-Security-Policy"] == CSP
    assert asyncio.run(headers_of("/v1/withdrawals")) == {}
    assert asyncio.run(headers_of("/portalx")) == {}


def test_the_session_lifetime_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GatewaySettings.from_env().portal_session_seconds == 1800
    monkeypatch.setenv("GATEWAY_PORTAL_SESSION_SECONDS", "600")
    assert GatewaySettings.from_env().portal_session_seconds == 600
    monkeypatch.setenv("GATEWAY_PORTAL_SESSION_SECONDS", "5")
    with pytest.raises(SettingsError):
        GatewaySettings.from_env()


def test_the_explorer_link_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GatewaySettings.from_env().portal_explorer_tx_url == ""
    monkeypatch.setenv("GATEWAY_PORTAL_EXPLORER_TX_URL", " https://polygonscan.com/tx/{hash} ")
    assert GatewaySettings.from_env().portal_explorer_tx_url == "https://polygonscan.com/tx/{hash}"
    for bad in (
        "http://polygonscan.com/tx/{hash}",
        "https://polygonscan.com/tx/",
        "javascript:{hash}",
    ):
        monkeypatch.setenv("GATEWAY_PORTAL_EXPLORER_TX_URL", bad)
        with pytest.raises(SettingsError, match="GATEWAY_PORTAL_EXPLORER_TX_URL"):
            GatewaySettings.from_env()
