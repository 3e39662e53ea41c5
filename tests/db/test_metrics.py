"""The Prometheus endpoint (`withdrawal_shared.metrics`): state changes, holds by reason and the
fault counters appear at /metrics as they happen, scraped over HTTP like Prometheus does."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import Engine, select

from tests.support.withdrawals import add_withdrawal
from withdrawal_shared.db.api_keys import ensure_partner
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import Token, Withdrawal
from withdrawal_shared.db.transitions import Step, move, move_many
from withdrawal_shared.metrics import QUEUE_DEAD_LETTERS, provider_label, serve_metrics
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
