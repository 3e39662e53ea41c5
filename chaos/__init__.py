"""The chaos harness: the whole system under faults, judged from the chain alone.

`make chaos` (full run) and `make chaos-short` (the variant inside `make test`, through
`tests/chaos/test_chaos_short.py`) start a `HarnessStack` of their own (own Redis server, own
MariaDB database, anvil, the four services under the supervisor, and fault-injecting JSON-RPC
proxies in front of anvil), submit withdrawals to unique fresh recipients, and meanwhile inject
faults at random moments (`faults.py`): SIGKILL of any service, chain reorganisations shallower
than the confirmation depth, mining paused, Redis flushed or restarted empty, and windows of RPC
faults (delays, timeouts after forwarding, HTTP 5xx, connection resets, dropped transactions).
Then the faults stop, the run waits for quiescence, and `exactly_once.check_exactly_once` judges
from the token's Transfer logs that every withdrawal was paid exactly once for exactly its
amount, and from the database that every withdrawal is terminal and agrees with the chain.
"""
