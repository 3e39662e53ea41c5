"""The TypeScript SDK (`sdk/typescript`) against a real stack: anvil, MariaDB, Redis, a keystore
signer, the gateway, processor and monitor, and the webhook sender, all real (no mocks).

The SDK is compiled with its pinned `tsc`, then `node --test` runs its compiled tests and the
README's example with the gateway's URL and API keys in the environment; each node test is
reported here as a test of its own (parsed from node's TAP output), beside node's exit code and
summary. The SDK's `openapi.json` and generated types are checked against a fresh build from
the protos and against what the running gateway serves at /openapi.json.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from svc_gateway.rest.partner_openapi import gateway_openapi, partner_document, render
from svc_webhooks.server import WebhooksServer
from svc_webhooks.settings import WebhooksSettings
from tests.support.databases import mariadb_database
from tests.support.pipeline import Pipeline, running_pipeline
from tests.support.services import ThreadedServer
from tests.support.signers import keystore_signer
from withdrawal_shared.db.api_keys import create_api_key, ensure_partner
from withdrawal_shared.scopes import DEFAULT_SCOPES, Scope

REPO = Path(__file__).resolve().parents[2]
SDK = REPO / "sdk" / "typescript"
NODE_TIMEOUT_SECONDS = 300  # about 25 s on an idle machine

# Every test of the node suite, by its name: a test added to or removed from the suite must be
# named here too, so that pytest reports each one.
README_EXAMPLE = "the README example"
NODE_TESTS = (
    "create, then get answers the same withdrawal",
    "list iterates every page of a filter, newest first",
    "watch follows a withdrawal to COMPLETED, resuming after a dropped connection",
    "a watch stops when its signal aborts",
    "a retried create sends one Idempotency-Key and creates one withdrawal",
    "attempts cut by a tiny timeout reuse the key; maxAttempts bounds them",
    "bad fields are an InvalidArgumentError naming every field",
    "an unknown withdrawal is a NotFoundError",
    "a key reused for another body is an IdempotencyKeyReusedError with the original",
    "an unknown API key is an AuthenticationError",
    "cancelling after payout is a WithdrawalNotCancellableError; before, it cancels",
    "429 waits Retry-After and retries; with one attempt it is a RateLimitError",
    "a batch from a file path, with progress, and its report",
    "webhook deliveries verify; tampered ones do not",
    "502, 503 and 504 are retried with the same Idempotency-Key",
    "retries stop at maxAttempts; a 500 is not retried",
    "429 waits Retry-After; one longer than maxRetryAfterSeconds is raised at once",
    "a secret rotation is not repeated after a 503; after a 429 it is",
    "webhook signatures: every v1 signature of a rotation is accepted",
    "require() loads the CommonJS build with the same API",
    "VERSION is package.json's",
    README_EXAMPLE,
)


def _node() -> str:
    node = shutil.which("node")
    assert node, "node is not on PATH"
    return node


def _sdk_tool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`node <args>` in sdk/typescript, failing the test with its output when it fails."""
    assert (SDK / "node_modules" / ".installed").exists(), "run `make deps` (the SDK's tools)"
    done = subprocess.run(
        [_node(), *args],
        cwd=SDK,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"node {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def test_openapi_copy_and_generated_types_have_no_drift(tmp_path: Path) -> None:
    committed = (SDK / "openapi.json").read_text(encoding="utf-8")
    assert render(partner_document(gateway_openapi())) == committed, (
        "sdk/typescript/openapi.json drifted from the protos: run `make sdk-typescript-gen`"
    )
    fresh = tmp_path / "openapi.ts"
    _sdk_tool("node_modules/openapi-typescript/bin/cli.js", "openapi.json", "--output", str(fresh))
    assert fresh.read_text(encoding="utf-8") == (SDK / "src/generated/openapi.ts").read_text(
        encoding="utf-8"
    ), "sdk/typescript/src/generated/openapi.ts drifted: run `make sdk-typescript-gen`"


@dataclass
class Stack:
    pipeline: Pipeline
    api_key: str
    limited_api_key: str


@pytest.fixture(scope="module")
def webhook_key() -> Iterator[None]:
    """The webhook secrets' encryption key, shared by the gateway and the sender (both read
    WEBHOOKS_ENCRYPTION_KEY when they start)."""
    old = os.environ.get("WEBHOOKS_ENCRYPTION_KEY")
    os.environ["WEBHOOKS_ENCRYPTION_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    yield
    if old is None:
        os.environ.pop("WEBHOOKS_ENCRYPTION_KEY", None)
    else:
        os.environ["WEBHOOKS_ENCRYPTION_KEY"] = old


@pytest.fixture(scope="module")
def stack(
    webhook_key: None,
    redis_url: str,
    module_redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with (
        mariadb_database() as database,
        keystore_signer(database, tmp_path_factory.mktemp("keystore")) as signer,
        running_pipeline(
            database,
            redis_url,
            module_redis_prefix,
            signer,
            webhooks_allow_http_loopback=True,
        ) as pipeline,
    ):
        sender = ThreadedServer(
            WebhooksServer(
                WebhooksSettings(
                    database_url=database,
                    redis_url=redis_url,
                    redis_prefix=module_redis_prefix,
                    grpc_port=0,
                    poll_seconds=0.1,
                    retry_schedule=(0.5, 1.0, 2.0),
                    timeout_seconds=2.0,
                    shutdown_grace_seconds=1.0,
                    allow_http_loopback=True,
                )
            )
        )
        partner = f"sdk-ts-{secrets.token_hex(3)}"
        with pipeline.gateway.server.store.sessions.begin() as session:
            ensure_partner(session, partner)
            session.flush()
            api_key = create_api_key(session, partner, set(Scope)).token
            limited = create_api_key(
                session, partner, DEFAULT_SCOPES, rate_limit_per_second=1, rate_limit_burst=1
            ).token
        try:
            yield Stack(pipeline, api_key, limited)
        finally:
            sender.close()


def test_the_gateway_serves_what_the_sdk_was_generated_from(stack: Stack) -> None:
    url = f"{stack.pipeline.gateway.base_url}/openapi.json"
    with urllib.request.urlopen(url, timeout=10) as response:  # a loopback URL
        served = json.loads(response.read())
    assert render(partner_document(served)) == (SDK / "openapi.json").read_text(encoding="utf-8")


@dataclass
class NodeRun:
    returncode: int
    output: str
    results: dict[str, bool]
    summary: dict[str, int]
    seconds: float


SUITES = ("withdrawals", "errors", "transport")  # the node files' describe() blocks
_RESULT = re.compile(r"^\s*(not ok|ok) \d+ - (.*?)(?: # (SKIP|TODO).*)?$")
_SUMMARY = re.compile(r"^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$")


def parse_tap(output: str) -> tuple[dict[str, bool], dict[str, int]]:
    """Each test's (and suite's) name -> passed, and node's closing counts, from TAP."""
    results: dict[str, bool] = {}
    summary: dict[str, int] = {}
    for line in output.splitlines():
        if match := _RESULT.match(line):
            name = match.group(2).replace("\\#", "#")
            if name.endswith("/readme.test.js"):  # a file without test(): named by its path
                name = README_EXAMPLE
            results[name] = match.group(1) == "ok" and results.get(name, True)
        elif match := _SUMMARY.match(line):
            summary[match.group(1)] = int(match.group(2))
    return results, summary


@pytest.fixture(scope="module")
def node_run(stack: Stack) -> NodeRun:
    """Compile the SDK (ES module and CommonJS builds, as `npm run build` does) and its tests
    with the pinned tsc, then run them once on the stack."""
    _sdk_tool("node_modules/typescript/bin/tsc", "-p", "tsconfig.json")  # ES modules
    _sdk_tool("node_modules/typescript/bin/tsc", "-p", "tsconfig.cjs.json")  # CommonJS
    _sdk_tool("scripts/commonjs-package.mjs")
    _sdk_tool("scripts/readme-example.mjs")
    _sdk_tool("node_modules/typescript/bin/tsc", "-p", "tsconfig.test.json")
    files = sorted(str(p.relative_to(SDK)) for p in (SDK / "dist-test/test").glob("*.test.js"))
    files.append("dist-test/build/readme/readme.test.js")
    env = {
        **os.environ,
        "ASSETWITHDRAWAL_BASE_URL": stack.pipeline.gateway.base_url,
        "ASSETWITHDRAWAL_API_KEY": stack.api_key,
        "ASSETWITHDRAWAL_LIMITED_API_KEY": stack.limited_api_key,
        "NODE_OPTIONS": "",
    }
    started = time.monotonic()
    done = subprocess.run(
        [_node(), "--test", "--test-reporter=tap", *files],
        cwd=SDK,
        env=env,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_SECONDS,
        check=False,
    )
    results, summary = parse_tap(done.stdout)
    return NodeRun(
        done.returncode,
        done.stdout + done.stderr,
        results,
        summary,
        time.monotonic() - started,
    )


def test_node_suite_passes(node_run: NodeRun) -> None:
    print(node_run.output[-4000:])
    assert node_run.returncode == 0, node_run.output
    assert node_run.summary.get("fail") == 0, node_run.output
    assert node_run.summary.get("cancelled") == 0, node_run.output
    assert node_run.summary.get("pass", 0) >= len(NODE_TESTS), node_run.output
    ran = set(node_run.results) - set(SUITES)
    assert ran == set(NODE_TESTS), f"name each node test in NODE_TESTS: {ran ^ set(NODE_TESTS)}"


@pytest.mark.parametrize("name", NODE_TESTS)
def test_node(node_run: NodeRun, name: str) -> None:
    assert name in node_run.results, f"node ran no test named {name!r}:\n{node_run.output}"
    assert node_run.results[name], f"{name} failed:\n{node_run.output}"
