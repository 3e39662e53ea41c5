"""Tiers and limits through the real gateway, on MariaDB and SQLite: the per-withdrawal,
24-hour amount and count limits, a cancel freeing its amount, the default tier, VIP priority,
repeats, many concurrent creates across two gateway processes never exceeding a limit nor
refusing what fits, and the limit shards: a transaction on one shard not waiting for another's,
and one that a shard cannot take holding every shard, waiting for the others in flight."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, TimeoutError
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from assetwithdrawal.withdrawal.v1 import withdrawal_pb2, withdrawal_pb2_grpc
from bench.api_load import GatewayProcess, issue_key
from svc_gateway.limits import (
    GUARD,
    LOCK_BUCKET,
    SHARDS,
    ItemLimits,
    Scope,
    ShardPool,
    Usage,
    add_usage,
    bucket_of,
    far_from_limits,
    lock_scopes,
    near_limit,
    shard_room,
    short_scopes,
    window_start,
)
from tests.support.databases import mariadb_database
from tests.support.gateway import Partner, RunningGateway
from tests.support.requests import create_request, rich_error
from withdrawal_shared.db import tier_admin
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.limit_policy import TierLimits
from withdrawal_shared.db.models import LimitUsage, Withdrawal
from withdrawal_shared.db.transitions import utcnow

STANDARD = withdrawal_pb2.PRIORITY_STANDARD


@pytest.fixture(scope="module", autouse=True)
def standard_limits(gateway: RunningGateway) -> Iterator[None]:
    with gateway.server.store.sessions.begin() as session:
        change = tier_admin.set_tier_limits(
            session,
            "standard",
            "USDC",
            per_withdrawal_max="100",
            daily_amount="250",
            daily_count=3,
        )
    assert change.before is None
    assert change.after == tier_admin.TokenLimits("polygon", "USDC", "100", "250", 3)
    gateway.server.store.limits.invalidate()
    yield
    with gateway.server.store.sessions.begin() as session:
        tier_admin.set_tier_limits(
            session,
            "standard",
            "USDC",
            per_withdrawal_max=None,
            daily_amount=None,
            daily_count=None,
        )
    gateway.server.store.limits.invalidate()


@pytest.fixture
def partner(gateway: RunningGateway) -> Partner:
    return gateway.add_partner(f"limits-{secrets.token_hex(3)}")


def _create(
    gateway: RunningGateway,
    partner: Partner,
    amount: str,
    user_ref: str = "",
    priority: int = STANDARD,
    request_id: str | None = None,
    recipient: str | None = None,
) -> withdrawal_pb2.Withdrawal:
    request = create_request(
        amount=amount, priority=priority, request_id=request_id, recipient=recipient
    )
    request.withdrawal.user_ref = user_ref
    result: withdrawal_pb2.Withdrawal = gateway.stub.CreateWithdrawal(
        request, metadata=partner.metadata, timeout=10
    )
    return result


def _refused(
    gateway: RunningGateway, partner: Partner, amount: str, user_ref: str
) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        _create(gateway, partner, amount, user_ref)
    code, info, _ = rich_error(caught.value)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "LIMIT_EXCEEDED"
    return dict(info.metadata)


def _stored(gateway: RunningGateway, partner: Partner) -> int:
    with gateway.server.store.sessions() as session:
        return session.scalar(select(func.count()).where(Withdrawal.partner_id == partner.id)) or 0


def test_per_withdrawal_limit_stores_nothing(gateway: RunningGateway, partner: Partner) -> None:
    created = _create(gateway, partner, "100", "alice")
    assert created.user_ref == "alice"
    metadata = _refused(gateway, partner, "100.000001", "alice")
    assert metadata == {
        "limit": "PER_WITHDRAWAL",
        "limit_value": "100",
        "window": "withdrawal",
        "token": "USDC",
        "tier": "standard",
    }
    assert _stored(gateway, partner) == 1


def test_daily_amount_and_cancel_frees_it(gateway: RunningGateway, partner: Partner) -> None:
    first = _create(gateway, partner, "100", "bob")
    _create(gateway, partner, "100", "bob")
    metadata = _refused(gateway, partner, "51", "bob")
    assert metadata["limit"] == "USER_DAILY_AMOUNT" and metadata["limit_value"] == "250"
    assert metadata["window"] == "24h"
    _create(gateway, partner, "50", "bob")  # exactly at the limit
    gateway.stub.CancelWithdrawal(
        withdrawal_pb2.CancelWithdrawalRequest(name=first.name), metadata=partner.metadata
    )
    _create(gateway, partner, "1", "carol")  # another user: its own usage
    freed = _create(gateway, partner, "99", "bob")  # the cancelled 100 no longer counts
    assert freed.state == withdrawal_pb2.STATE_RECEIVED


def test_daily_count(gateway: RunningGateway, partner: Partner) -> None:
    for _ in range(3):
        _create(gateway, partner, "1", "dave")
    metadata = _refused(gateway, partner, "1", "dave")
    assert metadata["limit"] == "USER_DAILY_COUNT" and metadata["limit_value"] == "3"
    _create(gateway, partner, "1")  # without a user: only the partner's limit applies


def test_unknown_user_is_in_the_default_tier_and_vip_gets_priority(
    gateway: RunningGateway, partner: Partner
) -> None:
    unknown = _create(gateway, partner, "1", "erin", priority=withdrawal_pb2.PRIORITY_UNSPECIFIED)
    assert unknown.priority == withdrawal_pb2.PRIORITY_STANDARD
    assert _refused(gateway, partner, "101", "erin")["tier"] == "standard"
    with gateway.server.store.sessions.begin() as session:
        change = tier_admin.assign_user_tier(session, partner.id, "erin", "vip")
    assert (change.before, change.after) == (None, "vip")
    vip = _create(gateway, partner, "1000", "erin", priority=withdrawal_pb2.PRIORITY_UNSPECIFIED)
    assert vip.priority == withdrawal_pb2.PRIORITY_PRIORITY  # and vip has no limits
    explicit = _create(gateway, partner, "1", "erin", priority=withdrawal_pb2.PRIORITY_STANDARD)
    assert explicit.priority == withdrawal_pb2.PRIORITY_STANDARD


def test_partner_daily_limit_and_repeats(gateway: RunningGateway, partner: Partner) -> None:
    with gateway.server.store.sessions.begin() as session:
        change = tier_admin.set_partner_daily_limit(session, partner.id, "USDC", "150")
    assert (change.before, change.after) == (None, "150")
    gateway.server.store.limits.invalidate()
    key, to = secrets.token_hex(8), "0x" + secrets.token_hex(20)
    original = _create(gateway, partner, "100", "frank", request_id=key, recipient=to)
    metadata = _refused(gateway, partner, "60", "grace")
    assert metadata["limit"] == "PARTNER_DAILY_AMOUNT" and "tier" not in metadata
    # A repeat of the stored request is answered with it, although it would not fit now.
    again = _create(gateway, partner, "100", "frank", request_id=key, recipient=to)
    assert again.name == original.name
    with pytest.raises(grpc.RpcError) as caught:  # user_ref is part of the body compared
        _create(gateway, partner, "100", "grace", request_id=key, recipient=to)
    assert rich_error(caught.value)[1].reason == "IDEMPOTENCY_KEY_REUSED"
    _create(gateway, partner, "50")  # exactly the partner's limit


def test_user_ref_is_validated(gateway: RunningGateway, partner: Partner) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _create(gateway, partner, "1", "bad user")
    code, _info, fields = rich_error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["withdrawal.user_ref"]


def _race(
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    *,
    user_daily: str,
    partner_daily: str,
    creates: int = 60,
) -> tuple[list[str], dict[str, int], dict[int, int]]:
    """`creates` creates of 1 USDC for two users from 12 threads, spread over two gateway
    processes (GATEWAY_WORKERS=2), under these standard-tier and partner 24-hour limits.
    Returns each create's outcome ("OK" or the error reason), the amount stored per user and
    the partner's counters per shard (base units)."""
    with mariadb_database() as database_url:
        api_key = issue_key(database_url, "racing")
        engine = make_engine(database_url, pool_size=1)
        sessions = make_sessionmaker(engine)
        with sessions.begin() as session:
            tier_admin.set_tier_limits(
                session,
                "standard",
                "USDC",
                per_withdrawal_max=None,
                daily_amount=user_daily,
                daily_count=None,
            )
            tier_admin.set_partner_daily_limit(session, "racing", "USDC", partner_daily)
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": redis_prefix,
            "GATEWAY_WORKERS": "2",
        }
        gateway = GatewayProcess(env, tmp_path / "gateway.log", api_key, redis_url)
        try:
            gateway.wait_serving()
            deadline = time.monotonic() + 60
            while gateway.log_path.read_text().count('"msg":"gateway serving"') < 2:
                assert time.monotonic() < deadline, gateway.log_tail()
                time.sleep(0.2)
            metadata = (("authorization", f"Bearer {api_key}"),)

            def one(n: int) -> str:
                with grpc.insecure_channel(
                    gateway.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
                ) as channel:
                    request = create_request(amount="1")
                    request.withdrawal.user_ref = f"user-{n % 2}"
                    try:
                        withdrawal_pb2_grpc.WithdrawalServiceStub(channel).CreateWithdrawal(
                            request, metadata=metadata, timeout=30
                        )
                    except grpc.RpcError as exc:
                        return rich_error(exc)[1].reason
                    return "OK"

            with ThreadPoolExecutor(12) as pool:
                outcomes = list(pool.map(one, range(creates)))
        finally:
            assert gateway.stop() == 0
        with sessions() as session:
            per_user = {
                user: int(total)
                for user, total in session.execute(
                    select(Withdrawal.user_ref, func.sum(Withdrawal.amount)).group_by(
                        Withdrawal.user_ref
                    )
                )
            }
            per_shard = {
                shard: int(total)
                for shard, total in session.execute(
                    select(LimitUsage.shard, func.sum(LimitUsage.amount))
                    .where(LimitUsage.user_ref == "", LimitUsage.bucket != LOCK_BUCKET)
                    .group_by(LimitUsage.shard)
                )
            }
        engine.dispose()
        return outcomes, per_user, per_shard


def test_concurrent_creates_on_two_workers_never_exceed_the_limits(
    tmp_path: Path, redis_url: str, redis_prefix: str, db_url: str
) -> None:
    """60 creates of 1 USDC for two users: the tier allows 25 per user, the partner 40."""
    if not db_url.startswith("mysql"):
        pytest.skip("the race between processes is run on MariaDB")
    outcomes, per_user, per_shard = _race(
        tmp_path, redis_url, redis_prefix, user_daily="25", partner_daily="40"
    )
    assert outcomes.count("OK") == 40, outcomes
    assert outcomes.count("LIMIT_EXCEEDED") == 20, outcomes
    assert sum(per_user.values()) == 40_000_000
    assert all(v <= 25_000_000 for v in per_user.values()), per_user
    assert sum(per_shard.values()) == 40_000_000, per_shard


def test_concurrent_creates_that_fit_are_all_accepted(
    tmp_path: Path, redis_url: str, redis_prefix: str, db_url: str
) -> None:
    """60 creates of 1 USDC for two users with limits they reach exactly (30 each, 60 in all):
    none is refused, although past 13/16 of each limit the transactions leave the one-shard
    rule for every shard; the partner's counters are spread over several shards."""
    if not db_url.startswith("mysql"):
        pytest.skip("the race between processes is run on MariaDB")
    outcomes, per_user, per_shard = _race(
        tmp_path, redis_url, redis_prefix, user_daily="30", partner_daily="60"
    )
    assert outcomes == ["OK"] * 60, outcomes
    assert per_user == {"user-0": 30_000_000, "user-1": 30_000_000}
    assert sum(per_shard.values()) == 60_000_000, per_shard
    assert len(per_shard) >= 2, per_shard  # concurrent transactions held different shards


def test_the_shard_rule() -> None:
    """On one shard a transaction adds at most limit // 16 (4 shards) and leaves 3 such shares
    of room for the others in flight; else the scope must be taken whole."""
    assert SHARDS == 4
    partner = Scope("p", "", 1)
    user = Scope("p", "u", 1)

    def item(amount: int, user_ref: str = "", tier: TierLimits | None = None) -> ItemLimits:
        return ItemLimits("p", user_ref, 1, amount, "t", tier or TierLimits(), 160)

    def short(items: list[ItemLimits], used: int = 0, refused: tuple[int, ...] = ()) -> set[Scope]:
        usage = {partner: Usage(used, 0), user: Usage(0, 0)}
        return short_scopes(list(enumerate(items)), refused, usage)

    assert short([item(10)]) == set()  # a share of 160 is 10
    assert short([item(6), item(4)]) == set()
    assert short([item(11)]) == {partner}
    assert short([item(6), item(5)]) == {partner}
    assert short([item(6), item(5)], refused=(1,)) == set()  # a refused item adds nothing
    assert short([item(1)], used=129) == set()  # 129 + 1 + 3 * 10 = 160
    assert short([item(1)], used=130) == {partner}
    counted = TierLimits(daily_count=3)  # a share of 3 is 0: every count takes the user whole
    assert short([item(1, "u", counted)]) == {user}
    assert short([item(1, "u", TierLimits(daily_amount=1600))]) == set()
    uncounted = ItemLimits("p", "", 1, 10**30, "", TierLimits(), None)
    assert short_scopes([(0, uncounted)], (), {}) == set()  # no 24-hour limit applies


def test_the_guard_allows_exactly_what_the_shard_rule_allows() -> None:
    """`far_from_limits` plans one round trip only where some usage would pass the shard
    rule, and its room is the largest usage `short_scopes` lets through."""
    partner = Scope("p", "", 1)
    for limit in (160, 161, 1_000, 10**21):
        share = limit // 16
        for more in (1, share - 1, share, share + 1):
            room = shard_room(more, limit)
            if more > share:
                assert room is None
                continue
            assert room is not None
            item = ItemLimits("p", "", 1, more, "", TierLimits(), limit)
            for used in (room - 1, room, room + 1):
                short = short_scopes([(0, item)], (), {partner: Usage(used, 0)})
                assert (short == set()) == (used <= room), (limit, more, used)
    big = ItemLimits("p", "", 1, 11, "", TierLimits(), 160)  # above a share of 160
    assert far_from_limits([(0, big)], 0) is None
    counted = ItemLimits("p", "u", 1, 1, "t", TierLimits(daily_count=3), None)
    assert far_from_limits([(0, counted)], 0) is None  # a share of 3 is 0
    over = ItemLimits("p", "u", 1, 5, "t", TierLimits(per_withdrawal_max=4), 160)
    fits = ItemLimits("p", "u", 1, 4, "t", TierLimits(per_withdrawal_max=4), 160)
    plan = far_from_limits([(0, over), (1, fits)], 0)
    assert plan is not None and set(plan.refused) == {0}  # refused without any usage read
    assert plan.params[:3] == ["p", 1, 160 - 4 - 3 * 10]  # the partner's room after item 1


def test_the_guard_signals_exactly_past_the_room_and_counts_releases(
    gateway: RunningGateway, partner: Partner, db_url: str
) -> None:
    """On MariaDB the guard passes at a usage of exactly its room and SIGNALs one base unit
    above it, a cancelled withdrawal's amount not counting; the gateway then decides on a
    read of its own (a create that fits is still accepted)."""
    if not db_url.startswith("mysql"):
        pytest.skip("the guard is a MariaDB compound statement")
    scope = _partner_scope(gateway, partner, "160")
    units = 1_000_000
    cancelled = _create(gateway, partner, "5")
    gateway.stub.CancelWithdrawal(
        withdrawal_pb2.CancelWithdrawalRequest(name=cancelled.name), metadata=partner.metadata
    )
    item = ItemLimits(partner.id, "", scope.token_id, units, "", TierLimits(), 160 * units)
    plan = far_from_limits([(0, item)], window_start(utcnow()))
    assert plan is not None
    room = 160 * units - units - 3 * 10 * units

    def count(amount: int) -> None:
        """`amount` more in the partner's counters, committed."""
        more = ItemLimits(partner.id, "", scope.token_id, amount, "", TierLimits(), None)
        with gateway.server.store.engine.begin() as connection:
            add_usage(connection, [(more, bucket_of(utcnow()))], 1)

    engine = make_engine(db_url, pool_size=1, multi_statements=True)
    errors = engine.dialect.loaded_dbapi.Error

    def guard_passes() -> bool:
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(f"{cursor.mogrify(plan.read, plan.params)};{GUARD}")
            while cursor.nextset():
                pass
            return True
        except errors as exc:
            assert near_limit(exc), exc
            return False
        finally:
            connection.rollback()
            connection.close()

    try:
        count(room)  # and the 5 counted and released: a usage of `room`
        assert guard_passes()
        count(1)
        assert not guard_passes()
    finally:
        engine.dispose()
    # Past the room the shard rule fails; taken whole, the plain check lets it through.
    assert _create(gateway, partner, "1").state == withdrawal_pb2.STATE_RECEIVED


def test_the_shard_pool_gives_concurrent_holders_different_shards() -> None:
    pool = ShardPool(first=2)  # the second worker, two group commits in flight each
    with pool.shard() as a, pool.shard() as b:
        assert (a, b) == (2, 3)
        with pool.shard() as c, pool.shard() as d:
            assert sorted([a, b, c, d]) == list(range(SHARDS))
            with pool.shard() as e:  # every shard taken: one of them, waiting for its holder
                assert 0 <= e < SHARDS
    with pool.shard() as again:
        assert again == 2


def _partner_scope(gateway: RunningGateway, partner: Partner, daily: str) -> Scope:
    with gateway.server.store.sessions.begin() as session:
        tier_admin.set_partner_daily_limit(session, partner.id, "USDC", daily)
    gateway.server.store.limits.invalidate()
    usdc = next(
        t for t in gateway.server.store.reference.get().tokens_by_id.values() if t.symbol == "USDC"
    )
    return Scope(partner.id, "", usdc.id)


def test_a_transaction_on_another_shard_does_not_wait(
    gateway: RunningGateway, partner: Partner, db_url: str
) -> None:
    """While another process's transaction holds the partner's shard 3 and has counted on it
    (not yet committed), creates go through on a shard of their own: one lock row for all
    would make them wait for it, and so would a locking read of its counters (a subquery in
    the guard's compound statement would be one)."""
    if not db_url.startswith("mysql"):
        pytest.skip("SQLite serialises writers")
    scope = _partner_scope(gateway, partner, "1000")
    _create(gateway, partner, "1")  # the scope's rows exist
    in_flight = ItemLimits(partner.id, "", scope.token_id, 1_000_000, "", TierLimits(), None)
    with ThreadPoolExecutor(1) as pool:
        with gateway.server.store.engine.connect() as other, other.begin():
            lock_scopes(other, [scope], SHARDS - 1)
            add_usage(other, [(in_flight, bucket_of(utcnow()))], SHARDS - 1)
            created = pool.submit(_create, gateway, partner, "2").result(timeout=5)
        assert created.state == withdrawal_pb2.STATE_RECEIVED


def test_a_scope_taken_whole_waits_for_the_shards_in_flight(
    gateway: RunningGateway, partner: Partner, db_url: str
) -> None:
    """Another process's transaction on shard 3 has counted 10 of a 160 limit and not yet
    committed. A create of 151 is more than one shard's share: it takes every shard, waits
    for that transaction, then counts its 10 and is refused; 150 fits exactly and is accepted,
    though no single shard could take it."""
    if not db_url.startswith("mysql"):
        pytest.skip("SQLite serialises writers")
    scope = _partner_scope(gateway, partner, "160")
    units = 1_000_000
    in_flight = ItemLimits(
        partner.id, "", scope.token_id, 10 * units, "", TierLimits(), 160 * units
    )
    with ThreadPoolExecutor(1) as pool:
        with gateway.server.store.engine.connect() as other, other.begin():
            lock_scopes(other, [scope], SHARDS - 1)
            add_usage(other, [(in_flight, bucket_of(utcnow()))], SHARDS - 1)
            refused = pool.submit(_refused, gateway, partner, "151", "")
            with pytest.raises(TimeoutError):
                refused.result(timeout=1.0)  # waiting for shard 3
        assert refused.result(timeout=10)["limit"] == "PARTNER_DAILY_AMOUNT"
    assert _stored(gateway, partner) == 0
    _create(gateway, partner, "150")
    _refused(gateway, partner, "0.000001", "")
    with gateway.server.store.sessions() as session:
        counted = session.scalar(
            select(func.sum(LimitUsage.amount)).where(
                LimitUsage.partner_id == partner.id, LimitUsage.bucket != LOCK_BUCKET
            )
        )
        lock_rows = session.scalars(
            select(LimitUsage.shard).where(
                LimitUsage.partner_id == partner.id, LimitUsage.bucket == LOCK_BUCKET
            )
        ).all()
    assert int(counted or 0) == 160 * units
    assert sorted(lock_rows) == list(range(SHARDS))


def test_counters_older_than_the_window_are_pruned(gateway: RunningGateway) -> None:
    now = utcnow()
    inside = window_start(now)  # the oldest bucket a window still reads
    scope = {"partner_id": "prune-test", "user_ref": "u", "token_id": 1}
    buckets = [LOCK_BUCKET, inside - 500, inside - 2, inside - 1, inside, bucket_of(now)]
    with gateway.server.store.sessions.begin() as session:
        for bucket in buckets:
            session.add(LimitUsage(**scope, bucket=bucket, amount=5, count=1))
    assert gateway.server.store.prune_limit_usage() >= 2
    with gateway.server.store.sessions() as session:
        kept = session.scalars(
            select(LimitUsage.bucket).where(LimitUsage.partner_id == "prune-test")
        ).all()
    # the lock row stays; one minute to spare before the window's first bucket
    assert sorted(kept) == [LOCK_BUCKET, inside - 1, inside, bucket_of(now)]
