"""The signer service: holds the hot wallets' keys and signs only what its policy allows.

`python -m svc_signer` runs it; `server.SignerServer` embeds it; `core.SignerCore` is the policy;
`ledger.Ledger` is the double-payment ledger; `keys` are the key backends.
"""
