"""End-to-end fixtures: the pipeline on MariaDB, Redis and anvil, with the signer holding its
key in an encrypted keystore (in-process) or in SoftHSM2 (a `python -m svc_signer` process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.config import free_port
from tests.support.databases import mariadb_database
from tests.support.pipeline import Pipeline, running_pipeline
from tests.support.signers import keystore_signer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def e2e_database() -> Iterator[str]:
    with mariadb_database() as url:
        yield url


@pytest.fixture(scope="module")
def keystore_pipeline(
    e2e_database: str,
    redis_url: str,
    module_redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    with (
        keystore_signer(e2e_database, tmp_path_factory.mktemp("keystore")) as target,
        running_pipeline(e2e_database, redis_url, module_redis_prefix, target) as pipeline,
    ):
        yield pipeline


@pytest.fixture(scope="module")
def vault_pipeline(
    e2e_database: str,
    redis_url: str,
    module_redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """The pipeline paying through the PayoutVault: batches of at most 50 that close when
    full, after 30 s, or at once for a PRIORITY or EMERGENCY withdrawal."""
    with (
        keystore_signer(e2e_database, tmp_path_factory.mktemp("keystore")) as target,
        running_pipeline(
            e2e_database,
            redis_url,
            module_redis_prefix,
            target,
            payout_vault=True,
            batch_max_items=50,
            batch_max_wait_seconds=30,
        ) as pipeline,
    ):
        yield pipeline


def _wait_serving(target: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the signer exited ({process.returncode}):\n{log.read_text()}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            except grpc.RpcError:
                time.sleep(0.2)
                continue
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
    pytest.fail(f"the signer never became SERVING:\n{log.read_text()}")


@pytest.fixture(scope="module")
def hsm_pipeline(
    e2e_database: str,
    redis_url: str,
    module_redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    """The signer runs as its own process with a SoftHSM2 token provisioned for this test
    (SoftHSM2 reads its configuration once per process, so it cannot share the suite's)."""
    hsm_dir = tmp_path_factory.mktemp("hsm")
    provision = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from pathlib import Path; "
            "from svc_signer.keys.softhsm import provision_softhsm; "
            "t = provision_softhsm(Path(sys.argv[1]), token_label='e2e', key_label='hot-0'); "
            "print(json.dumps({'conf': str(t.conf_path), 'address': t.address}))",
            str(hsm_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert provision.returncode == 0, provision.stderr
    token = json.loads(provision.stdout.strip().splitlines()[-1])
    pin_file = next(hsm_dir.rglob("user.pin"))
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": e2e_database,
        "SIGNER_GRPC_PORT": str(port),
        "SIGNER_KEY_BACKEND": "pkcs11",
        "SOFTHSM2_CONF": token["conf"],
        "SIGNER_PKCS11_TOKEN_LABEL": "e2e",
        "SIGNER_PKCS11_KEY_LABEL": "hot-0",
        "SIGNER_PKCS11_PIN_FILE": str(pin_file),
    }
    log = hsm_dir / "signer.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "svc_signer"], env=env, stdout=out, stderr=out, cwd=REPO
        )
    target = f"127.0.0.1:{port}"
    try:
        _wait_serving(target, process, log)
        with running_pipeline(e2e_database, redis_url, module_redis_prefix, target) as pipeline:
            assert pipeline.hot_wallet.lower() == token["address"].lower()
            yield pipeline
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
