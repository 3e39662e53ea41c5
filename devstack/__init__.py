"""`make up`: the whole system on one machine, in the foreground.

`python -m devstack` is what `make up` runs (after `make deps`).

What it runs, in order:

1. **anvil** as Polygon (chain id 137, gas limit 60M) on 127.0.0.1:8545 (`STACK_ANVIL_PORT`),
   logging to var/logs/anvil.log. It mines each transaction of the bootstrap (step 5) at once,
   then a block every 2 s.
2. **Redis**: `REDIS_URL` when set; else the one on 127.0.0.1:6379 if it answers PING; else its
   own `redis-server` (from PATH; Debian package `redis-server`) on a free port, keeping nothing
   on disk, stopped with the stack. Keys are prefixed with `REDIS_PREFIX` (default `aws:`).
3. **Database**: `DATABASE_URL` when set (e.g. MariaDB), which is only migrated, never dropped.
   Otherwise the SQLite file var/withdrawals.sqlite3 — **deleted and recreated on every run**:
   each `make up` starts a fresh local chain, and rows pointing at the previous chain's
   contracts, nonces and transactions would be wrong on the new one. Set `DATABASE_URL` to keep
   data between runs (it then has to be cleaned by hand when the old rows get in the way).
   Migrations run in both cases.
4. **svc_signer** (`python -m svc_signer`, keystore backend holding `STACK_HOT_WALLETS`
   (default 2) hot wallets, each with its own key and nonce sequence: var/signer/keystore.json,
   keystore-1.json, ... and one password file, created on first start and kept between runs);
   once its gRPC health reports SERVING, `SignerService.ListWallets` names the hot wallets.
   Beside it, at the same time, the treasury Safe's three **owner signers** (`safe_owner_1..3`,
   `SIGNER_ROLE=safe_owner`, each one keystore key in var/safe_owner_<n>/keystore.json with its
   password file, kept between runs; ports `STACK_SAFE_OWNER_PORT` 50060-50062, health
   50063-50065 with TLS, metrics 9106-9108); ListWallets names each one's owner key.
   `STACK_TREASURY_SAFE=0` leaves them, and the Safe, out.
5. **Bootstrap** (`bootstrap.py`, idempotent): deploy the test USDC, point the `tokens` row at
   it, register every hot wallet ListWallets named, the treasury and the token, fund each hot
   wallet with 100 POL and 1,000,000 USDC, deploy the PayoutVault with every hot wallet as an
   operator, deploy Safe v1.4.1 and create the 2-of-3 treasury Safe of the owner keys, make it
   a vault operator and hand it the vault (without STACK_TREASURY_SAFE the deployer key, anvil
   dev account 0, keeps it), ensure partner `dev-partner` and its development API key.
   The processor gets the owner signers as PROCESSOR_SAFE_OWNER_SIGNERS: the vault's owner
   functions (operators, pause, outflow cap, sweep) run as treasury changes through the Safe.
6. **svc_gateway**, **svc_processor**, **svc_monitor**, each waited for until SERVING, and the
   gateway's REST port until `GET /healthz` answers. A service whose `__main__.py` does not exist
   yet is skipped with a warning.
7. var/stack.json (mode 0600, written to a temporary file and renamed into place: URLs, the API
   key, addresses; see `runner.Stack`). The last run's file is removed once the ports are found
   free, so whatever waits for stack.json finds every service serving. Then ready-to-paste bash
   lines (the first reads the API key from stack.json into `$KEY`; then a curl that creates a
   withdrawal and one that reads it back), then `stack is up`.

The services are children of a foreground supervisor (`supervisor.py`) that prefixes their
output with their name (`gateway  | ...`), also writes it to var/logs/<name>.log, restarts a
child that exits unexpectedly (1 s backoff doubling to 30 s), and on Ctrl-C, or SIGINT or
SIGTERM sent to the runner's pid alone, stops them (SIGTERM, up to 10 s, then SIGKILL), then
anvil and its own Redis, exiting 0 (130 when the stack was still starting: the step under way
ends first).

Ports (taken ones are reported with the variable to set before anything starts):
`STACK_HTTP_PORT` (8080) and `STACK_GRPC_PORT` (50051) for the gateway, `STACK_SIGNER_PORT`
(50052), `STACK_PROCESSOR_PORT` (50053), `STACK_MONITOR_PORT` (50054); each also falls back to
the service's own variable (`GATEWAY_HTTP_PORT`, `SIGNER_GRPC_PORT`, ...). All var/ paths
follow `AWS_VAR_DIR` (withdrawal_shared.settings.VAR_DIR).
"""
