"""Hypothesis-generated requests against every gRPC method of a real gateway.

The services come from the gateway's server reflection (tests/fuzz/grpc_targets.py), so a
service added to the gateway is fuzzed as soon as it is served; each uses its credential from
`FuzzStack.credentials()`, or none (then every call must be refused). Requests are drawn from
the request descriptors (tests/fuzz/proto_strategies.py): valid-shaped and garbage fields,
unknown enum numbers, and raw bytes that may not parse. Every answer must be OK or an error
with google.rpc details carrying an ErrorInfo reason, and never INTERNAL, UNKNOWN, DATA_LOSS
or UNAVAILABLE. A server stream is read up to its first message or its error, then cancelled.

FUZZ_GRPC_EXAMPLES sets the requests per method (derandomized: a run is the same every
time); `make test` runs the default, `make fuzz` more.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, given, settings

from tests.fuzz.grpc_targets import Target, call, discover, problems, targets
from tests.fuzz.proto_strategies import Hints, request_bytes, resource_patterns
from tests.fuzz.stack import PUBLIC_SERVICE, FuzzStack

EXAMPLES = int(os.environ.get("FUZZ_GRPC_EXAMPLES", "30"))


def fuzz_targets(stack: FuzzStack) -> tuple[list[Target], Hints]:
    services = discover(stack.gateway.channel)
    hints = Hints(
        patterns=resource_patterns(
            [m.input_type for s in services for m in s.methods]
            + [m.output_type for s in services for m in s.methods]
        ),
        existing_names=stack.existing_names,
        request_ids=stack.request_ids,
    )
    return targets(services, stack.credentials()), hints


def test_reflection_lists_the_public_service(fuzz_stack: FuzzStack) -> None:
    found, hints = fuzz_targets(fuzz_stack)
    methods = {str(t) for t in found}
    assert f"{PUBLIC_SERVICE}.CreateWithdrawal" in methods
    assert f"{PUBLIC_SERVICE}.WatchWithdrawal" in methods
    assert "withdrawals/{withdrawal}" in hints.patterns


def _fuzz(stack: FuzzStack, target: Target, hints: Hints, codes: Counter[str]) -> None:
    @given(data=request_bytes(target.method.input_type, hints))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(data: bytes) -> None:
        outcome = call(stack.gateway.channel, target, data)
        codes[f"{target.method.name} {outcome.code.name}"] += 1
        wrong = problems(target, outcome)
        assert not wrong, f"{target} answered {outcome}: {'; '.join(wrong)}; sent {data!r}"

    run()


def test_grpc_api_fuzz(fuzz_stack: FuzzStack) -> None:
    found, hints = fuzz_targets(fuzz_stack)
    codes: Counter[str] = Counter()
    for target in found:
        _fuzz(fuzz_stack, target, hints, codes)
    print(sorted(codes.items()))
    assert sum(codes.values()) >= EXAMPLES * len(found)
