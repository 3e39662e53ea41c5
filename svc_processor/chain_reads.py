"""What the processor reads from the chain, with RPC failures turned into TransientError."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from eth_typing import HexStr
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception

from svc_processor.errors import TransientError
from withdrawal_shared.chain.erc20 import encode_balance_of
from withdrawal_shared.chain.fees import FeePolicy, Fees, percentiles, price
from withdrawal_shared.chain.payout import remaining_outflow
from withdrawal_shared.states import Priority

T = TypeVar("T")
FEE_HISTORY_BLOCKS = 10


class WouldRevert(Exception):
    """eth_estimateGas says the call reverts now; `reason` is the node's message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _rpc(call: Callable[[], T]) -> T:
    try:
        return call()
    except ContractLogicError:
        raise
    except (Web3Exception, OSError, ValueError) as exc:
        raise TransientError(f"chain RPC failed: {exc}") from exc


class ChainReads:
    def __init__(self, w3: Web3) -> None:
        self.w3 = w3

    def token_balance(self, token: str, holder: str) -> int:
        data = HexStr(encode_balance_of(holder))
        to = Web3.to_checksum_address(token)
        raw = _rpc(lambda: self.w3.eth.call({"to": to, "data": data}))
        return int.from_bytes(raw, "big")

    def remaining_outflow(self, vault: str, token: str) -> int:
        """What the vault's outflow cap still lets `token` pay in this window."""
        return _rpc(
            lambda: remaining_outflow(
                self.w3, Web3.to_checksum_address(vault), Web3.to_checksum_address(token)
            )
        )

    def native_balance(self, holder: str) -> int:
        return int(_rpc(lambda: self.w3.eth.get_balance(Web3.to_checksum_address(holder))))

    def fees(self, priority: Priority, policy: FeePolicy) -> Fees:
        history = _rpc(
            lambda: self.w3.eth.fee_history(FEE_HISTORY_BLOCKS, "pending", percentiles())
        )
        return price(history, priority, policy)

    def estimate_gas(self, sender: str, to: str, data: bytes) -> int:
        """Gas for the call, or WouldRevert when the EVM refuses it now."""
        params = {
            "from": Web3.to_checksum_address(sender),
            "to": Web3.to_checksum_address(to),
            "data": data,
        }
        try:
            return int(_rpc(lambda: self.w3.eth.estimate_gas(params)))  # type: ignore[arg-type]
        except ContractLogicError as exc:
            raise WouldRevert(str(exc)) from None
