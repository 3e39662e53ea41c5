"""What a service process pays at every (re)start, kept small: recovery after a crash waits
for it.

`defer_bls()` keeps py_ecc's BLS12-381 code out of the process until something uses it. web3
imports it at every start (web3 -> eth_account -> eth_keyfile, which needs it only to create
EIP-2335 "version 4" keystores, through `py_ecc.bls.G2ProofOfPossession`), and py_ecc computes
its pairing tables when it is imported: about 0.2 of the ~1.4 CPU s the processor or the
monitor spends importing before it serves (`python -X importtime -m svc_processor`; web3 is
~0.9 s of it), on a busy machine the better part of a second of every restart. No service
creates such a keystore (the signer's keystore is version 3, scrypt); should anything ever use
the name, it imports the real module at that moment and behaves exactly like it.

How: while `web3` is first imported, `sys.modules["py_ecc.bls"]` is a stand-in whose
`G2ProofOfPossession` forwards every attribute to the real one; the stand-in is removed right
after, so any later `import py_ecc.bls` loads the real module. Nothing is deferred when web3 or
py_ecc.bls is imported already. Call it first thing in a service's `main()`, before importing
the service's modules.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_BLS = "py_ecc.bls"
_BLS_NAMES = ("G2ProofOfPossession",)  # what eth_keyfile imports from it


class _Deferred:
    """Stands for `<module>.<name>` and imports the module on the first attribute used."""

    def __init__(self, module: str, name: str) -> None:
        self._module = module
        self._name = name

    def _target(self) -> Any:
        return getattr(importlib.import_module(self._module), self._name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target(), attr)

    def __repr__(self) -> str:
        return f"<deferred {self._module}.{self._name}>"


def defer_bls() -> bool:
    """Import web3 with py_ecc.bls deferred (see the module docstring); whether it was."""
    if "web3" in sys.modules or _BLS in sys.modules:
        return False
    stand_in = types.ModuleType(_BLS, "Deferred by withdrawal_shared.startup.defer_bls.")
    for name in _BLS_NAMES:
        setattr(stand_in, name, _Deferred(_BLS, name))
    sys.modules[_BLS] = stand_in
    try:
        import web3  # noqa: F401 - the import is the point
    finally:
        if sys.modules.get(_BLS) is stand_in:
            del sys.modules[_BLS]
    return True
