"""Idempotent set-up of a local stack's chain and database, after migrations ran.

With anvil dev account 0 as deployer and treasury:

1. the TestStablecoin ("USD Coin", "USDC", 6 decimals) is deployed, unless the USDC token row
   already points at a contract with code that answers `symbol() == "USDC"` (a re-run);
2. the `tokens` row (polygon, USDC) gets its `contract_address` (lowercase);
3. every hot wallet the signer reported goes into `hot_wallets` (`next_nonce` = the wallet's
   current on-chain nonce) and `system_addresses` (`hot_wallet`), as do the token contract
   (`token`) and the treasury (`treasury`); those named in `emergency_wallets` get the role
   EMERGENCY (they pay only EMERGENCY withdrawals), the others STANDARD;
4. each hot wallet is topped up to 100 POL and 1,000,000 USDC (so a re-run sends nothing);
5. with `payout_vault=True` (the default) a PayoutVault owned by the treasury (a Safe in
   production) is deployed, unless the `payout_vaults` row already points at one with code;
   each hot wallet (emergency ones included) becomes its operator, the vault is topped up
   to 1,000,000 USDC, and it is
   recorded in `payout_vaults` and `system_addresses` (`payout_contract`). The processor then
   pays through it in batches; without it, one ERC-20 transfer per withdrawal;
   with `treasury_safe_owners` (empty by default here; needs the vault; `make up` and the
   harness stacks pass their three owner signers' keys unless STACK_TREASURY_SAFE=0 or
   `HarnessConfig.treasury_safe=False`), the treasury Safe takes the
   vault over: the Safe v1.4.1 contracts are deployed once per chain (`devstack.safe`; three
   transactions, the largest, SafeL2, 5.3M gas: the block gas limit must allow it), a Safe
   with those owners and `treasury_safe_threshold` is created (its address follows from the
   owners, the threshold and `TREASURY_SAFE_SALT`, so a re-run finds it), it becomes a vault
   operator (so it can call `payout`), and then, after the steps above set operators and
   funds, the vault's ownership moves from the deployer to it (`transferOwnership`). It is
   recorded in `safe_treasuries`, `safe_owners` and `system_addresses` (`treasury_safe`).
   From then on only the Safe's owners can change operators: a later run that finds a hot
   wallet which is not yet an operator stops with `BootstrapError`;
6. partner `dev-partner` exists and has a development API key (scopes: the defaults and
   `emergency`): the previous one (from
   var/stack.json) when it still authenticates, else a new one. The key is returned once and
   stored only in var/stack.json, never logged;
7. two admin operators exist, `dev-admin` and `dev-admin-2`, each holding every role (admin,
   operator, approver, viewer: one credential works every awctl command locally) and a
   credential (the previous one from var/stack.json while it still authenticates, else a new
   one). Two, so
   that four eyes (one admin proposes, another confirms) can be used locally. They are
   created directly (`admin_bootstrap.create_admin`), without a second admin's
   confirmation: this path exists only in the dev tooling. In production the first admin
   comes from `python -m withdrawal_shared.db.admin_bootstrap`, which refuses when an admin
   exists, and every further operator from a confirmed change.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3

from devstack.anvil import DevAccount
from devstack.safe import create_safe, deploy_safe_contracts
from devstack.stablecoin import deploy_test_stablecoin, mint
from devstack.transactions import fund_native
from devstack.vault import (
    deploy_payout_vault,
    fund_vault,
    set_operator,
    transfer_vault_ownership,
)
from withdrawal_shared.chain.contracts import balance_of, stablecoin_contract
from withdrawal_shared.chain.payout import payout_vault_contract
from withdrawal_shared.chain.types import BaseUnits, ChecksumAddress, Wei
from withdrawal_shared.db.admin_bootstrap import BOOTSTRAP_ACTOR, create_admin
from withdrawal_shared.db.api_keys import ensure_partner, issue_api_key, partner_for_token
from withdrawal_shared.db.engine import make_engine, make_sessionmaker
from withdrawal_shared.db.models import (
    Chain,
    HotWallet,
    Operator,
    PayoutVault,
    SafeOwner,
    SafeTreasury,
    SystemAddress,
    Token,
)
from withdrawal_shared.db.operators import Role, issue_credential, operator_for_credential
from withdrawal_shared.db.transitions import utcnow
from withdrawal_shared.scopes import DEFAULT_SCOPES, Scope
from withdrawal_shared.states import WalletRole

CHAIN = "polygon"
TOKEN_SYMBOL = "USDC"  # noqa: S105 - a token symbol
TOKEN_NAME = "USD Coin"  # noqa: S105 - a token name
DEV_PARTNER = "dev-partner"
DEV_ADMINS = ("dev-admin", "dev-admin-2")
DEV_API_KEY_SCOPES = DEFAULT_SCOPES | {Scope.EMERGENCY, Scope.BATCHES_CREATE}
"""The development key may create EMERGENCY withdrawals and CSV batches too."""
HOT_WALLET_NATIVE = Wei(100 * 10**18)  # 100 POL
HOT_WALLET_TOKENS = BaseUnits(1_000_000 * 10**6)  # 1,000,000 USDC
VAULT_TOKENS = BaseUnits(1_000_000 * 10**6)  # 1,000,000 USDC
TREASURY_SAFE_SALT = 0
"""The `saltNonce` of the treasury Safe's `createProxyWithNonce`."""


class BootstrapError(RuntimeError):
    """The database or chain is not in a state the bootstrap can work with."""


@dataclass(frozen=True)
class BootstrapResult:
    token_address: ChecksumAddress
    treasury: ChecksumAddress
    hot_wallets: tuple[ChecksumAddress, ...]
    """The STANDARD-role wallets."""
    partner_id: str
    api_key: str
    api_key_reused: bool
    token_deployed: bool
    payout_vault: ChecksumAddress | None = None
    admin_credentials: tuple[str, ...] = ()
    """One credential per `DEV_ADMINS` operator, in that order."""
    emergency_wallets: tuple[ChecksumAddress, ...] = ()
    """The EMERGENCY-role wallets (registered, funded and vault operators like the others)."""
    treasury_safe: ChecksumAddress | None = None
    """The treasury Safe owning the vault, when `treasury_safe_owners` was given."""


def _noop(_message: str) -> None:
    return None


def _usable_token(w3: Web3, address: str | None) -> ChecksumAddress | None:
    """The address when it holds a contract answering symbol() == USDC on this chain."""
    if not address or not Web3.is_address(address):
        return None
    checksum = Web3.to_checksum_address(address)
    if not w3.eth.get_code(checksum):
        return None
    try:
        symbol = stablecoin_contract(w3, checksum).functions.symbol().call()
    except Exception:  # any failure means "not our token"
        return None
    return checksum if symbol == TOKEN_SYMBOL else None


def _upsert_system_address(session: Session, address: str, kind: str, label: str) -> None:
    row = session.get(SystemAddress, address.lower())
    if row is None:
        session.add(SystemAddress(address=address.lower(), chain=CHAIN, kind=kind, label=label))
    else:
        row.kind, row.label, row.chain = kind, label, CHAIN


def _reference_token(sessions: sessionmaker[Session], w3: Web3) -> str | None:
    """The USDC row's current contract address, after checking the rows and the chain id."""
    with sessions() as session:
        chain = session.get(Chain, CHAIN)
        token_row = session.scalars(
            select(Token).where(Token.chain == CHAIN, Token.symbol == TOKEN_SYMBOL)
        ).first()
        if chain is None or token_row is None:
            raise BootstrapError(
                f"the database has no {CHAIN} chain or {TOKEN_SYMBOL} token row: run the "
                "migrations (`python -m withdrawal_shared.db.migrate`) and try again"
            )
        chain_id = w3.eth.chain_id
        if chain.chain_id != chain_id:
            raise BootstrapError(
                f"the node answers chain id {chain_id} but the {CHAIN} row says "
                f"{chain.chain_id}: point the stack at an anvil started with --chain-id "
                f"{chain.chain_id}"
            )
        return token_row.contract_address


def _register(
    sessions: sessionmaker[Session],
    w3: Web3,
    token: ChecksumAddress,
    treasury: ChecksumAddress,
    wallets: Sequence[ChecksumAddress],
    progress: Callable[[str], None],
    emergency: Collection[str] = (),
) -> None:
    with sessions.begin() as session:
        token_row = session.scalars(
            select(Token).where(Token.chain == CHAIN, Token.symbol == TOKEN_SYMBOL)
        ).one()
        token_row.contract_address = token.lower()
        _upsert_system_address(session, token, "token", f"{TOKEN_SYMBOL} (TestStablecoin)")
        _upsert_system_address(session, treasury, "treasury", "treasury (anvil dev account 0)")
        for wallet in wallets:
            nonce = w3.eth.get_transaction_count(wallet, "pending")
            row = session.get(HotWallet, wallet.lower())
            if row is None:
                row = HotWallet(address=wallet.lower(), chain=CHAIN, next_nonce=nonce, enabled=True)
                session.add(row)
            elif row.next_nonce != nonce:
                progress(
                    f"hot wallet {wallet}: next_nonce {row.next_nonce} -> {nonce} "
                    "(the chain's nonce; this is a fresh chain)"
                )
            row.next_nonce, row.enabled, row.chain = nonce, True, CHAIN
            row.role = WalletRole.EMERGENCY if wallet in emergency else WalletRole.STANDARD
            label = (
                "emergency hot wallet (signer)" if wallet in emergency else "hot wallet (signer)"
            )
            _upsert_system_address(session, wallet, "hot_wallet", label)


def _fund(
    w3: Web3,
    deployer: DevAccount,
    token: ChecksumAddress,
    wallets: Sequence[ChecksumAddress],
    progress: Callable[[str], None],
) -> None:
    for wallet in wallets:
        native = w3.eth.get_balance(wallet)
        if native < HOT_WALLET_NATIVE:
            progress(f"funding hot wallet {wallet} with POL ...")
            fund_native(w3, deployer.private_key, wallet, Wei(HOT_WALLET_NATIVE - native))
        held = balance_of(w3, token, wallet)
        if held < HOT_WALLET_TOKENS:
            progress(f"minting {TOKEN_SYMBOL} to hot wallet {wallet} ...")
            mint(w3, token, deployer.private_key, wallet, BaseUnits(HOT_WALLET_TOKENS - held))
        progress(
            f"hot wallet {wallet} holds at least {HOT_WALLET_NATIVE // 10**18} POL and "
            f"{HOT_WALLET_TOKENS // 10**6:,} {TOKEN_SYMBOL}"
        )


def _vault(
    sessions: sessionmaker[Session],
    w3: Web3,
    deployer: DevAccount,
    token: ChecksumAddress,
    wallets: Sequence[ChecksumAddress],
    progress: Callable[[str], None],
) -> ChecksumAddress:
    with sessions() as session:
        row = session.get(PayoutVault, CHAIN)
        known = row.address if row is not None else None
    vault = (
        Web3.to_checksum_address(known)
        if known and w3.eth.get_code(Web3.to_checksum_address(known))
        else None
    )
    if vault is None:
        progress("deploying the PayoutVault (owner: the treasury) ...")
        vault = deploy_payout_vault(w3, deployer.private_key, deployer.address)
        progress(f"PayoutVault deployed at {vault}")
    contract = payout_vault_contract(w3, vault)
    for wallet in wallets:
        if not contract.functions.operators(wallet).call():
            owner = contract.functions.owner().call()
            if owner != deployer.address:
                raise BootstrapError(
                    f"hot wallet {wallet} is not an operator of the PayoutVault {vault}, and "
                    f"the vault belongs to {owner} (the treasury Safe), not to the deployer: "
                    "its owners must make it one (setOperator through the Safe)"
                )
            set_operator(w3, vault, deployer.private_key, wallet, True)
    held = balance_of(w3, token, vault)
    if held < VAULT_TOKENS:
        progress(f"funding the PayoutVault with {TOKEN_SYMBOL} ...")
        fund_vault(
            w3, token, deployer.private_key, vault, BaseUnits(VAULT_TOKENS - held), mint_new=True
        )
    with sessions.begin() as session:
        row = session.get(PayoutVault, CHAIN)
        if row is None:
            session.add(
                PayoutVault(chain=CHAIN, address=vault.lower(), next_number=1, enabled=True)
            )
        elif row.address != vault.lower():
            # A new vault has an empty bitmap: numbers keep growing, never restart.
            row.address, row.enabled = vault.lower(), True
        _upsert_system_address(session, vault, "payout_contract", "PayoutVault")
    progress(f"PayoutVault {vault} holds at least {VAULT_TOKENS // 10**6:,} {TOKEN_SYMBOL}")
    return vault


def _record_treasury_safe(
    session: Session,
    safe: ChecksumAddress,
    threshold: int,
    owners: Sequence[ChecksumAddress],
    labels: Sequence[str],
) -> None:
    """The `safe_treasuries` row, the `safe_owners` rows (exactly `owners`) and the Safe's
    `system_addresses` row."""
    row = session.get(SafeTreasury, CHAIN)
    if row is None:
        row = SafeTreasury(
            chain=CHAIN, address=safe.lower(), threshold=threshold, create_time=utcnow()
        )
        session.add(row)
        session.flush()
    elif row.address != safe.lower():
        row.address, row.threshold, row.create_time = safe.lower(), threshold, utcnow()
    else:
        row.threshold = threshold
    wanted = {
        owner_address.lower(): (labels[index] if labels else f"treasury Safe owner {index + 1}")
        for index, owner_address in enumerate(owners)
    }
    for existing in session.scalars(select(SafeOwner).where(SafeOwner.chain == CHAIN)):
        if existing.owner_address not in wanted:
            session.delete(existing)
        else:
            existing.label = wanted.pop(existing.owner_address)
    for owner_address, label in wanted.items():
        session.add(SafeOwner(chain=CHAIN, owner_address=owner_address, label=label))
    _upsert_system_address(
        session, safe, "treasury_safe", f"treasury Safe ({threshold} of {len(owners)})"
    )


def _treasury_safe(
    sessions: sessionmaker[Session],
    w3: Web3,
    deployer: DevAccount,
    vault: ChecksumAddress,
    owners: Sequence[ChecksumAddress],
    threshold: int,
    labels: Sequence[str],
    progress: Callable[[str], None],
) -> ChecksumAddress:
    if not 1 <= threshold <= len(owners) or len(set(owners)) != len(owners):
        raise BootstrapError(
            f"a treasury Safe needs distinct owners and a threshold from 1 to their number, "
            f"not {threshold} of {len(owners)}"
        )
    if labels and len(labels) != len(owners):
        raise BootstrapError("give one label per treasury Safe owner, or none")
    deployment = deploy_safe_contracts(w3, deployer.private_key)
    safe = create_safe(w3, deployer.private_key, deployment, owners, threshold, TREASURY_SAFE_SALT)
    progress(f"treasury Safe {safe}: {threshold} of {len(owners)} owners")
    contract = payout_vault_contract(w3, vault)
    owner = contract.functions.owner().call()
    if owner not in (deployer.address, safe):
        raise BootstrapError(
            f"the PayoutVault {vault} belongs to {owner}, neither the deployer nor the treasury "
            f"Safe {safe}: it cannot be handed to the Safe"
        )
    if not contract.functions.operators(safe).call():
        if owner != deployer.address:
            raise BootstrapError(f"the treasury Safe {safe} is not an operator of {vault}")
        set_operator(w3, vault, deployer.private_key, safe, True)
    if owner == deployer.address:
        progress(f"handing the PayoutVault {vault} to the treasury Safe ...")
        transfer_vault_ownership(w3, vault, deployer.private_key, safe)
    with sessions.begin() as session:
        _record_treasury_safe(session, safe, threshold, owners, labels)
    return safe


def _dev_api_key(sessions: sessionmaker[Session], previous: str | None) -> tuple[str, bool]:
    """(key, reused): the previous key while it still authenticates, else a new one."""
    with sessions.begin() as session:
        ensure_partner(session, DEV_PARTNER, "Development partner (make up)")
        session.flush()
        if previous and partner_for_token(session, previous) == DEV_PARTNER:
            return previous, True
        return issue_api_key(session, DEV_PARTNER, DEV_API_KEY_SCOPES), False


def _dev_admins(sessions: sessionmaker[Session], previous: Sequence[str | None]) -> tuple[str, ...]:
    """A credential for each development admin: the previous one while it still
    authenticates as that admin, else a new one (creating the admin when missing)."""
    credentials: list[str] = []
    with sessions.begin() as session:
        for index, operator_id in enumerate(DEV_ADMINS):
            old = previous[index] if index < len(previous) else None
            identity = operator_for_credential(session, old) if old else None
            if old and identity is not None and identity.operator_id == operator_id:
                credentials.append(old)
            elif session.get(Operator, operator_id) is None:
                credentials.append(
                    create_admin(session, operator_id, "Development admin", roles=tuple(Role))
                )
            else:
                _, token = issue_credential(
                    session, operator_id, created_by=BOOTSTRAP_ACTOR, description="make up"
                )
                credentials.append(token)
    return tuple(credentials)


def bootstrap(
    w3: Web3,
    deployer: DevAccount,
    database_url: str,
    hot_wallets: Sequence[str],
    *,
    previous_api_key: str | None = None,
    previous_admin_credentials: Sequence[str | None] = (),
    payout_vault: bool = True,
    progress: Callable[[str], None] = _noop,
    emergency_wallets: Sequence[str] = (),
    treasury_safe_owners: Sequence[str] = (),
    treasury_safe_threshold: int = 2,
    treasury_safe_labels: Sequence[str] = (),
) -> BootstrapResult:
    """Deploy, register, fund and issue what a local stack needs (see the module docstring).
    `emergency_wallets` (some of `hot_wallets`) get the EMERGENCY role. With
    `treasury_safe_owners` (empty: off) a Safe of those owners and `treasury_safe_threshold`
    takes the vault over; `treasury_safe_labels`, one per owner, label their `safe_owners`
    rows."""
    if treasury_safe_owners and not payout_vault:
        raise BootstrapError("the treasury Safe owns the PayoutVault: it needs payout_vault=True")
    engine = make_engine(database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    try:
        token = _usable_token(w3, _reference_token(sessions, w3))
        deployed = token is None
        if token is None:
            progress(f"deploying the test stablecoin ({TOKEN_NAME}, {TOKEN_SYMBOL}) ...")
            token = deploy_test_stablecoin(w3, deployer.private_key, TOKEN_NAME, TOKEN_SYMBOL)
            progress(f"{TOKEN_SYMBOL} deployed at {token}")
        else:
            progress(f"{TOKEN_SYMBOL} already deployed at {token}: reusing it")
        wallets = tuple(Web3.to_checksum_address(address) for address in hot_wallets)
        emergency = {Web3.to_checksum_address(address) for address in emergency_wallets}
        unknown = emergency - set(wallets)
        if unknown:
            raise BootstrapError(
                f"emergency wallets {sorted(unknown)} are not among the hot wallets; name "
                "wallets the signer holds"
            )
        _register(sessions, w3, token, deployer.address, wallets, progress, emergency)
        _fund(w3, deployer, token, wallets, progress)
        vault = _vault(sessions, w3, deployer, token, wallets, progress) if payout_vault else None
        safe = None
        if treasury_safe_owners and vault is not None:
            safe = _treasury_safe(
                sessions,
                w3,
                deployer,
                vault,
                [Web3.to_checksum_address(owner) for owner in treasury_safe_owners],
                treasury_safe_threshold,
                treasury_safe_labels,
                progress,
            )
        api_key, reused = _dev_api_key(sessions, previous_api_key)
        admins = _dev_admins(sessions, previous_admin_credentials)
        return BootstrapResult(
            token_address=token,
            treasury=deployer.address,
            hot_wallets=tuple(w for w in wallets if w not in emergency),
            emergency_wallets=tuple(w for w in wallets if w in emergency),
            partner_id=DEV_PARTNER,
            api_key=api_key,
            api_key_reused=reused,
            token_deployed=deployed,
            payout_vault=vault,
            admin_credentials=admins,
            treasury_safe=safe,
        )
    finally:
        engine.dispose()
