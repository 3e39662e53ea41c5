"""Suite-wide fixtures: the suite's own databases (MariaDB and SQLite), a Redis key prefix of
its own on the machine's Redis (never flushed), and running services."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from svc_gateway.settings import GatewaySettings
from tests.support.databases import database
from tests.support.gateway import Partner, RunningGateway

REDIS_URL = "redis://127.0.0.1:6379/0"

LONG_FIRST = (
    "tests/crash/",
    "tests/bench/",
    "tests/chaos/",
    "tests/stack/",
    "tests/e2e/",
    "tests/sdk_python/",
    "tests/portal/",
    "tests/observe/",
    "tests/tracing/",
    "tests/replicas/",
    "tests/webhooks/",
    "tests/fuzz/",
    "tests/awctl/",
    "tests/sdk_typescript/",
)
"""Directories whose files take longest (real stacks waiting on blocks), in that order.

`make test` runs pytest-xdist with `--dist loadfile --no-loadscope-reorder`: each worker takes
whole files, in collection order. Collecting these first starts the long files at once, and
the many short ones fill the gaps at the end, instead of one long file running alone last."""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the files under LONG_FIRST to the front (a stable sort: the order of the files
    within a rank, and of the tests within a file, is pytest's own)."""

    def rank(item: pytest.Item) -> int:
        for index, prefix in enumerate(LONG_FIRST):
            if item.nodeid.startswith(prefix):
                return index
        return len(LONG_FIRST)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc}); start it and re-run")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to the test; its keys are deleted afterwards (nothing else is)."""
    prefix = f"awstest:{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["mariadb", "sqlite"], scope="module")
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with database(request.param, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="module")
def module_redis_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"awstest:{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def gateway(db_url: str, redis_url: str, module_redis_prefix: str) -> Iterator[RunningGateway]:
    settings = GatewaySettings(
        database_url=db_url,
        redis_url=redis_url,
        redis_prefix=module_redis_prefix,
        grpc_port=0,
        http_port=0,
        watch_poll_seconds=0.5,
        shutdown_grace_seconds=1.0,
    )
    running = RunningGateway(settings)
    yield running
    running.close()


@pytest.fixture(scope="module")
def partner_a(gateway: RunningGateway) -> Partner:
    return gateway.add_partner(f"partner-a-{secrets.token_hex(3)}")


@pytest.fixture(scope="module")
def partner_b(gateway: RunningGateway) -> Partner:
    return gateway.add_partner(f"partner-b-{secrets.token_hex(3)}")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
