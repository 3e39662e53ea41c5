"""The portal in a real browser (Debian's headless chromium, driven by Playwright) against the
real pipeline (anvil, MariaDB, Redis, keystore signer; one stack for the module): sign-in and
its cookie, a withdrawal created in the portal watched to COMPLETED, a CSV batch uploaded and
its report downloaded, webhook endpoints, an operator approving a held withdrawal and using
the kill switch; CSRF, tenant isolation, sign-out and expired sessions; the security headers;
axe-core on every page (no serious or critical violation). Screenshots of the main pages go
to var/portal-screenshots/ (ignored by git)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright import sync_api

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2
from tests.support.databases import mariadb_database
from tests.support.gateway import OperatorAccount, Partner
from tests.support.pipeline import Pipeline, running_pipeline
from tests.support.requests import create_request, fresh_address
from tests.support.signers import keystore_signer
from withdrawal_shared.db.api_keys import revoke_api_key
from withdrawal_shared.db.operators import Role
from withdrawal_shared.scopes import Scope

REPO = Path(__file__).resolve().parents[2]
EXPLORER = "https://explorer.example/tx/{hash}"
"""GATEWAY_PORTAL_EXPLORER_TX_URL of the stack: the page links the hash there (never fetched)."""
SHOTS = REPO / "var" / "portal-screenshots"
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
S = withdrawal_pb2
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module", autouse=True)
def browser_tools() -> None:
    """Fail (never skip) without the tools `make test` installs: a skipped browser test would
    prove nothing."""
    if not Path(CHROMIUM).exists() or not AXE.exists():
        pytest.fail(
            "needs Debian's chromium (make chromium-bin) and node_modules/axe-core (make deps)"
        )


@pytest.fixture(scope="module")
def stack(
    redis_url: str, module_redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    with (
        mariadb_database() as database,
        keystore_signer(database, tmp_path_factory.mktemp("keystore")) as target,
        running_pipeline(
            database,
            redis_url,
            module_redis_prefix,
            target,
            # A webhook endpoint on loopback can be added; nothing delivers here (no sender).
            gateway_options={
                "webhooks_allow_http_loopback": True,
                "portal_explorer_tx_url": EXPLORER,
            },
        ) as pipeline,
    ):
        yield pipeline


@pytest.fixture(scope="module")
def base(stack: Pipeline) -> str:
    return stack.gateway.base_url


@pytest.fixture(scope="module")
def key(stack: Pipeline) -> Partner:
    """A key of the pipeline's partner with every scope (its own lacks batches and webhooks)."""
    return stack.gateway.add_partner(stack.partner.id, frozenset(Scope))


@pytest.fixture(scope="module")
def other_partner(stack: Pipeline) -> Partner:
    return stack.gateway.add_partner("portal-other")


@pytest.fixture(scope="module")
def operator(stack: Pipeline) -> OperatorAccount:
    return stack.gateway.add_operator("portal-approver", Role.APPROVER, Role.OPERATOR)


@pytest.fixture(scope="module")
def viewer(stack: Pipeline) -> OperatorAccount:
    return stack.gateway.add_operator("portal-viewer", Role.VIEWER)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


class Console:
    """The page's console errors (a CSP violation among them)."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def csp_violations(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e]


@pytest.fixture(scope="module")
def partner_page(browser: Any, base: str, key: Partner) -> Iterator[tuple[Any, Console]]:
    """A strict context (CSP enforced), signed in as the pipeline's partner through the form."""
    context = browser.new_context(base_url=base, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console(page)
    _open(page, "/portal/")
    page.get_by_label("API key").wait_for()
    page.screenshot(path=str(SHOTS / "sign-in.png"), full_page=True)
    page.get_by_label("API key").fill(key.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/withdrawals")
    page.locator("#who").filter(has_text="e2e-partner").wait_for()
    yield page, console
    context.close()


def _open(page: Any, path: str) -> None:
    """Go to a portal page and wait until its script has set itself up."""
    page.goto(path)
    page.locator("body[data-ready]").wait_for(state="attached")


def _cookie(page: Any, name: str) -> dict[str, Any]:
    found = [c for c in page.context.cookies() if c["name"] == name]
    assert len(found) == 1, page.context.cookies()
    cookie: dict[str, Any] = found[0]
    return cookie


def _csrf(base: str, cookie: str, name: str = "portal_session", api: str = "/portal/api") -> str:
    answer = httpx.get(f"{base}{api}/session", headers={"Cookie": f"{name}={cookie}"})
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["csrfToken"]
    return token


def _session_key(stack: Pipeline, session_id: str) -> str:
    return f"{stack.redis_prefix}portal:session:{hashlib.sha256(session_id.encode()).hexdigest()}"


# ------------------------------------------------------------------ headers and sign-in


def test_every_portal_response_has_a_strict_csp_and_the_security_headers(base: str) -> None:
    for path in ("/portal/", "/portal/withdrawals", "/portal/admin/", "/portal/static/portal.js"):
        answer = httpx.get(base + path)
        assert answer.status_code == 200, path
        csp = {
            d.strip().split(" ", 1)[0]: d.strip().split(" ", 1)[1]
            for d in answer.headers["content-security-policy"].split(";")
        }
        assert csp["default-src"] == "'self'"
        assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
        assert csp["frame-ancestors"] == "'none'" and csp["form-action"] == "'self'"
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
        assert "unsafe-eval" not in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
    # No inline script or style in any page.
    for path in ("/portal/", "/portal/withdrawals", "/portal/withdrawal", "/portal/batches"):
        html = httpx.get(base + path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert "<style" not in html and " style=" not in html and "onclick" not in html
    # An API answer of the portal is the API's JSON error, with the headers too.
    answer = httpx.get(f"{base}/portal/api/v1/withdrawals")
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["status"] == "UNAUTHENTICATED"
    assert "default-src 'self'" in answer.headers["content-security-policy"]


def test_sign_in_sets_a_strict_session_cookie_and_keeps_no_key(
    partner_page: tuple[Any, Console], stack: Pipeline, key: Partner
) -> None:
    page, console = partner_page
    cookie = _cookie(page, "portal_session")
    assert cookie["httpOnly"] is True and cookie["secure"] is True
    assert cookie["sameSite"] == "Strict" and cookie["path"] == "/portal"
    ttl = stack.gateway.server.settings.portal_session_seconds
    assert 0 < cookie["expires"] - time.time() <= ttl + 5  # expires, not a browser session
    assert key.api_key not in cookie["value"]
    # The session lives in Redis under the id's hash, with a TTL, holding no key.
    client = redis.Redis.from_url(stack.gateway.server.settings.redis_url)
    stored_at = _session_key(stack, cookie["value"])
    assert 0 < client.ttl(stored_at) <= ttl
    stored = client.get(stored_at)
    assert stored is not None and key.api_key.encode() not in stored
    assert client.get(f"{stack.redis_prefix}portal:session:{cookie['value']}") is None
    # Nothing of the key in the page, its storage, or the cookies a script can read.
    for path in ("/portal/withdrawals", "/portal/batches", "/portal/webhooks", "/portal/"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert key.api_key not in page.content()
        seen = page.evaluate(
            "() => JSON.stringify([{...localStorage}, {...sessionStorage}, document.cookie])"
        )
        assert key.api_key not in seen
        assert "portal_session" not in seen  # HttpOnly: not readable by scripts
    _open(page, "/portal/withdrawals")  # a signed-in visit to the sign-in page moved on
    assert console.csp_violations() == []


# ------------------------------------------------------------------ the partner's pages


def test_a_withdrawal_created_in_the_portal_is_watched_to_completed(
    partner_page: tuple[Any, Console], stack: Pipeline
) -> None:
    page, console = partner_page
    _open(page, "/portal/withdrawals")
    recipient = fresh_address()
    page.get_by_label("Recipient address", exact=True).last.fill(recipient)
    page.get_by_label("Amount In token units").fill("3.5")
    page.get_by_label("Client reference Optional").fill("portal-e2e-1")
    page.get_by_label("User reference Optional").fill("user-7")
    page.get_by_role("button", name="Create withdrawal").click()
    try:
        page.wait_for_url("**/portal/withdrawal?name=*")
    except sync_api.TimeoutError:
        raise AssertionError(page.locator("#create-error").inner_text()) from None
    name = page.url.split("name=")[1].replace("%2F", "/")
    assert name.startswith("withdrawals/")
    page.locator('#details[data-state="STATE_COMPLETED"]').wait_for(timeout=90_000)
    done = stack.get(name)
    assert done.state == S.STATE_COMPLETED
    details = page.locator("#details").inner_text()
    assert done.transaction_hash in details
    assert str(done.block_number) in details and done.block_number > 0
    link = page.locator("#details a", has_text=done.transaction_hash)
    assert link.get_attribute("href") == EXPLORER.replace("{hash}", done.transaction_hash)
    assert link.get_attribute("rel") == "noopener noreferrer"
    audit = page.locator("#audit tbody")
    audit.get_by_text("COMPLETED").first.wait_for()
    assert audit.locator("tr").count() >= 5  # RECEIVED … COMPLETED
    page.get_by_role("status").filter(has_text="Final state: COMPLETED").wait_for()
    page.screenshot(path=str(SHOTS / "withdrawal.png"), full_page=True)

    # The history, filtered (state, token, amount range, recipient, user_ref, time range).
    _open(page, "/portal/withdrawals")
    page.get_by_label("State").select_option("COMPLETED")
    page.get_by_label("Token e.g. USDC").fill("usdc")
    page.get_by_label("Amount at least").fill("3")
    page.get_by_label("Amount at most").fill("4")
    page.get_by_label("Recipient address", exact=True).first.fill(recipient)
    page.get_by_label("User reference (user_ref)").fill("user-7")
    yesterday = dt.datetime.now() - dt.timedelta(days=1)
    page.get_by_label("Created from").fill(yesterday.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("status").filter(has_text="1 withdrawal matching").wait_for()
    rows = page.locator("#results tbody tr")
    assert rows.count() == 1 and name.split("/")[1] in rows.inner_text()
    page.screenshot(path=str(SHOTS / "withdrawals.png"), full_page=True)
    # A filter that matches nothing says so.
    page.get_by_label("Amount at least").fill("4")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("status").filter(has_text="No withdrawals match").wait_for()
    # Search by client reference.
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Search").fill("portal-e2e-1")
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_role("status").filter(has_text="1 withdrawal matching").wait_for()
    assert console.csp_violations() == []


def test_csv_upload_with_progress_and_the_report_download(
    partner_page: tuple[Any, Console], stack: Pipeline, tmp_path: Path
) -> None:
    page, console = partner_page
    _open(page, "/portal/batches")
    good = fresh_address()
    csv = (
        "recipient_address,amount,token,client_reference\r\n"
        f"{good},1.25,USDC,portal-batch-1\r\n"
        "0xnot-an-address,1,USDC,portal-batch-2\r\n"
    )
    page.get_by_label("CSV file").set_input_files(
        files=[{"name": "payouts.csv", "mimeType": "text/csv", "buffer": csv.encode()}]
    )
    page.get_by_label("If some rows are invalid").select_option("ACCEPT_VALID")
    page.get_by_role("button", name="Upload").click()
    details = page.locator("#batch-details")
    try:
        details.get_by_text("Rows with problems").wait_for()
    except sync_api.TimeoutError:
        raise AssertionError(page.locator("#error").inner_text()) from None
    assert "batches/" in page.locator("#status").inner_text()
    assert page.locator("#progress").get_attribute("value") == "100"
    assert "1.25 USDC" in details.inner_text()
    page.screenshot(path=str(SHOTS / "batches.png"), full_page=True)
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download report (CSV)").click()
    path = tmp_path / "report.csv"
    download_info.value.save_as(path)
    report = path.read_text()
    lines = report.strip().splitlines()
    assert lines[0].startswith("line,client_reference,withdrawal,state"), lines[0]
    assert len(lines) == 3
    assert lines[1].startswith("2,portal-batch-1,withdrawals/")
    assert lines[2].startswith("3,portal-batch-2,") and "INVALID_ADDRESS" in lines[2]
    # The same report in the recent batches table.
    page.locator("#batches tbody tr").first.wait_for()
    assert console.csp_violations() == []


def test_webhook_endpoints_are_listed_added_and_disabled(
    partner_page: tuple[Any, Console],
) -> None:
    page, console = partner_page
    _open(page, "/portal/webhooks")
    # A refused URL shows the API's error and the field it names.
    page.get_by_label("URL https, on a public host").fill("ftp://example.invalid/hook")
    page.get_by_role("button", name="Add endpoint").click()
    refused = page.locator("#create-error")
    refused.get_by_text("Reason: WEBHOOK_URL_REFUSED").wait_for()
    assert "url: " in refused.inner_text()  # the field as REST names it
    page.get_by_label("URL https, on a public host").fill("http://127.0.0.1:9/portal-hook")
    page.get_by_label("Event types").fill("withdrawal.completed")
    page.get_by_label("Description Optional").fill("portal test")
    page.get_by_role("button", name="Add endpoint").click()
    page.get_by_role("status").filter(has_text="signing secret").wait_for()
    row = page.locator("#endpoints tbody tr").filter(has_text="portal-hook")
    row.get_by_text("ENABLED").wait_for()
    page.screenshot(path=str(SHOTS / "webhooks.png"), full_page=True)
    row.get_by_role("button", name="Disable").click()
    row.get_by_text("DISABLED").wait_for()
    assert console.csp_violations() == []


# ------------------------------------------------------------------ operators


def test_an_operator_approves_a_held_withdrawal_and_uses_the_kill_switch(
    browser: Any, base: str, stack: Pipeline, operator: OperatorAccount
) -> None:
    recipient = fresh_address()
    # 20,000 USDC: the seeded `default` approval rule holds it for one approval.
    created = stack.gateway.stub.CreateWithdrawal(
        create_request(amount="20000", recipient=recipient), metadata=stack.partner.metadata
    )
    held = stack.wait_for_state(created.name, S.STATE_PENDING_APPROVAL, timeout=30)
    assert held.state_reason == "APPROVAL_REQUIRED"

    context = browser.new_context(base_url=base)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console = Console(page)
    _open(page, "/portal/admin")
    page.get_by_label("Operator credential").fill(operator.credential)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#who").filter(has_text="portal-approver").wait_for()
    cookie = _cookie(page, "portal_admin_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/portal/admin"
    assert operator.credential not in page.content()
    row = page.locator(f'#approvals tbody tr[data-withdrawal="{created.name}"]')
    row.wait_for()
    assert "20000 USDC" in row.inner_text()
    page.screenshot(path=str(SHOTS / "admin-approvals.png"), full_page=True)
    page.get_by_label("Reason for your decision").fill("checked in the portal test")
    row.get_by_role("button", name="Approve").click()
    page.get_by_role("status").filter(has_text=f"Approved {created.name}").wait_for()
    done = stack.wait_for_state(created.name, S.STATE_COMPLETED, timeout=90)
    assert stack.token_balance(recipient) == 20_000 * 10**6
    assert done.transaction_hash

    # The kill switch: pause a chain, see it, resume it.
    page.get_by_label("Chain Empty: every chain").fill("polygon")
    page.get_by_label("Reason", exact=True).fill("portal test pause")
    page.get_by_role("button", name="Pause payouts").click()
    paused = page.locator("#pauses tbody tr").filter(has_text="portal test pause")
    paused.wait_for()
    page.screenshot(path=str(SHOTS / "admin-kill-switch.png"), full_page=True)
    paused.get_by_role("button", name=re.compile("^Resume")).click()
    page.locator("#pauses tbody").get_by_text("Nothing is paused").wait_for()
    assert console.csp_violations() == []
    context.close()


def test_operator_roles_are_enforced_as_in_the_admin_api(
    base: str, stack: Pipeline, viewer: OperatorAccount
) -> None:
    with httpx.Client(base_url=base) as client:
        signed = client.post("/portal/admin/api/session", json={"credential": viewer.credential})
        assert signed.status_code == 200, signed.text
        session_id = signed.cookies["portal_admin_session"]
        csrf = signed.json()["csrfToken"]
        cookie = {"Cookie": f"portal_admin_session={session_id}"}
        listed = client.get("/portal/admin/api/v1/admin/pendingApprovals", headers=cookie)
        assert listed.status_code == 200
        refused = client.post(
            "/portal/admin/api/v1/admin/withdrawals/01jzzzzzzzzzzzzzzzzzzzzzzz:approve",
            json={},
            headers={**cookie, "X-CSRF-Token": csrf},
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["details"][0]["reason"] == "ROLE_REQUIRED"
        # A partner key is no operator credential, and the reverse (the API's own answers).
        wrong = client.post("/portal/admin/api/session", json={"credential": "awk_x"})
        assert wrong.status_code == 401
        again = client.post("/portal/api/session", json={"apiKey": viewer.credential})
        assert again.status_code == 401
        assert "operator credential" in again.json()["error"]["message"]


# ------------------------------------------------------------------ refusals


def test_a_state_changing_request_without_the_csrf_token_is_refused(
    partner_page: tuple[Any, Console], base: str, stack: Pipeline, key: Partner
) -> None:
    page, _ = partner_page
    session_id = _cookie(page, "portal_session")["value"]
    csrf = _csrf(base, session_id)
    cookie = {"Cookie": f"portal_session={session_id}"}
    body = {"recipientAddress": fresh_address(), "amount": "1", "token": "USDC"}
    before = len(_list(base, cookie))
    for extra in (
        {},  # no token
        {"X-CSRF-Token": "wrong"},
        {"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"},
    ):
        refused = httpx.post(
            f"{base}/portal/api/v1/withdrawals",
            json=body,
            headers={**cookie, "Idempotency-Key": f"csrf-{time.time_ns()}", **extra},
        )
        assert refused.status_code == 403, (extra, refused.text)
        error = refused.json()["error"]
        assert error["status"] == "PERMISSION_DENIED"
        assert error["details"][0]["reason"] == "CSRF_TOKEN_INVALID"
    # Sign-out needs the token too; and a cross-site form cannot sign anyone in.
    assert httpx.delete(f"{base}/portal/api/session", headers=cookie).status_code == 403
    form = httpx.post(f"{base}/portal/api/session", data={"apiKey": key.api_key})
    assert form.status_code == 403
    assert len(_list(base, cookie)) == before  # nothing was created
    # With the token it goes through, the API's answer exactly.
    made = httpx.post(
        f"{base}/portal/api/v1/withdrawals",
        json={**body, "amount": "0"},
        headers={**cookie, "Idempotency-Key": f"csrf-{time.time_ns()}", "X-CSRF-Token": csrf},
    )
    rest = httpx.post(
        f"{base}/v1/withdrawals",
        json={**body, "amount": "0"},
        headers={**stack.partner.headers, "Idempotency-Key": f"rest-{time.time_ns()}"},
    )
    assert made.status_code == rest.status_code == 400
    assert made.json()["error"]["details"] == rest.json()["error"]["details"]


def _list(base: str, cookie: dict[str, str]) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/portal/api/v1/withdrawals?pageSize=1000", headers=cookie)
    assert answer.status_code == 200, answer.text
    listed: list[dict[str, Any]] = answer.json()["withdrawals"]
    return listed


def test_another_partners_withdrawal_is_not_visible(
    partner_page: tuple[Any, Console], base: str, stack: Pipeline, other_partner: Partner
) -> None:
    page, _ = partner_page
    theirs = stack.gateway.stub.CreateWithdrawal(
        create_request(amount="1", recipient=fresh_address()), metadata=other_partner.metadata
    )
    cookie = {"Cookie": f"portal_session={_cookie(page, 'portal_session')['value']}"}
    answer = httpx.get(f"{base}/portal/api/{'v1/' + theirs.name}", headers=cookie)
    rest = httpx.get(f"{base}/v1/{theirs.name}", headers=stack.partner.headers)
    assert answer.status_code == rest.status_code == 404
    assert answer.json()["error"] == rest.json()["error"]
    assert theirs.name not in {w["name"] for w in _list(base, cookie)}
    trail = httpx.get(f"{base}/portal/api/v1/{theirs.name}/stateChanges", headers=cookie)
    assert trail.status_code == 404
    _open(page, f"/portal/withdrawal?name={theirs.name}")
    page.locator("#error").filter(has_text=rest.json()["error"]["message"]).wait_for()
    _open(page, "/portal/withdrawal?name=withdrawals/../webhookEndpoints/x")
    page.locator("#error").filter(has_text="does not name a withdrawal").wait_for()


def test_sign_out_and_an_expired_session_are_refused(
    browser: Any, base: str, stack: Pipeline, key: Partner
) -> None:
    context = browser.new_context(base_url=base)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    _open(page, "/portal/")
    # A wrong key gets the API's own answer, and no cookie.
    page.get_by_label("API key").fill("awk_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="The API key is not valid").wait_for()
    assert not context.cookies()
    assert page.get_by_label("API key").input_value() == ""
    page.get_by_label("API key").fill(key.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/withdrawals")
    first = _cookie(page, "portal_session")["value"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/portal/")
    assert not [c for c in context.cookies() if c["name"] == "portal_session"]
    client = redis.Redis.from_url(stack.gateway.server.settings.redis_url)
    assert client.exists(_session_key(stack, first)) == 0
    gone = httpx.get(
        f"{base}/portal/api/v1/withdrawals", headers={"Cookie": f"portal_session={first}"}
    )
    assert gone.status_code == 401 and gone.json()["error"]["status"] == "UNAUTHENTICATED"
    # A session past its TTL is refused the same way, and the pages send the browser back
    # to the sign-in.
    page.get_by_label("API key").fill(key.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/withdrawals")
    second = _cookie(page, "portal_session")["value"]
    client.pexpire(_session_key(stack, second), 1)
    time.sleep(0.05)
    expired = httpx.get(
        f"{base}/portal/api/v1/withdrawals", headers={"Cookie": f"portal_session={second}"}
    )
    assert expired.status_code == 401
    page.goto("/portal/batches")
    page.wait_for_url("**/portal/")
    # A partner session is no operator session.
    assert (
        httpx.get(
            f"{base}/portal/admin/api/v1/admin/pendingApprovals",
            headers={"Cookie": f"portal_admin_session={first}"},
        ).status_code
        == 401
    )
    context.close()


# ------------------------------------------------------------------ accessibility


def _axe(page: Any, label: str) -> None:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "async () => { const r = await axe.run(document); return r.violations.map("
        "v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length})); }"
    )
    serious = [v for v in result if v["impact"] in ("serious", "critical")]
    assert serious == [], f"{label}: {serious}"


def test_every_page_has_no_serious_accessibility_violation(
    browser: Any, base: str, stack: Pipeline, key: Partner, operator: OperatorAccount
) -> None:
    made = stack.gateway.stub.CreateWithdrawal(
        create_request(amount="2", recipient=fresh_address()), metadata=key.metadata
    )
    # bypass_csp only so that axe can be injected; the CSP itself is asserted above.
    context = browser.new_context(base_url=base, bypass_csp=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    _open(page, "/portal/")
    page.get_by_label("API key").wait_for()
    _axe(page, "sign-in")
    page.get_by_label("API key").fill(key.api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/withdrawals")
    pages = {
        "withdrawals": "/portal/withdrawals",
        "withdrawal": f"/portal/withdrawal?name={made.name}",
        "batches": "/portal/batches",
        "webhooks": "/portal/webhooks",
    }
    for label, path in pages.items():
        _open(page, path)
        page.wait_for_load_state("networkidle")
        _axe(page, label)
    _open(page, "/portal/admin/")
    page.get_by_label("Operator credential").wait_for()
    _axe(page, "operator sign-in")
    page.get_by_label("Operator credential").fill(operator.credential)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#who").filter(has_text="portal-approver").wait_for()
    page.wait_for_load_state("networkidle")
    _axe(page, "operators")
    context.close()


def test_revoking_the_key_ends_its_portal_sessions(base: str, stack: Pipeline) -> None:
    fresh = stack.gateway.add_partner(stack.partner.id, frozenset(Scope))
    with httpx.Client(base_url=base) as client:
        signed = client.post("/portal/api/session", json={"apiKey": fresh.api_key})
        assert signed.status_code == 200, signed.text
        cookie = {"Cookie": f"portal_session={signed.cookies['portal_session']}"}
        assert client.get("/portal/api/v1/withdrawals", headers=cookie).status_code == 200
        prefix = signed.json()["keyPrefix"]
        with stack.gateway.server.store.sessions.begin() as session:
            assert revoke_api_key(session, stack.partner.id, prefix) is not None
        refused = client.get("/portal/api/v1/withdrawals", headers=cookie)
        assert refused.status_code == 401
        assert "revoked" in refused.json()["error"]["message"]
