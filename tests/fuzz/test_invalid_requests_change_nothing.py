"""No invalid request changes any state.

A snapshot of everything the gateway can write (`tests/fuzz/state.py`: every row of every
table of the test database ordered by primary key, every Redis key under the test's prefix
with its type and value, a stream's length and last id) is taken before and after a run of
invalid requests, and the two must be equal. Two writes are made by design and allowed: an API
key's last-use time (`state.UNTRACKED_COLUMNS`), and the admin audit trail, which records every
refusal of an authenticated operator — so the only change allowed there is new rows appended
after the old ones, each with the outcome DENIED or FAILED. The stack runs no processor, so
nothing else writes.

Only invalid requests are sent, and each must be refused (REST 4xx, gRPC non-OK with
google.rpc details): schemathesis in negative mode for REST, and for gRPC requests that are
invalid by construction (`proto_strategies.invalid_requests`: a REQUIRED field cleared, a
reference matching no resource pattern or naming a resource that does not exist, a negative
page_size, a page_token the API never issued, an enum number the API does not define, or
bytes that do not parse). A request that is answered 2xx/OK means the generator made a valid
request, or the gateway accepts what it must not: the test fails and shows it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import load_all_checks
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import delete

from tests.fuzz.cases import without_framing_headers
from tests.fuzz.grpc_targets import Target, call, problems
from tests.fuzz.proto_strategies import Hints, InvalidRequest, invalid_requests
from tests.fuzz.stack import FuzzStack
from tests.fuzz.state import snapshot
from tests.fuzz.test_grpc_fuzz import fuzz_targets
from withdrawal_shared.db.admin_audit import DENIED, FAILED
from withdrawal_shared.db.models import AdminAudit, Partner
from withdrawal_shared.db.transitions import utcnow

GRPC_EXAMPLES = int(os.environ.get("FUZZ_GRPC_EXAMPLES", "30"))
REST_EXAMPLES = int(os.environ.get("FUZZ_REST_EXAMPLES", "10"))
SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


AUDIT_TABLES = ("admin_audit", "admin_audit_head")


def _refusals_appended(
    before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]
) -> set[str]:
    """The audit tables, when all that changed there is refusals appended to the trail (and
    its head row moved on); any other change to them is reported as a change."""
    old, new = before.get("admin_audit", []), after.get("admin_audit", [])
    if new[: len(old)] != old:
        return set()
    columns = [c.name for c in AdminAudit.__table__.columns]
    outcome = columns.index("outcome")
    if all(row[outcome] in (DENIED, FAILED) for row in new[len(old) :]):
        return set(AUDIT_TABLES)
    return set()


@contextlib.contextmanager
def unchanged(fuzz_stack: FuzzStack) -> Iterator[None]:
    """Asserts, after the block, that the database and Redis are as they were before it."""
    client = redis.Redis.from_url(fuzz_stack.redis_url)
    engine = fuzz_stack.gateway.server.store.engine
    before = snapshot(engine, client, fuzz_stack.redis_prefix)
    assert before["database"]["withdrawals"], "the stack has no withdrawals to protect"
    yield
    after = snapshot(engine, client, fuzz_stack.redis_prefix)
    client.close()
    audited = _refusals_appended(before["database"], after["database"])
    changed = [
        t
        for t in before["database"]
        if before["database"][t] != after["database"][t] and t not in audited
    ]
    keys = sorted(set(before["redis"]) ^ set(after["redis"])) + [
        k
        for k in before["redis"]
        if k in after["redis"] and before["redis"][k] != after["redis"][k]
    ]
    assert not changed and not keys, f"invalid requests changed tables {changed}, keys {keys}"


def _refused(stack: FuzzStack, target: Target, hints: Hints, sent: list[int]) -> None:
    @given(request=invalid_requests(target.method, hints))
    @settings(SETTINGS, max_examples=GRPC_EXAMPLES)
    def run(request: InvalidRequest) -> None:
        sent[0] += 1
        outcome = call(stack.gateway.channel, target, request.data)
        assert not outcome.ok, f"{target} accepted an invalid request: {request.describe()}"
        wrong = problems(target, outcome)
        assert not wrong, f"{target} answered {outcome}: {'; '.join(wrong)}; {request.describe()}"

    run()


def test_invalid_grpc_requests_change_nothing(fuzz_stack: FuzzStack) -> None:
    found, hints = fuzz_targets(fuzz_stack)
    sent = [0]
    with unchanged(fuzz_stack):
        for target in found:
            _refused(fuzz_stack, target, hints, sent)
    assert sent[0] >= GRPC_EXAMPLES * len(found)


def _mutates_authorization(case: schemathesis.Case) -> bool:
    """The negative part of the case is its Authorization header: send that header as made
    (the partner's key would make the case valid again)."""
    data = case.meta.phase.data if case.meta is not None else None
    return any(
        (m.parameter or "").lower() == "authorization" for m in getattr(data, "mutations", ())
    )


def test_invalid_rest_requests_change_nothing(fuzz_stack: FuzzStack) -> None:
    gateway, partner = fuzz_stack.gateway, fuzz_stack.partner
    schema = schemathesis.openapi.from_url(f"{gateway.base_url}/openapi.json")
    load_all_checks()
    sent = 0
    with unchanged(fuzz_stack):
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))
            @settings(SETTINGS, max_examples=REST_EXAMPLES)
            def run(case: schemathesis.Case) -> None:
                nonlocal sent
                sent += 1
                without_framing_headers(case)
                response = case.call_and_validate(
                    base_url=gateway.base_url,
                    headers={} if _mutates_authorization(case) else partner.headers,
                    excluded_checks=[positive_data_acceptance],
                    timeout=10,
                )
                if case.method.upper() == "GET" and response.status_code < 300:
                    # Negative data for a query string can serialise to a valid one (a null or
                    # an empty list becomes `filter=`, an empty filter): schemathesis's own
                    # negative-data check above accepts those, and a read changes nothing.
                    return
                assert 400 <= response.status_code < 500, (
                    f"{case.method} {case.formatted_path} answered {response.status_code} to "
                    f"negative data: {case.as_curl_command()}"
                )

            run()
    assert sent >= REST_EXAMPLES


def test_the_snapshot_sees_a_row_and_a_key(fuzz_stack: FuzzStack) -> None:
    """The comparison above can fail: one new row, or one new Redis key, changes it."""
    client = redis.Redis.from_url(fuzz_stack.redis_url)
    engine = fuzz_stack.gateway.server.store.engine
    before = snapshot(engine, client, fuzz_stack.redis_prefix)
    with fuzz_stack.gateway.server.store.sessions.begin() as session:
        session.add(
            Partner(id="snapshot-probe", display_name="probe", enabled=True, create_time=utcnow())
        )
    try:
        assert snapshot(engine, client, fuzz_stack.redis_prefix) != before
    finally:
        with fuzz_stack.gateway.server.store.sessions.begin() as session:
            session.execute(delete(Partner).where(Partner.id == "snapshot-probe"))
    assert snapshot(engine, client, fuzz_stack.redis_prefix) == before
    client.set(fuzz_stack.redis_prefix + "snapshot-probe", b"1")
    try:
        assert snapshot(engine, client, fuzz_stack.redis_prefix) != before
    finally:
        client.delete(fuzz_stack.redis_prefix + "snapshot-probe")
        client.close()
