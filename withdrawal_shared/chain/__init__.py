"""Chain access for local development and tests: anvil as Polygon, and the project's contracts.

- `devstack.anvil`: `AnvilProcess` (a managed anvil on 127.0.0.1, chain id 137)
  and typed helpers over anvil's RPC extras (mine, automine, reorg, drop, snapshot, balances).
- `withdrawal_shared.chain.contracts`: compiled artifacts from contracts/build, deploying and
  driving the 6-decimal test stablecoin, funding accounts with POL.
- `withdrawal_shared.chain.types`: `BaseUnits`, `Nonce`, `PrivateKey`, ... (NewTypes).
"""
