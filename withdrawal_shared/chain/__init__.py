"""Chain access for the services: contracts, calldata, fees and RPC.

- `withdrawal_shared.chain.contracts`: compiled artifacts from contracts/build and read calls on
  the token.
- `withdrawal_shared.chain.payout`: the PayoutVault's calldata (payouts and the owner's calls),
  events and read calls.
- `withdrawal_shared.chain.safe_tx`: treasury Safe transactions (EIP-712 hash, owner
  signatures, `execTransaction` calldata); `safe`: read calls on a deployed Safe and its
  `ExecutionSuccess` / `ExecutionFailure` logs.
- `withdrawal_shared.chain.erc20`: ERC-20 calldata; `fees`: EIP-1559 fee pricing; `rpc_pool`:
  JSON-RPC over several providers with failover.
- `withdrawal_shared.chain.types`: `BaseUnits`, `Nonce`, `PrivateKey`, ... (NewTypes).

Anvil control and signing with local keys (deploying, minting, funding) are development tooling:
`devstack`.
"""
