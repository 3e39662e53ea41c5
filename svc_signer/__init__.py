"""The signer service: holds keys and signs only what its policy allows.

A signer has one role (`SIGNER_ROLE`): `hot` holds the hot wallets' keys (`core.SignerCore`,
SignTransaction), `safe_owner` holds one owner key of the treasury Safe
(`safe_owner.SafeOwnerCore`, SignSafeTransaction). `python -m svc_signer` runs it;
`server.SignerServer` embeds it; `reasons` are its refusals; `safe_rules` the Safe rules both
roles share; `ledger.Ledger` is the double-payment ledger and an owner's record of its
signatures; `keys` are the key backends.
"""
