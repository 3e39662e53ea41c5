"""Batching partitions of processor replicas (`svc_processor.partitions`) on MariaDB and SQLite:
the id characters split exactly, each processor holds its own partition, takes over one whose
processor stopped (after the lease and a grace), and gives it back when that one returns."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from svc_processor.partitions import ALPHABET, Partitions, characters
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Withdrawal
from withdrawal_shared.ids import new_ulid

LEASE = 0.4


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def test_the_alphabet_is_the_ids_own() -> None:
    assert all(c in ALPHABET for _ in range(200) for c in new_ulid())
    assert sorted(ALPHABET) == sorted(set(ALPHABET)) and len(ALPHABET) == 32


@pytest.mark.parametrize("count", [1, 2, 3, 5, 32])
def test_the_characters_are_dealt_to_exactly_one_partition(count: int) -> None:
    dealt = [characters(p, count) for p in range(count)]
    assert "".join(sorted("".join(dealt))) == "".join(sorted(ALPHABET))
    sizes = [len(chars) for chars in dealt]
    assert max(sizes) - min(sizes) <= 1


def test_own_partitions_then_takeover_then_give_back(sessions: sessionmaker[Session]) -> None:
    chain = f"chain-{secrets.token_hex(3)}"

    def replica(index: int) -> Partitions:
        return Partitions(
            sessions, chain, 2, index, LEASE, holder=f"p{index}-{secrets.token_hex(2)}"
        )

    first, second = replica(0), replica(1)
    assert first.hold() == {0}
    assert second.hold() == {1}
    # The second stops renewing: after its lease and the grace, the first takes its partition.
    time.sleep(LEASE * 1.6)
    assert first.hold() == {0, 1}
    # A new second processor (restarted) gets its own back once the borrowed lease ran out.
    returning = replica(1)
    assert returning.hold() == frozenset()  # still borrowed
    time.sleep(LEASE * 1.1)
    # The first runs on and renews its own (as it does every third of a lease), so that a
    # slow machine's late wake-up cannot let its own lease run out too; the borrowed one it
    # lets run out unrenewed and stops batching.
    assert first.hold() == {0}
    assert returning.hold() == {1}
    assert first.hold() == {0}  # and the first no longer batches it


def test_the_condition_selects_the_partition_s_ids(
    sessions: sessionmaker[Session], db_url: str
) -> None:
    parts = Partitions(sessions, "polygon", 2, 0, LEASE, holder="h")
    condition = parts.condition(Withdrawal.id, frozenset({1}))
    assert condition is not None
    query = select(Withdrawal.id).where(condition)
    compiled = str(query.compile(compile_kwargs={"literal_binds": True}))
    assert "substr" in compiled.lower()
    with sessions() as session:  # runs on the backend (an empty or any result)
        ids = session.scalars(query.limit(50)).all()
    assert all(i[-1] in characters(1, 2) for i in ids)
    assert (
        Partitions(sessions, "polygon", 1, 0, LEASE, holder="h").condition(
            Withdrawal.id, frozenset({0})
        )
        is None
    )
