"""The signer over mutual TLS (`withdrawal_shared.tls`): only a client presenting a certificate
of the local CA gets through the handshake, each method answers only the identities the
settings allow (`CALLER_NOT_ALLOWED` otherwise), and the health service alone answers in
plaintext on a port of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from assetwithdrawal.signer.v1 import signer_pb2, signer_pb2_grpc
from svc_signer.keys.keystore import KeystoreBackend
from svc_signer.settings import SignerSettings
from tests.signer.support import RunningSigner
from tests.support.requests import rich_error
from withdrawal_shared.tls import TlsFiles, issue_local_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    return issue_local_pki(tmp_path_factory.mktemp("tls"), ("signer", "processor", "bootstrap"))


@pytest.fixture(scope="module")
def tls_signer(
    db_url: str, keystore_backend: KeystoreBackend, pki: dict[str, TlsFiles]
) -> Iterator[RunningSigner]:
    settings = SignerSettings(
        database_url=db_url, grpc_port=0, shutdown_grace_seconds=1.0, tls=pki["signer"]
    )
    running = RunningSigner(settings, keystore_backend)
    yield running
    running.close()


def _stub(signer: RunningSigner, files: TlsFiles | None) -> signer_pb2_grpc.SignerServiceStub:
    channel = (
        grpc.insecure_channel(signer.target)
        if files is None
        else grpc.secure_channel(signer.target, files.channel_credentials())
    )
    return signer_pb2_grpc.SignerServiceStub(channel)


def test_the_processor_lists_and_reaches_signing(
    tls_signer: RunningSigner, pki: dict[str, TlsFiles]
) -> None:
    stub = _stub(tls_signer, pki["processor"])
    wallets = stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=10).wallets
    assert [w.address for w in wallets] == [tls_signer.server.backend.address]
    with pytest.raises(grpc.RpcError) as refused:  # an empty request: the policy refuses it
        stub.SignTransaction(signer_pb2.SignTransactionRequest(), timeout=10)
    code, info, _ = rich_error(refused.value)
    assert info.reason != "CALLER_NOT_ALLOWED", (code, info)


def test_another_identity_is_refused_by_method(
    tls_signer: RunningSigner, pki: dict[str, TlsFiles]
) -> None:
    stub = _stub(tls_signer, pki["bootstrap"])
    assert stub.ListWallets(signer_pb2.ListWalletsRequest(), timeout=10).wallets
    with pytest.raises(grpc.RpcError) as refused:
        stub.SignTransaction(signer_pb2.SignTransactionRequest(), timeout=10)
    code, info, _ = rich_error(refused.value)
    assert (code, info.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    assert info.metadata["caller"] == "bootstrap"
    # The signer's own certificate is of the CA too, and still not a caller.
    with pytest.raises(grpc.RpcError) as listed:
        _stub(tls_signer, pki["signer"]).ListWallets(signer_pb2.ListWalletsRequest(), timeout=10)
    assert rich_error(listed.value)[1].reason == "CALLER_NOT_ALLOWED"


def test_no_certificate_or_another_cas_is_refused_at_the_handshake(
    tls_signer: RunningSigner, tmp_path: Path
) -> None:
    with pytest.raises(grpc.RpcError) as plaintext:
        _stub(tls_signer, None).ListWallets(signer_pb2.ListWalletsRequest(), timeout=5)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    # A "processor" certificate from a CA the signer does not trust.
    impostor = issue_local_pki(tmp_path / "other-ca", ("processor",))["processor"]
    with pytest.raises(grpc.RpcError) as untrusted:
        _stub(tls_signer, impostor).ListWallets(signer_pb2.ListWalletsRequest(), timeout=5)
    assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_health_alone_answers_in_plaintext(tls_signer: RunningSigner) -> None:
    target = f"127.0.0.1:{tls_signer.server.health_port}"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        signer = signer_pb2_grpc.SignerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as absent:
            signer.ListWallets(signer_pb2.ListWalletsRequest(), timeout=5)
    assert absent.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_partial_tls_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, pki: dict[str, TlsFiles]
) -> None:
    from withdrawal_shared.settings import SettingsError

    monkeypatch.setenv("SIGNER_TLS_CA", str(pki["signer"].ca))
    with pytest.raises(SettingsError, match="SIGNER_TLS_CERT, SIGNER_TLS_KEY unset"):
        TlsFiles.from_env("SIGNER")
