"""The AWS KMS key backend: a secp256k1 key that lives in AWS KMS and signs there.

The key is an asymmetric KMS key with `KeySpec=ECC_SECG_P256K1` and `KeyUsage=SIGN_VERIFY`;
its private half never leaves KMS. When a backend opens, `DescribeKey` checks the key (usage,
spec, state `Enabled`) and resolves an alias to the key's ARN once, so a later change of the
alias cannot swap the key under a running signer; `GetPublicKey` returns the public key (DER
SubjectPublicKeyInfo), from which the address is derived. Each signature is one `Sign` call
with `SigningAlgorithm=ECDSA_SHA_256` and `MessageType=DIGEST` over the 32-byte digest (KMS
signs the digest as given, it does not hash it again); the DER signature is decoded to
`(r, s)` (`cryptography`'s `decode_dss_signature`) and turned into a low-`s` signature with its
recovery id by `signature_from_raw_rs`, which also checks that it recovers to the public key.

- `AwsKmsSettings`: the key ids (one hot wallet each), the region and an optional endpoint
  URL (`from_env()`); credentials are never settings: boto3 finds them itself (IAM role,
  web identity, `AWS_*` environment).
- `kms_client()`: the process's one boto3 KMS client per (region, endpoint), created once and
  shared by every backend and thread (botocore clients are thread-safe).
- `AwsKmsBackend.open()`: a `KeyBackend` over one KMS key; it refuses a key of the wrong spec
  or usage, or one that is not enabled.

Every failure is an `AwsKmsError` (a `KeyBackendError`) whose message says what to do; its
`retryable` is true when trying again later can succeed (throttling, KMS or the network
unavailable). Messages carry key ids and AWS error codes only: never credentials, never AWS's
own error text (which can name principals), never key material.

Tested (tests/signer/test_aws_kms.py) against moto's KMS in server mode, except for one thing:
moto 5.2.6 signs sha256(digest) for `MessageType=DIGEST`, so the DER -> low-`s` + recovery id
path is tested on DER signatures of a local key; no signature by AWS KMS itself is tested.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from svc_signer.keys.backend import (
    KeyBackendError,
    Signature,
    address_from_public_key,
    check_digest,
    signature_from_raw_rs,
)

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

ENV_KEY_IDS = "SIGNER_KMS_KEY_IDS"
ENV_REGION = "SIGNER_KMS_REGION"
ENV_ENDPOINT_URL = "SIGNER_KMS_ENDPOINT_URL"
ENV_VARIABLES = (ENV_KEY_IDS, ENV_REGION, ENV_ENDPOINT_URL)
# boto3's own region variables, used when SIGNER_KMS_REGION is unset (in this order).
AWS_REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")

KEY_SPEC = "ECC_SECG_P256K1"
KEY_USAGE = "SIGN_VERIFY"
SIGNING_ALGORITHM: Final = "ECDSA_SHA_256"
CREATE_KEY_HINT = (
    f"create one with `aws kms create-key --key-spec {KEY_SPEC} --key-usage {KEY_USAGE}`"
)

# Signing runs while the signer holds its ledger transaction open, and the processor gives one
# signing RPC 10 s (PROCESSOR_SIGNER_TIMEOUT_SECONDS): every KMS call is bounded well below
# that, about 7 s at worst (two attempts of 1 s connect + 2 s read, and one backoff of <= 1 s).
CONNECT_TIMEOUT_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 2.0
MAX_ATTEMPTS = 2
"""Attempts per call in botocore's `standard` retry mode (throttling, 5xx and connection
errors are retried once, after a jittered backoff)."""
MAX_POOL_CONNECTIONS = 32
"""HTTP connections the shared client keeps: more than the signer's threads (SIGNER_DB_THREADS,
default 8), so concurrent signatures never wait for a connection."""

_REGION_PATTERN = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
_KMS_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:kms:(?P<region>[^:]*):[^:]*:(key|alias)/.+$")

# AWS error codes, by what the operator should do about them.
_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ExpiredToken",
        "MissingAuthenticationToken",
    }
)


class AwsKmsError(KeyBackendError):
    """A KMS key cannot be opened or used; the message says what to do next.

    `retryable`: the same call may succeed later without anyone changing anything (throttling,
    KMS or the network unavailable). The signer answers every signing failure with UNAVAILABLE
    `KEY_BACKEND_UNAVAILABLE` either way; the flag tells logs and callers of `open()` apart.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def parse_key_ids(text: str) -> tuple[str, ...]:
    """Comma-separated KMS key ids, ARNs or aliases (blanks around each ignored); raises
    AwsKmsError naming SIGNER_KMS_KEY_IDS on an empty or repeated entry."""
    if not text.strip():
        return ()
    key_ids = tuple(part.strip() for part in text.split(","))
    if any(not key_id for key_id in key_ids):
        raise AwsKmsError(f"{ENV_KEY_IDS}={text!r} has an empty key id")
    if len(set(key_ids)) != len(key_ids):
        raise AwsKmsError(f"{ENV_KEY_IDS}={text!r} names a key more than once")
    return key_ids


def check_endpoint_url(url: str) -> str:
    """`url` when it can be a KMS endpoint: https, or plain http to a loopback address only
    (an emulator in tests; credentials must never cross a network in clear text)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AwsKmsError(
            f"{ENV_ENDPOINT_URL}={url!r} is not an http(s) URL with a host; leave it unset to "
            "use AWS KMS's own endpoint for the region"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise AwsKmsError(
            f"{ENV_ENDPOINT_URL}={url!r} is plain http to a host other than this machine: "
            "use https (plain http is accepted for a loopback emulator only)"
        )
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AwsKmsSettings:
    """Which KMS keys the signer signs with (one hot wallet each), and where KMS is."""

    key_ids: tuple[str, ...]
    """Key ids, key ARNs or aliases (`alias/...`), in hot-wallet order."""
    region: str
    endpoint_url: str | None = None
    """Another endpoint than AWS KMS's own for the region (an emulator in tests)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsKmsSettings:
        """Read the settings from the environment; AwsKmsError names the variable at fault.

        `SIGNER_KMS_KEY_IDS` (comma-separated, at least one) is required; the region is
        `SIGNER_KMS_REGION`, else `AWS_REGION`, else `AWS_DEFAULT_REGION` (one is required);
        `SIGNER_KMS_ENDPOINT_URL` is optional (https, or http to a loopback address). A key ARN
        must be in that region.
        """
        env = os.environ if environ is None else environ
        key_ids = parse_key_ids(env.get(ENV_KEY_IDS, ""))
        if not key_ids:
            raise AwsKmsError(
                f"{ENV_KEY_IDS} is empty: with SIGNER_KEY_BACKEND=aws_kms name the KMS key "
                f"(id, ARN or alias/...) of every hot wallet, comma-separated ({CREATE_KEY_HINT})"
            )
        region = env.get(ENV_REGION, "").strip()
        source = ENV_REGION
        for name in AWS_REGION_VARIABLES:
            if region:
                break
            region, source = env.get(name, "").strip(), name
        if not region:
            raise AwsKmsError(
                f"no AWS region for KMS: set {ENV_REGION} (or AWS_REGION) to the region of the "
                f"keys in {ENV_KEY_IDS}"
            )
        if not _REGION_PATTERN.match(region):
            raise AwsKmsError(f"{source}={region!r} is not an AWS region name (e.g. eu-west-1)")
        for key_id in key_ids:
            arn = _KMS_ARN_PATTERN.match(key_id)
            if key_id.startswith("arn:") and arn is None:
                raise AwsKmsError(f"{ENV_KEY_IDS}: {key_id!r} is not a KMS key or alias ARN")
            if arn is not None and arn["region"] != region:
                raise AwsKmsError(
                    f"{ENV_KEY_IDS}: the key {key_id} is in region {arn['region']}, not in "
                    f"{region} ({source}): a key is used in its own region only"
                )
        endpoint = env.get(ENV_ENDPOINT_URL, "").strip()
        return cls(
            key_ids=key_ids,
            region=region,
            endpoint_url=check_endpoint_url(endpoint) if endpoint else None,
        )


CLIENT_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT_SECONDS,
    read_timeout=READ_TIMEOUT_SECONDS,
    retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
    max_pool_connections=MAX_POOL_CONNECTIONS,
)

# botocore's DEBUG records include every request's headers, among them the session token
# (X-Amz-Security-Token) of temporary credentials: they stay off even at LOG_LEVEL=DEBUG.
QUIET_LOGGERS = ("boto3", "botocore")

_clients_lock = threading.Lock()
_clients: dict[tuple[str, str | None], KMSClient] = {}


def kms_client(region: str, endpoint_url: str | None = None) -> KMSClient:
    """The process's KMS client for `region` (and `endpoint_url`): created on first use, then
    reused by every backend and thread. Credentials come from boto3's default chain."""
    key = (region, endpoint_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3  # slow to import (about a second): only when KMS is configured

            for name in QUIET_LOGGERS:
                quiet = logging.getLogger(name)
                if quiet.getEffectiveLevel() < logging.INFO:
                    quiet.setLevel(logging.INFO)
            # A session of its own: boto3's default session is not safe to share across threads.
            session = boto3.session.Session()
            client = session.client(
                "kms", region_name=region, endpoint_url=endpoint_url, config=CLIENT_CONFIG
            )
            _clients[key] = client
        return client


def kms_error(exc: BaseException, action: str, key_id: str) -> AwsKmsError:
    """The AwsKmsError for a boto3 failure of `action` (e.g. `kms:Sign`) on `key_id`."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "") or "unknown")
        return _client_error(code, action, key_id)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return AwsKmsError(
            f"no usable AWS credentials to call {action} ({type(exc).__name__}): run the signer "
            "with an IAM role (instance profile, EKS pod identity or IRSA) or the standard AWS_* "
            "credential variables"
        )
    if isinstance(exc, SSLError):
        return AwsKmsError(
            f"TLS to the KMS endpoint failed for {action} on {key_id} ({type(exc).__name__}): "
            f"check {ENV_ENDPOINT_URL} and the machine's CA certificates"
        )
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return AwsKmsError(
            f"KMS is unreachable for {action} on {key_id} ({type(exc).__name__}) after "
            f"{MAX_ATTEMPTS} attempts: retry later; if it persists check the network path to "
            f"KMS ({ENV_REGION}, {ENV_ENDPOINT_URL}, VPC endpoint or NAT)",
            retryable=True,
        )
    return AwsKmsError(f"{action} on KMS key {key_id} failed: {type(exc).__name__}")


def _client_error(code: str, action: str, key_id: str) -> AwsKmsError:
    if code == "AccessDeniedException":
        return AwsKmsError(
            f"access denied: the signer's AWS identity may not call {action} on KMS key "
            f"{key_id}; allow {action} on that key in its key policy or the role's IAM policy"
        )
    if code == "DisabledException":
        return AwsKmsError(
            f"KMS key {key_id} is disabled: enable it (`aws kms enable-key`) or remove it from "
            f"{ENV_KEY_IDS}"
        )
    if code == "KMSInvalidStateException":
        return AwsKmsError(
            f"KMS key {key_id} is not in a state that allows {action} (pending deletion or "
            f"import?): cancel its deletion (`aws kms cancel-key-deletion`, then enable it) or "
            f"remove it from {ENV_KEY_IDS}"
        )
    if code == "NotFoundException":
        return AwsKmsError(
            f"no KMS key {key_id} in this account and region: fix {ENV_KEY_IDS} or {ENV_REGION}"
        )
    if code in ("InvalidKeyUsageException", "UnsupportedOperationException"):
        return AwsKmsError(
            f"KMS key {key_id} cannot be used for {action} ({code}): the signer needs a "
            f"{KEY_SPEC} key with KeyUsage {KEY_USAGE}; {CREATE_KEY_HINT}"
        )
    if code in _CREDENTIAL_CODES:
        return AwsKmsError(
            f"AWS rejected the signer's credentials for {action} ({code}): check the IAM role "
            "or AWS_* credentials the signer runs with, and the machine's clock"
        )
    if code in _RETRYABLE_CODES:
        return AwsKmsError(
            f"KMS is throttling or unavailable ({code}) for {action} on {key_id}: retry later; "
            "if throttling persists, raise the account's KMS request quota for ECC "
            "cryptographic operations",
            retryable=True,
        )
    return AwsKmsError(f"KMS refused {action} on key {key_id} ({code})")


def public_key_from_der(der: bytes, key_id: str) -> bytes:
    """The uncompressed (65-byte) secp256k1 public key in a DER SubjectPublicKeyInfo."""
    try:
        loaded = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise AwsKmsError(
            f"GetPublicKey for KMS key {key_id} returned no readable public key"
        ) from None
    if not isinstance(loaded, ec.EllipticCurvePublicKey) or not isinstance(
        loaded.curve, ec.SECP256K1
    ):
        raise AwsKmsError(
            f"the public key of KMS key {key_id} is not on secp256k1; {CREATE_KEY_HINT}"
        )
    return loaded.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def signature_from_der(digest: bytes, der: bytes, public_key: bytes, key_id: str) -> Signature:
    """A DER ECDSA signature by `public_key` over `digest` as a `Signature` (low `s`, recovery
    id); raises AwsKmsError when it is malformed or not that key's signature of `digest`."""
    try:
        r, s = decode_dss_signature(der)
    except ValueError:
        raise AwsKmsError(f"KMS key {key_id} returned a malformed DER signature") from None
    try:
        return signature_from_raw_rs(digest, r, s, public_key)
    except KeyBackendError:
        raise AwsKmsError(
            f"the signature KMS returned for key {key_id} is not that key's signature of the "
            f"digest: check that {ENV_ENDPOINT_URL} (when set) is a KMS that signs a "
            "MessageType=DIGEST message as given"
        ) from None


class AwsKmsBackend:
    """A `KeyBackend` over one secp256k1 KMS key (`KeySpec=ECC_SECG_P256K1`, SIGN_VERIFY).

    Holds the shared client, the key's ARN and its public key; nothing else changes after
    `open()`, so `sign_digest` may be called from many threads at once (one `Sign` each).
    """

    backend_name = "aws_kms"

    def __init__(self, client: KMSClient, key_id: str, key_arn: str, public_key: bytes) -> None:
        self._client = client
        self._key_id = key_id
        self._key_arn = key_arn
        self._public_key = public_key
        self._address = address_from_public_key(public_key)

    def __repr__(self) -> str:
        return f"AwsKmsBackend(address={self._address!r}, key_arn={self._key_arn!r})"

    @classmethod
    def open(cls, client: KMSClient, key_id: str) -> AwsKmsBackend:
        """Check the key (`DescribeKey`) and read its public key (`GetPublicKey`).

        Raises AwsKmsError when the key is missing, not secp256k1, not for signing, not
        enabled, or KMS cannot be reached or refuses the calls.
        """
        try:
            metadata = client.describe_key(KeyId=key_id)["KeyMetadata"]
        except (ClientError, BotoCoreError) as exc:
            raise kms_error(exc, "kms:DescribeKey", key_id) from None
        spec = metadata.get("KeySpec") or metadata.get("CustomerMasterKeySpec", "")
        usage = metadata.get("KeyUsage", "")
        if usage != KEY_USAGE:
            raise AwsKmsError(
                f"KMS key {key_id} has KeyUsage {usage}, not {KEY_USAGE}: it cannot sign, and a "
                f"key's usage cannot be changed; {CREATE_KEY_HINT} and name it in {ENV_KEY_IDS}"
            )
        if spec != KEY_SPEC:
            raise AwsKmsError(
                f"KMS key {key_id} is a {spec} key, not {KEY_SPEC} (secp256k1, the curve of "
                f"Ethereum signatures): {CREATE_KEY_HINT} and name it in {ENV_KEY_IDS}"
            )
        state = metadata.get("KeyState") or ("Enabled" if metadata.get("Enabled") else "Disabled")
        if state == "Disabled":
            raise _client_error("DisabledException", "kms:Sign", key_id)
        if state != "Enabled":
            raise AwsKmsError(
                f"KMS key {key_id} is {state}, not Enabled: the signer cannot sign with it; "
                f"cancel a pending deletion (`aws kms cancel-key-deletion`, then enable it) or "
                f"remove it from {ENV_KEY_IDS}"
            )
        key_arn = str(metadata.get("Arn") or key_id)
        try:
            response = client.get_public_key(KeyId=key_arn)
        except (ClientError, BotoCoreError) as exc:
            raise kms_error(exc, "kms:GetPublicKey", key_id) from None
        public_key = public_key_from_der(bytes(response["PublicKey"]), key_id)
        return cls(client, key_id, key_arn, public_key)

    @property
    def address(self) -> str:
        """The key's checksummed address, derived from its GetPublicKey public key."""
        return self._address

    @property
    def public_key(self) -> bytes:
        """The key's uncompressed (65-byte) public key."""
        return self._public_key

    @property
    def key_id(self) -> str:
        """The key as configured (id, ARN or alias)."""
        return self._key_id

    @property
    def key_arn(self) -> str:
        """The key's ARN, resolved at `open()`; every `Sign` names the key by it."""
        return self._key_arn

    def sign_digest(self, digest: bytes) -> Signature:
        """Sign a 32-byte digest with KMS (`ECDSA_SHA_256`, `MessageType=DIGEST`); low `s`,
        recovery id in {0, 1}."""
        digest = check_digest(digest)
        try:
            response = self._client.sign(
                KeyId=self._key_arn,
                Message=digest,
                MessageType="DIGEST",
                SigningAlgorithm=SIGNING_ALGORITHM,
            )
        except (ClientError, BotoCoreError) as exc:
            raise kms_error(exc, "kms:Sign", self._key_id) from None
        return signature_from_der(
            digest, bytes(response["Signature"]), self._public_key, self._key_id
        )
