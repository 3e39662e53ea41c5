"""schemathesis against the gateway's own /openapi.json: a real gateway on MariaDB and its own
redis-server, a real partner key. No 5xx, responses match the document, bad input is a 4xx
with a message and an ErrorInfo reason. FUZZ_REST_EXAMPLES sets the requests per operation
and mode (positive, negative); Hypothesis is derandomized, so a run is the same every time.
`positive_data_acceptance` is left out: a schema-valid body can still be refused by rules
the document cannot state (an unknown token, an amount above the maximum, an EIP-55 checksum).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import load_all_checks
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.fuzz.cases import without_framing_headers
from tests.fuzz.stack import FuzzStack

EXAMPLES = int(os.environ.get("FUZZ_REST_EXAMPLES", "10"))


def _error_names_the_problem(status: int, body: Any) -> None:
    error = body["error"]
    assert error["message"], body
    reasons = [d.get("reason") for d in error["details"] if d["@type"].endswith("ErrorInfo")]
    assert reasons and reasons[0], body


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_rest_api_fuzz(fuzz_stack: FuzzStack, mode: str) -> None:
    gateway, partner = fuzz_stack.gateway, fuzz_stack.partner
    schema = schemathesis.openapi.from_url(f"{gateway.base_url}/openapi.json")
    load_all_checks()
    generation = (
        schemathesis.GenerationMode.POSITIVE
        if mode == "positive"
        else schemathesis.GenerationMode.NEGATIVE
    )
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=generation))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            without_framing_headers(case)
            response = case.call_and_validate(
                base_url=gateway.base_url,
                headers=partner.headers,
                excluded_checks=[positive_data_acceptance],
                timeout=10,
            )
            assert response.status_code < 500
            if 400 <= response.status_code < 500:
                _error_names_the_problem(response.status_code, response.json())

        run()
    assert sent >= EXAMPLES  # every operation ran at least once; usually EXAMPLES each
