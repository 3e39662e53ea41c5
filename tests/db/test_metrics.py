"""The Prometheus endpoint (`withdrawal_shared.metrics`): state changes, holds by reason and the
fault counters appear at /metrics as they happen, scraped over HTTP like Prometheus does."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import Engine, select, update

from svc_processor.gauges import ProcessorGauges
from tests.support.requests import fresh_address
from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Chain, SafeTransaction, SafeTreasury, Token, Withdrawal
from withdrawal_shared.db.transitions import Step, move, move_many, utcnow
from withdrawal_shared.db.treasury_changes import LAST_ATTEMPT_PREFIX
from withdrawal_shared.ids import new_ulid
from withdrawal_shared.metrics import (
    QUEUE_DEAD_LETTERS,
    SAFE_TRANSACTION_OLDEST_OPEN_SECONDS,
    SAFE_TRANSACTIONS_OPEN,
    SAFE_TRANSACTIONS_RETRYING,
    GaugeValues,
    provider_label,
    serve_metrics,
)
from withdrawal_shared.states import State


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=2)
    yield eng
    eng.dispose()


def _scrape(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(aws_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+]+)$", line)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


def _value(samples: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in samples.items():
        if key.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


def test_state_changes_holds_and_dead_letters_are_exported(engine: Engine) -> None:
    port = serve_metrics(0)
    assert serve_metrics(0) == port  # one endpoint per process
    before = _scrape(port)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        ensure_partner(session, "metrics-test")
        token = session.scalars(select(Token)).first()
        assert token is not None
        session.flush()
        ids = [
            add_withdrawal(
                session,
                partner_id="metrics-test",
                token_id=token.id,
                recipient="0x" + f"{i + 77:040x}",
                amount=5_000,
                actor="metrics-test",
            )
            for i in range(3)
        ]
    with sessions.begin() as session:
        rows = list(session.scalars(select(Withdrawal).where(Withdrawal.id.in_(ids))))
        move_many(
            session,
            rows[:2],
            (Step(State.VALIDATED, "VALIDATED"), Step(State.QUEUED, "QUEUED")),
            actor="metrics-test",
        )
        move(session, rows[2], State.ON_HOLD, actor="metrics-test", reason="DEAD_LETTERED")
    QUEUE_DEAD_LETTERS.add(1)
    after = _scrape(port)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    transitions = "aws_withdrawal_transitions_total"
    assert delta(transitions, to_state="QUEUED", actor="metrics-test") == 2
    assert delta(transitions, to_state="VALIDATED", actor="metrics-test") == 2
    assert delta(transitions, to_state="ON_HOLD", actor="metrics-test") == 1
    assert delta("aws_withdrawal_holds_total", reason="DEAD_LETTERED") == 1
    assert delta("aws_queue_dead_letters_total") == 1


def test_provider_labels_never_carry_a_key() -> None:
    assert provider_label("https://user:pw@rpc.example:443/v3/SECRET?key=K") == "rpc.example:443"
    assert provider_label("http://127.0.0.1:8545") == "127.0.0.1:8545"


def test_open_safe_transactions_are_measured_by_purpose_and_state(engine: Engine) -> None:
    """The processor's gauges of its chain's open Safe transactions: counts, the oldest's age
    since creation and those being sent again; settled ones and other chains do not count."""
    sessions = make_sessionmaker(engine)
    now = utcnow()
    chain = f"gauges{secrets.token_hex(3)}"
    with sessions.begin() as session:
        session.add(
            Chain(
                name=chain,
                chain_id=10_000_000 + secrets.randbelow(10_000_000),
                native_symbol="ETH",
                native_decimals=18,
                confirmations=1,
                min_priority_fee_wei=1,
                max_fee_cap_wei=10**12,
                base_fee_headroom_pct=100,
                enabled=True,
            )
        )
        session.flush()
        session.add(
            SafeTreasury(chain=chain, address=fresh_address().lower(), threshold=2, create_time=now)
        )
        session.flush()

        def safe_tx(purpose: str, state: str, age: float, reason: str = "") -> SafeTransaction:
            return SafeTransaction(
                id=new_ulid(),
                chain=chain,
                purpose=purpose,
                kind="treasury.test",
                payload="{}",
                state=state,
                failure_reason=reason,
                create_time=now - dt.timedelta(seconds=age),
                update_time=now,
            )

        session.add_all(
            [
                safe_tx(
                    "TREASURY", "SIGNED", 7200, LAST_ATTEMPT_PREFIX + "execTransaction reverts"
                ),
                safe_tx("TREASURY", "SIGNED", 60),
                safe_tx("PAYOUT", "PENDING", 30),
                safe_tx("TREASURY", "EXECUTED", 9000),
                safe_tx("PAYOUT", "FAILED", 9000, "could not be built"),
            ]
        )
    gauges = ProcessorGauges(
        sessions,
        redis=None,  # type: ignore[arg-type]  # only refresh_queue reads Redis
        task_streams=[],
        dead_letters="dead",
        group="g",
        reads=None,  # type: ignore[arg-type]  # a chain without wallets or a vault: no reads
        chain=chain,
    )
    gauges.refresh_database_and_chain()

    def gauge(values: GaugeValues, **labels: str) -> float:
        return values.snapshot()[tuple(sorted(labels.items()))]

    assert gauge(SAFE_TRANSACTIONS_OPEN, purpose="TREASURY", state="SIGNED") == 2
    assert gauge(SAFE_TRANSACTIONS_OPEN, purpose="PAYOUT", state="PENDING") == 1
    assert gauge(SAFE_TRANSACTIONS_OPEN, purpose="TREASURY", state="EXECUTING") == 0
    assert gauge(SAFE_TRANSACTIONS_OPEN, purpose="PAYOUT", state="SIGNED") == 0
    oldest = gauge(SAFE_TRANSACTION_OLDEST_OPEN_SECONDS, purpose="TREASURY", state="SIGNED")
    assert 7190 <= oldest <= 7300
    assert gauge(SAFE_TRANSACTION_OLDEST_OPEN_SECONDS, purpose="PAYOUT", state="PENDING") >= 20
    assert gauge(SAFE_TRANSACTION_OLDEST_OPEN_SECONDS, purpose="PAYOUT", state="SIGNED") == 0
    assert gauge(SAFE_TRANSACTIONS_RETRYING, purpose="TREASURY") == 1
    assert gauge(SAFE_TRANSACTIONS_RETRYING, purpose="PAYOUT") == 0

    with sessions.begin() as session:  # executed: the gauges go back to 0
        session.execute(
            update(SafeTransaction)
            .where(SafeTransaction.chain == chain, SafeTransaction.state.in_(["SIGNED", "PENDING"]))
            .values(state="EXECUTED", failure_reason="")
        )
    gauges.refresh_database_and_chain()
    assert gauge(SAFE_TRANSACTIONS_OPEN, purpose="TREASURY", state="SIGNED") == 0
    assert gauge(SAFE_TRANSACTION_OLDEST_OPEN_SECONDS, purpose="TREASURY", state="SIGNED") == 0
    assert gauge(SAFE_TRANSACTIONS_RETRYING, purpose="TREASURY") == 0
