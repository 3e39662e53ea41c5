"""awctl: the operators' command-line tool for the gateway's AdminService.

A gRPC client over the generated stubs (`assetwithdrawal.admin.v1`) and nothing else of the
project: it imports only the generated code, `google`, `grpc`, typer, rich and the standard
library (tests/unit/test_layout.py checks it), so it can be installed and run apart from the
services.

- `config`: where the target and the operator credential come from (flags, `AWCTL_*`, or the
  `var/stack.json` that `make up` writes);
- `client`: the channel, the calls, and turning a failed call into a readable error;
- `render`: rich tables and `--json` output;
- `cli`: the typer commands, and the helpers the command modules below share;
- `controls`: `keys`, `pauses` and `tokens` (partners' API keys, the kill switch, tokens);
- `rules`: `rules` (the approval rules, changed under four eyes).
"""
