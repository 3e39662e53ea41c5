"""The treasury Safe (Safe v1.4.1) on a local anvil: deploy the Safe contracts, create a Safe,
and execute Safe transactions with local owner keys, for the bootstrap, tests and benchmarks.

The contracts are the build artifacts of the pinned npm package `@safe-global/safe-contracts`
1.4.1 (solc 0.7.6, as Safe compiled and deployed them), not recompiled here:

- the singleton `SafeL2` (see `SINGLETON`), the code every Safe proxy delegates to;
- `SafeProxyFactory`, whose `createProxyWithNonce(singleton, setup calldata, saltNonce)` creates
  a Safe (a proxy) and runs `setup(owners, threshold, ..., fallbackHandler, ...)` on it;
- `CompatibilityFallbackHandler`, the fallback handler every Safe is set up with (EIP-1271
  signature checks, token callbacks, `simulate`).

`deploy_safe_contracts` deploys the three once per chain the way Safe deploys them everywhere:
CREATE2 with salt 0 through the Safe singleton factory at `SAFE_SINGLETON_FACTORY`. On anvil,
which lacks that factory, its address is given the code of the deterministic-deployment proxy
(the same calling convention, salt then init code) with `anvil_setCode`. The contracts then land
on the canonical v1.4.1 addresses of Polygon and the other chains (`CANONICAL`), which holds only
when the init code is byte for byte Safe's own; their runtime code is checked against Safe's
published code hashes as well. A re-run finds them deployed and sends nothing.

`execute_safe_tx` signs a `SafeTx` with local owner keys (raw ECDSA over `safe_tx_hash`, `v`
27/28, the form an HSM owner key returns) and sends `execTransaction` from any funded key.
Production owners never hold keys like this: each owner's signer signs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, cast

from eth_abi.abi import encode as abi_encode
from eth_keys.datatypes import PrivateKey as EcdsaKey
from web3 import Web3
from web3.types import RPCEndpoint, TxParams, TxReceipt

from devstack.anvil import REPO_ROOT
from devstack.transactions import (
    DEFAULT_RECEIPT_TIMEOUT,
    ChainTransactionError,
    send_transaction,
)
from withdrawal_shared.chain.contracts import ContractArtifact
from withdrawal_shared.chain.safe import safe_nonce, safe_owners, safe_threshold
from withdrawal_shared.chain.safe_tx import (
    ZERO_ADDRESS,
    OwnerSignature,
    SafeTx,
    encode_exec_transaction,
    owner_signature,
    pack_signatures,
    safe_tx_hash,
)
from withdrawal_shared.chain.types import ChecksumAddress, HexStr, PrivateKey

__all__ = [
    "CANONICAL",
    "SAFE_CONTRACTS_DIR",
    "SAFE_SINGLETON_FACTORY",
    "SINGLETON",
    "SafeContractName",
    "SafeDeployment",
    "SafeSetupError",
    "build_safe_tx",
    "create_safe",
    "deploy_safe_contracts",
    "exec_transaction_params",
    "execute_safe_tx",
    "load_safe_artifact",
    "predict_safe_address",
    "setup_calldata",
    "sign_safe_tx",
]

SafeContractName = Literal["Safe", "SafeL2", "SafeProxyFactory", "CompatibilityFallbackHandler"]

SAFE_CONTRACTS_DIR = (
    REPO_ROOT / "node_modules" / "@safe-global" / "safe-contracts" / "build" / "artifacts"
)
_ARTIFACT_PATHS: Final[dict[SafeContractName, str]] = {
    "Safe": "contracts/Safe.sol/Safe.json",
    "SafeL2": "contracts/SafeL2.sol/SafeL2.json",
    "SafeProxyFactory": "contracts/proxies/SafeProxyFactory.sol/SafeProxyFactory.json",
    "CompatibilityFallbackHandler": (
        "contracts/handler/CompatibilityFallbackHandler.sol/CompatibilityFallbackHandler.json"
    ),
}

SINGLETON: Final[SafeContractName] = "SafeL2"
"""The treasury's singleton is `SafeL2`, not `Safe`.

The two run the same code; `SafeL2.execTransaction` also emits `SafeMultiSigTransaction` with
every field of the transaction and the owners' signatures. With it, what a Safe executed can be
read back from its logs alone, without `debug_`/`trace_` RPC methods, which Polygon's RPC
providers mostly lack; Safe itself uses SafeL2 on every chain but Ethereum mainnet, Polygon
included, so its indexing service and wallet read such Safes. The price is that event's gas on
each execution (`bench.safe_gas` measures both singletons).
"""

SAFE_SINGLETON_FACTORY = Web3.to_checksum_address("0x914d7Fec6aaC8cd542e72Bca78B30650d45643d7")
"""Where Safe's CREATE2 factory lives on the chains Safe is deployed on."""
# The deterministic-deployment proxy's runtime code: CREATE2(value, calldata[32:], calldata[:32])
# and return the new address (what anvil ships at 0x4e59b44847b379578588920cA78FbF26c0B4956C).
_CREATE2_PROXY_CODE = (
    "0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe036016000816020823780"
    "35828234f58015156039578182fd5b8082525050506014600cf3"
)
_CREATE2_SALT = bytes(32)

CANONICAL: Final[dict[SafeContractName, tuple[ChecksumAddress, str]]] = {
    "Safe": (
        Web3.to_checksum_address("0x41675C099F32341bf84BFc5382aF534df5C7461a"),
        "0x1fe2df852ba3299d6534ef416eefa406e56ced995bca886ab7a553e6d0c5e1c4",
    ),
    "SafeL2": (
        Web3.to_checksum_address("0x29fcB43b46531BcA003ddC8FCB67FFE91900C762"),
        "0xb1f926978a0f44a2c0ec8fe822418ae969bd8c3f18d61e5103100339894f81ff",
    ),
    "SafeProxyFactory": (
        Web3.to_checksum_address("0x4e1DCf7AD4e460CfD30791CCC4F9c8a4f820ec67"),
        "0x50c3cdc4074750a7a974204a716c999edd37482f907608d960b2b025ee0b3317",
    ),
    "CompatibilityFallbackHandler": (
        Web3.to_checksum_address("0xfd0732Dc9E303f09fCEf3a7388Ad10A83459Ec99"),
        "0x7c6007a5d711cea8dfd5d91f5940ec29c7f200fe511eb1fc1397b367af3c42f9",
    ),
}
"""Safe v1.4.1's canonical deployment (address, keccak of the runtime code) per contract, as
Safe publishes them (npm `@safe-global/safe-deployments`, assets/v1.4.1, `canonical`)."""


class SafeSetupError(ChainTransactionError):
    """The Safe contracts or a Safe are not what they should be."""


@functools.cache
def load_safe_artifact(name: SafeContractName) -> ContractArtifact:
    """The pinned package's build artifact of `name` (run `make deps` when it is missing)."""
    path = SAFE_CONTRACTS_DIR / _ARTIFACT_PATHS[name]
    try:
        raw = json.loads(path.read_text())
        debug = json.loads(path.with_name(f"{name}.dbg.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no artifact {path}: run `make deps` to install @safe-global/safe-contracts"
        ) from None
    build_info = json.loads((path.parent / Path(debug["buildInfo"])).read_text())
    return ContractArtifact(
        contract_name=raw["contractName"],
        source_name=raw["sourceName"],
        abi=raw["abi"],
        bytecode=HexStr(raw["bytecode"]),
        deployed_bytecode=HexStr(raw["deployedBytecode"]),
        compiler_version=str(build_info["solcVersion"]),
    )


@dataclass(frozen=True, slots=True)
class SafeDeployment:
    """Where one chain's Safe contracts are."""

    singleton: ChecksumAddress
    proxy_factory: ChecksumAddress
    fallback_handler: ChecksumAddress


def _create2_address(deployer: str, salt: bytes, init_code: bytes) -> ChecksumAddress:
    digest = Web3.keccak(
        b"\xff" + bytes.fromhex(deployer[2:]) + salt + bytes(Web3.keccak(init_code))
    )
    return Web3.to_checksum_address(digest[12:])


def _ensure_singleton_factory(w3: Web3) -> None:
    if w3.eth.get_code(SAFE_SINGLETON_FACTORY):
        return
    response = w3.provider.make_request(
        RPCEndpoint("anvil_setCode"), [SAFE_SINGLETON_FACTORY, _CREATE2_PROXY_CODE]
    )
    if "error" in response:
        raise SafeSetupError(
            f"no Safe singleton factory at {SAFE_SINGLETON_FACTORY} and anvil_setCode failed "
            f"({response['error']}): deploy the Safe contracts on an anvil"
        )


def _deploy_deterministic(
    w3: Web3, deployer_key: PrivateKey, name: SafeContractName, timeout: float
) -> ChecksumAddress:
    artifact = load_safe_artifact(name)
    init_code = bytes.fromhex(artifact.bytecode.removeprefix("0x"))
    address = _create2_address(SAFE_SINGLETON_FACTORY, _CREATE2_SALT, init_code)
    canonical, code_hash = CANONICAL[name]
    if address != canonical:
        raise SafeSetupError(
            f"{name}'s init code deploys to {address}, not to Safe's canonical {canonical}: "
            "the artifact is not Safe's v1.4.1 build"
        )
    if not w3.eth.get_code(address):
        tx: TxParams = {
            "to": SAFE_SINGLETON_FACTORY,
            "data": HexStr("0x" + (_CREATE2_SALT + init_code).hex()),
        }
        send_transaction(w3, deployer_key, tx, timeout=timeout)
    deployed = Web3.keccak(w3.eth.get_code(address)).to_0x_hex()
    if deployed != code_hash:
        raise SafeSetupError(f"the code at {address} is not Safe v1.4.1's {name}")
    return address


def deploy_safe_contracts(
    w3: Web3,
    deployer_key: PrivateKey,
    *,
    singleton: SafeContractName = SINGLETON,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> SafeDeployment:
    """Deploy (once per chain) the singleton, the proxy factory and the fallback handler at
    their canonical v1.4.1 addresses; a re-run sends nothing. `singleton` is "SafeL2" or
    "Safe"."""
    if singleton not in ("Safe", "SafeL2"):
        raise ValueError("the singleton is Safe or SafeL2")
    _ensure_singleton_factory(w3)
    return SafeDeployment(
        singleton=_deploy_deterministic(w3, deployer_key, singleton, timeout),
        proxy_factory=_deploy_deterministic(w3, deployer_key, "SafeProxyFactory", timeout),
        fallback_handler=_deploy_deterministic(
            w3, deployer_key, "CompatibilityFallbackHandler", timeout
        ),
    )


def setup_calldata(owners: Sequence[str], threshold: int, fallback_handler: str) -> bytes:
    """`setup(owners, threshold, to=0, data="", fallbackHandler, paymentToken=0, payment=0,
    paymentReceiver=0)`: a Safe with these owners and threshold, no module set-up, no refund."""
    if not owners or not 1 <= threshold <= len(owners):
        raise ValueError("a Safe needs owners and a threshold between 1 and their number")
    selector = Web3.keccak(
        text="setup(address[],uint256,address,bytes,address,address,uint256,address)"
    )[:4]
    return bytes(selector) + abi_encode(
        ["address[]", "uint256", "address", "bytes", "address", "address", "uint256", "address"],
        [
            [Web3.to_checksum_address(owner) for owner in owners],
            threshold,
            ZERO_ADDRESS,
            b"",
            Web3.to_checksum_address(fallback_handler),
            ZERO_ADDRESS,
            0,
            ZERO_ADDRESS,
        ],
    )


def predict_safe_address(
    w3: Web3, deployment: SafeDeployment, initializer: bytes, salt: int
) -> ChecksumAddress:
    """The address `createProxyWithNonce(singleton, initializer, salt)` creates: CREATE2 by the
    factory with salt keccak(keccak(initializer) ++ salt) over the proxy's creation code and
    the singleton address."""
    factory = w3.eth.contract(
        address=deployment.proxy_factory, abi=load_safe_artifact("SafeProxyFactory").abi
    )
    creation = bytes(cast(bytes, factory.functions.proxyCreationCode().call()))
    init_code = creation + abi_encode(["address"], [deployment.singleton])
    create2_salt = bytes(Web3.keccak(bytes(Web3.keccak(initializer)) + salt.to_bytes(32, "big")))
    return _create2_address(deployment.proxy_factory, create2_salt, init_code)


def create_safe(
    w3: Web3,
    sender_key: PrivateKey,
    deployment: SafeDeployment,
    owners: Sequence[str],
    threshold: int,
    salt: int,
    *,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> ChecksumAddress:
    """A Safe with `owners` and `threshold` (and the deployment's fallback handler) created by
    the factory's `createProxyWithNonce` with `setup(...)` calldata; its address depends only
    on the deployment, the owners in order, the threshold and `salt`. When it exists already
    (a re-run) nothing is sent; its owners and threshold are checked either way."""
    initializer = setup_calldata(owners, threshold, deployment.fallback_handler)
    address = predict_safe_address(w3, deployment, initializer, salt)
    if not w3.eth.get_code(address):
        factory = w3.eth.contract(
            address=deployment.proxy_factory, abi=load_safe_artifact("SafeProxyFactory").abi
        )
        function = factory.functions.createProxyWithNonce(deployment.singleton, initializer, salt)
        tx: TxParams = {
            "to": deployment.proxy_factory,
            "data": HexStr(function._encode_transaction_data()),
        }
        send_transaction(w3, sender_key, tx, abi=factory.abi, timeout=timeout)
    wanted = sorted(Web3.to_checksum_address(owner) for owner in owners)
    if sorted(safe_owners(w3, address)) != wanted or safe_threshold(w3, address) != threshold:
        raise SafeSetupError(f"the Safe at {address} does not have the owners and threshold asked")
    return address


def build_safe_tx(w3: Web3, safe: str, to: str, data: bytes, *, nonce: int | None = None) -> SafeTx:
    """A plain CALL of `to` with `data` (no value, no refund) at the Safe's current nonce."""
    return SafeTx.call(to, data, safe_nonce(w3, safe) if nonce is None else nonce)


def sign_safe_tx(chain_id: int, safe: str, tx: SafeTx, owner_key: PrivateKey) -> OwnerSignature:
    """An owner's signature of `tx`: ECDSA over the raw `safe_tx_hash` (no message prefix),
    r, s and the recovery id, as an HSM returns them, in the Safe's 65-byte form (v 27/28)."""
    digest = safe_tx_hash(chain_id, safe, tx)
    key = EcdsaKey(bytes.fromhex(owner_key.removeprefix("0x")))
    signature = key.sign_msg_hash(digest)
    return owner_signature(
        key.public_key.to_checksum_address(), signature.r, signature.s, signature.v
    )


def exec_transaction_params(
    w3: Web3, safe: str, tx: SafeTx, owner_keys: Sequence[PrivateKey]
) -> tuple[bytes, TxParams]:
    """`(safe_tx_hash, params)`: the hash the owners signed and the unsent `execTransaction`
    call (to, data) carrying the signatures of `owner_keys`, sorted by owner."""
    chain_id = w3.eth.chain_id
    signatures = [sign_safe_tx(chain_id, safe, tx, key) for key in owner_keys]
    calldata = encode_exec_transaction(tx, pack_signatures(signatures))
    params: TxParams = {
        "to": Web3.to_checksum_address(safe),
        "data": HexStr("0x" + calldata.hex()),
    }
    return safe_tx_hash(chain_id, safe, tx), params


def execute_safe_tx(
    w3: Web3,
    safe: str,
    tx: SafeTx,
    owner_keys: Sequence[PrivateKey],
    sender_key: PrivateKey,
    *,
    gas: int | None = None,
    timeout: float = DEFAULT_RECEIPT_TIMEOUT,
) -> tuple[bytes, TxReceipt]:
    """Sign `tx` with each of `owner_keys` and send `execTransaction` from `sender_key` (any
    funded account; the Safe does not care who sends). Returns `(safe_tx_hash, receipt)`.

    Raises `TransactionReverted` when the Safe refuses (e.g. GS020: too few signatures, GS026:
    not owners in ascending order, GS013: the inner call failed) at gas estimation, or on chain
    when `gas` is given.
    """
    digest, params = exec_transaction_params(w3, safe, tx, owner_keys)
    if gas is not None:
        params["gas"] = gas
    abi = load_safe_artifact(SINGLETON).abi
    receipt = send_transaction(w3, sender_key, params, abi=abi, timeout=timeout)
    return digest, receipt
