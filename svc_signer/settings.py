"""The signer's one settings object, read from the environment (defaults documented here).

A signer has one role (`SIGNER_ROLE`). A `hot` signer (the default) may hold several hot
wallets, each with its own key and so its own nonce sequence (the queue-sharding path to
horizontal scale): `SIGNER_KEYSTORE_COUNT` keystore keys, one PKCS#11 key pair per label of
`SIGNER_PKCS11_KEY_LABELS`, or one AWS KMS key per entry of `SIGNER_KMS_KEY_IDS`. ListWallets
names them all, and each SignTransaction is signed with the key of its `wallet_address`. A
`safe_owner` signer holds exactly one owner key of the treasury Safe (one signer process, and
its own HSM token, KMS key or keystore, per owner) and signs only Safe transactions
(`svc_signer.safe_owner`).

The key backend's secrets are deliberately not part of it: `SIGNER_KEYSTORE_PASSWORD` and
`SIGNER_PKCS11_PIN` are read from the environment only when the backend is opened (or come from
the password / PIN files named here), so a settings object can be logged or printed safely. AWS
credentials are never settings either: boto3 finds them itself (IAM role, `AWS_*` variables).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from svc_signer.keys import (
    ENV_BACKEND,
    ENV_KEYSTORE_COUNT,
    ENV_KEYSTORE_PASSWORD_FILE,
    ENV_KEYSTORE_PATH,
)
from svc_signer.keys import aws_kms as _kms
from svc_signer.keys import keystore as _keystore
from svc_signer.keys import pkcs11_hsm as _pkcs11
from withdrawal_shared.settings import (
    DEFAULT_DATABASE_URL,
    SettingsError,
    database_tls_env,
    env_bool,
    env_float,
    env_int,
    env_str,
)
from withdrawal_shared.store_tls import DatabaseTls
from withdrawal_shared.tls import TlsFiles

KEY_BACKENDS = ("keystore", "pkcs11", "aws_kms")
ROLE_HOT = "hot"
ROLE_SAFE_OWNER = "safe_owner"
ROLES = (ROLE_HOT, ROLE_SAFE_OWNER)


def _names(variable: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env_str(variable, "")
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    return names or default


# Secrets the key backend reads from the environment itself; never copied into settings.
_SECRET_ENV = (_keystore.PASSWORD_ENV, _pkcs11.ENV_PIN)


def _kms_settings(key_backend: str) -> _kms.AwsKmsSettings | None:
    """The KMS settings with `aws_kms` (SettingsError naming the variable at fault); with
    another backend None, and a SIGNER_KMS_* variable set is refused (it would be ignored)."""
    if key_backend != "aws_kms":
        for name in _kms.ENV_VARIABLES:
            if env_str(name, "").strip():
                raise SettingsError(
                    f"{name} is set but {ENV_BACKEND}={key_backend!r}: set {ENV_BACKEND}=aws_kms "
                    f"to sign with AWS KMS, or unset {name}"
                )
        return None
    names = (*_kms.ENV_VARIABLES, *_kms.AWS_REGION_VARIABLES)
    try:
        return _kms.AwsKmsSettings.from_env({name: env_str(name, "") for name in names})
    except _kms.AwsKmsError as exc:
        raise SettingsError(str(exc)) from None


@dataclass(frozen=True)
class SignerSettings:
    database_url: str = DEFAULT_DATABASE_URL
    """DATABASE_URL: SQLAlchemy URL (mysql+pymysql://... or sqlite:///...)."""
    database_tls: DatabaseTls | None = None
    """DATABASE_TLS_CA, DATABASE_TLS_CERT, DATABASE_TLS_KEY: TLS to MySQL, as for every
    service (`withdrawal_shared.settings.StoreSettings.database_tls`)."""
    database_session_nice: bool = False
    """DATABASE_SESSION_NICE: the database server's threads of this service's sessions at its
    nice, as for every service (`withdrawal_shared.settings.StoreSettings`)."""
    grpc_host: str = "127.0.0.1"
    """SIGNER_GRPC_HOST."""
    grpc_port: int = 50052
    """SIGNER_GRPC_PORT: 0 picks a free port."""
    chain_id: int = 137
    """SIGNER_CHAIN_ID: the only EIP-155 chain id this signer signs for (137 = Polygon PoS)."""
    chain: str = "polygon"
    """SIGNER_CHAIN: the `chains.name` whose tokens and withdrawals this signer pays."""
    db_threads: int = 8
    """SIGNER_DB_THREADS: threads (and pooled connections) for database and signing work."""
    shutdown_grace_seconds: float = 10.0
    """SIGNER_SHUTDOWN_GRACE_SECONDS: in-flight RPCs get this long after SIGTERM."""
    role: str = ROLE_HOT
    """SIGNER_ROLE: `hot` (hot wallets' keys; SignTransaction) or `safe_owner` (exactly one
    owner key of the treasury Safe; SignSafeTransaction). Each refuses the other's RPC with
    FAILED_PRECONDITION `UNKNOWN_WALLET`."""
    key_backend: str = "keystore"
    """SIGNER_KEY_BACKEND: `keystore` (development default), `pkcs11` (HSM) or `aws_kms`."""
    keystore_path: str = str(_keystore.DEFAULT_KEYSTORE_PATH)
    """SIGNER_KEYSTORE_PATH: the encrypted keystore of the first hot wallet (created when
    missing). The password comes from SIGNER_KEYSTORE_PASSWORD, else from the password file
    below."""
    keystore_count: int = 1
    """SIGNER_KEYSTORE_COUNT: how many hot wallets (keystore keys) the signer holds, each with
    its own nonce sequence. Index 0 is SIGNER_KEYSTORE_PATH, index i >= 1 is `<stem>-<i>.json`
    beside it (e.g. keystore-1.json); all are created on first start, with the same password."""
    keystore_password_file: str = str(_keystore.DEFAULT_PASSWORD_FILE)
    """SIGNER_KEYSTORE_PASSWORD_FILE: generated (mode 0600) when missing and no password is set."""
    pkcs11_library: str = ""
    """SIGNER_PKCS11_LIBRARY: the PKCS#11 module; empty = SoftHSM2's module when found."""
    pkcs11_token_label: str = _pkcs11.DEFAULT_TOKEN_LABEL
    """SIGNER_PKCS11_TOKEN_LABEL."""
    pkcs11_key_label: str = _pkcs11.DEFAULT_KEY_LABEL
    """SIGNER_PKCS11_KEY_LABEL: the label of the key pair generated inside the token."""
    pkcs11_key_labels: tuple[str, ...] = ()
    """SIGNER_PKCS11_KEY_LABELS: comma-separated labels, one key pair (hot wallet) each, all on
    the same token; empty = just SIGNER_PKCS11_KEY_LABEL."""
    pkcs11_pin_file: str = ""
    """SIGNER_PKCS11_PIN_FILE: a file holding the user PIN, used when SIGNER_PKCS11_PIN is unset."""
    kms_key_ids: tuple[str, ...] = ()
    """SIGNER_KMS_KEY_IDS: with `aws_kms`, comma-separated KMS key ids, ARNs or aliases, one
    secp256k1 SIGN_VERIFY key (hot wallet) each; required then, refused with another backend."""
    kms_region: str = ""
    """SIGNER_KMS_REGION: with `aws_kms`, the keys' region; unset = AWS_REGION, else
    AWS_DEFAULT_REGION (one is required then)."""
    kms_endpoint_url: str = ""
    """SIGNER_KMS_ENDPOINT_URL: with `aws_kms`, another KMS endpoint than the region's own
    (https, or http to a loopback emulator in tests); empty = AWS KMS."""
    tls: TlsFiles | None = None
    """SIGNER_TLS_CA, SIGNER_TLS_CERT, SIGNER_TLS_KEY: PEM files; all three set serve gRPC over
    mutual TLS only (a client certificate from that CA required), none serves plaintext
    (`withdrawal_shared.tls`). `make up` and the harness set them; Kubernetes leaves them unset
    (Istio's mTLS carries the identity there)."""
    sign_clients: tuple[str, ...] = ("processor",)
    """SIGNER_SIGN_CLIENTS: comma-separated certificate names allowed to call SignTransaction
    (with TLS on; others get PERMISSION_DENIED `CALLER_NOT_ALLOWED`)."""
    list_clients: tuple[str, ...] = ("processor", "bootstrap")
    """SIGNER_LIST_WALLETS_CLIENTS: comma-separated certificate names allowed to call
    ListWallets (the processor, and the stack's bootstrap that funds the wallets)."""
    health_port: int = 0
    """SIGNER_HEALTH_PORT: with TLS on, the gRPC health service alone on this plaintext port
    (for probes without a certificate, such as kubelet's); 0 picks a free one."""

    @classmethod
    def from_env(cls) -> SignerSettings:
        d = cls()
        key_backend = (env_str(ENV_BACKEND, d.key_backend) or d.key_backend).strip().lower()
        if key_backend not in KEY_BACKENDS:
            raise SettingsError(
                f"{ENV_BACKEND}={key_backend!r} is not a key backend: use keystore, pkcs11 "
                "or aws_kms"
            )
        kms = _kms_settings(key_backend)
        try:
            key_labels = _pkcs11.parse_key_labels(env_str(_pkcs11.ENV_KEY_LABELS, ""))
        except _pkcs11.Pkcs11Error as exc:
            raise SettingsError(str(exc)) from None
        role = (env_str("SIGNER_ROLE", d.role) or d.role).strip().lower()
        if role not in ROLES:
            raise SettingsError(f"SIGNER_ROLE={role!r} is not a signer role: use hot or safe_owner")
        keystore_count = env_int(ENV_KEYSTORE_COUNT, d.keystore_count, minimum=1)
        kms_keys = len(kms.key_ids) if kms is not None else 0
        if role == ROLE_SAFE_OWNER and (keystore_count > 1 or len(key_labels) > 1 or kms_keys > 1):
            raise SettingsError(
                "SIGNER_ROLE=safe_owner holds exactly one owner key: leave SIGNER_KEYSTORE_COUNT "
                "at 1, SIGNER_PKCS11_KEY_LABELS at one label and SIGNER_KMS_KEY_IDS at one key "
                "(give each owner its own signer)"
            )
        database_url = env_str("DATABASE_URL", d.database_url)
        return cls(
            role=role,
            database_url=database_url,
            database_tls=database_tls_env(database_url),
            database_session_nice=env_bool("DATABASE_SESSION_NICE", d.database_session_nice),
            grpc_host=env_str("SIGNER_GRPC_HOST", d.grpc_host),
            grpc_port=env_int("SIGNER_GRPC_PORT", d.grpc_port, minimum=0),
            chain_id=env_int("SIGNER_CHAIN_ID", d.chain_id, minimum=1),
            chain=env_str("SIGNER_CHAIN", d.chain) or d.chain,
            db_threads=env_int("SIGNER_DB_THREADS", d.db_threads, minimum=1),
            shutdown_grace_seconds=env_float(
                "SIGNER_SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds
            ),
            key_backend=key_backend,
            keystore_path=env_str(ENV_KEYSTORE_PATH, d.keystore_path) or d.keystore_path,
            keystore_count=keystore_count,
            keystore_password_file=env_str(ENV_KEYSTORE_PASSWORD_FILE, d.keystore_password_file)
            or d.keystore_password_file,
            pkcs11_library=env_str(_pkcs11.ENV_LIBRARY, d.pkcs11_library),
            pkcs11_token_label=env_str(_pkcs11.ENV_TOKEN_LABEL, d.pkcs11_token_label)
            or d.pkcs11_token_label,
            pkcs11_key_label=env_str(_pkcs11.ENV_KEY_LABEL, d.pkcs11_key_label)
            or d.pkcs11_key_label,
            pkcs11_key_labels=key_labels,
            pkcs11_pin_file=env_str(_pkcs11.ENV_PIN_FILE, d.pkcs11_pin_file),
            kms_key_ids=kms.key_ids if kms else d.kms_key_ids,
            kms_region=kms.region if kms else d.kms_region,
            kms_endpoint_url=(kms.endpoint_url or "") if kms else d.kms_endpoint_url,
            tls=TlsFiles.from_env("SIGNER"),
            sign_clients=_names("SIGNER_SIGN_CLIENTS", d.sign_clients),
            list_clients=_names("SIGNER_LIST_WALLETS_CLIENTS", d.list_clients),
            health_port=env_int("SIGNER_HEALTH_PORT", d.health_port, minimum=0),
        )

    def key_environ(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment `svc_signer.keys.backends_from_env` opens the key backends from.

        These settings, plus the backend's secrets (SIGNER_KEYSTORE_PASSWORD,
        SIGNER_PKCS11_PIN) taken from `environ` (default: the process environment) at call time.
        """
        env = os.environ if environ is None else environ
        chosen = {
            ENV_BACKEND: self.key_backend,
            ENV_KEYSTORE_PATH: self.keystore_path,
            ENV_KEYSTORE_COUNT: str(self.keystore_count),
            ENV_KEYSTORE_PASSWORD_FILE: self.keystore_password_file,
            _pkcs11.ENV_LIBRARY: self.pkcs11_library,
            _pkcs11.ENV_TOKEN_LABEL: self.pkcs11_token_label,
            _pkcs11.ENV_KEY_LABEL: self.pkcs11_key_label,
            _pkcs11.ENV_KEY_LABELS: ",".join(self.pkcs11_key_labels),
            _pkcs11.ENV_PIN_FILE: self.pkcs11_pin_file,
            _kms.ENV_KEY_IDS: ",".join(self.kms_key_ids),
            _kms.ENV_REGION: self.kms_region,
            _kms.ENV_ENDPOINT_URL: self.kms_endpoint_url,
        }
        for name in _SECRET_ENV:
            value = env.get(name, "")
            if value:
                chosen[name] = value
        return chosen
