"""What the container image holds and how it runs, tested without a container builder.

The Dockerfile is read for its shape (slim base, locked dependencies, compiled contracts,
a numeric non-root user, no secrets); then the image's contents are laid out in a temporary
directory as its build stage would (the wheel built from the files the Dockerfile copies,
the contract artifacts where AWS_CONTRACTS_DIR points), made read-only, and the migration
and the signer are run from it as a non-root user with only AWS_VAR_DIR writable. The
signer must reach SERVING on its gRPC health service and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.config import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
IMAGE_USER = 10001
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|PIN\b|PRIVATE|CREDENTIAL|API_KEY", re.I)


def stages(text: str) -> dict[str, list[str]]:
    """Instructions of each stage, by its name (`AS name`), continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found: dict[str, list[str]] = {}
    current = ""
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(2) or m.group(1)
            found[current] = [line]
        elif current:
            found[current].append(line)
    return found


def dockerfile_problems(text: str) -> list[str]:
    """What is wrong with the Dockerfile's shape (empty when nothing)."""
    problems: list[str] = []
    found = stages(text)
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", text)
    if not base or not re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base.group(1)):
        problems.append("the base image is not a pinned python:3.x-slim")
    build = found.get("build", [])
    if not any("requirements.lock" in i and "--constraint" in i for i in build):
        problems.append("the build stage does not install under requirements.lock")
    runtime = found.get("runtime", [])
    users = [i.split(None, 1)[1] for i in runtime if i.upper().startswith("USER ")]
    if not users or not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]):
        problems.append("the runtime stage does not end as a numeric non-root USER")
    if not any(i.startswith("COPY contracts/build/") for i in runtime):
        problems.append("the compiled contracts are not copied into the runtime stage")
    if not any("AWS_CONTRACTS_DIR=" in i for i in runtime):
        problems.append("AWS_CONTRACTS_DIR is not set")
    for stage, instructions in found.items():
        for i in instructions:
            word = i.split(None, 1)[0].upper()
            if word in ("ENV", "ARG") and SECRET_WORDS.search(i):
                problems.append(f"{stage}: a secret-like variable in {i!r}")
            if word == "USER" and re.search(r"\b(root|0)\b", i):
                problems.append(f"{stage}: runs as root")
            if word == "CMD":
                module = json.loads(i.split(None, 1)[1])[-1]
                if (
                    not (REPO / module.replace(".", "/")).with_suffix(".py").exists()
                    and not (REPO / module).is_dir()
                ):
                    problems.append(f"{stage}: CMD runs {module}, which does not exist")
    return problems


def build_context(text: str) -> list[str]:
    """The repository paths the build stages copy from the context."""
    paths: list[str] = []
    for instructions in stages(text).values():
        for i in instructions:
            if i.startswith("COPY ") and "--from=" not in i:
                paths.extend(p.rstrip("/") for p in i.split()[1:-1])
    return paths


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text) == []
    service_targets = {
        name for name, ins in stages(text).items() if any("svc_" in i for i in ins if "CMD" in i)
    }
    assert service_targets == {"gateway", "processor", "signer", "monitor", "webhooks"}


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("USER 10001:10001", "USER root", "numeric non-root"),
        ("python:3.11-slim-bookworm", "python:3.11", "slim"),
        ("--constraint requirements.lock ", "", "requirements.lock"),
        ("COPY contracts/build/", "COPY contracts/", "compiled contracts"),
        ("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 SIGNER_KEYSTORE_PASSWORD=x", "secret-like"),
        ('"svc_monitor"]', '"svc_nowhere"]', "does not exist"),
    ],
)
def test_dockerfile_check_fails_on_a_bad_image(old: str, new: str, problem: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    problems = dockerfile_problems(text.replace(old, new))
    assert any(problem in p for p in problems), problems


def test_dockerignore_admits_only_the_build_context() -> None:
    lines = [
        ln.strip()
        for ln in DOCKERIGNORE.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "the context starts empty; each copied path is admitted by name"
    admitted = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for path in build_context(DOCKERFILE.read_text()):
        assert path in admitted, f"{path} is copied but excluded by .dockerignore"
    for never in ("var", ".venv", ".git", "node_modules", "tests", "mesh"):
        assert never not in admitted
    for pattern in ("**/*.key", "**/*.pem", "**/keystore*.json", "**/.env*"):
        assert pattern in lines


def _as_image_user() -> list[str]:
    """Run as the image's user when root (setpriv); as oneself otherwise."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={IMAGE_USER}", f"--regid={IMAGE_USER}", "--clear-groups", "--"]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def _make_read_only(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)


@contextlib.contextmanager
def traversable(*paths: Path) -> Iterator[None]:
    """Let any user pass through the directories above `paths` while the image user runs
    (a checkout or venv under a private directory, such as a `mktemp -d` clone, would hide
    the dependencies from it); the modes are put back afterwards."""
    changed: dict[Path, int] = {}
    for path in paths:
        for parent in path.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & 0o001 and parent not in changed and parent.owner() == "root":
                changed[parent] = mode
                parent.chmod(mode | 0o001)
    try:
        yield
    finally:
        for parent, mode in changed.items():
            with contextlib.suppress(OSError):
                parent.chmod(mode & 0o7777)


@pytest.fixture(scope="module", autouse=True)
def _dependencies_reachable() -> Iterator[None]:
    with traversable(Path(sysconfig.get_paths()["purelib"]), REPO):
        yield


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image's files: /opt/venv's project package (from the wheel) and
    /opt/aws/contracts/build, read-only; the dependencies come from the project's venv."""
    top = Path(tempfile.mkdtemp(prefix="aws-image-"))
    top.chmod(0o755)
    try:
        context = top / "context"
        for rel in build_context(DOCKERFILE.read_text()):
            if rel in ("requirements.lock", "contracts/build"):
                continue
            src = REPO / rel
            if src.is_dir():
                shutil.copytree(src, context / rel, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, context / rel)
        dist = top / "dist"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--quiet",
                "--wheel-dir",
                str(dist),
                str(context),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        wheels = list(dist.glob("*.whl"))
        assert len(wheels) == 1, wheels
        root = top / "image"
        lib = root / "opt" / "venv" / "site-packages"
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(lib)
        shutil.copytree(REPO / "contracts" / "build", root / "opt/aws/contracts/build")
        _make_read_only(root)
        var = top / "var"
        var.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(var, IMAGE_USER, IMAGE_USER)
        yield top
    finally:
        for p in [top, *top.rglob("*")]:
            with contextlib.suppress(OSError):
                p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(top, ignore_errors=True)


def _env(top: Path, **extra: str) -> dict[str, str]:
    venv_site = sysconfig.get_paths()["purelib"]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "TMPDIR": str(top / "var"),
        "PYTHONPATH": os.pathsep.join([str(top / "image/opt/venv/site-packages"), venv_site]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_VAR_DIR": str(top / "var"),
        "AWS_CONTRACTS_DIR": str(top / "image/opt/aws/contracts/build"),
        **extra,
    }


def _python(*args: str) -> list[str]:
    # -S: no site-packages of the venv (where the editable install of the repository
    # lives); the dependencies come only through PYTHONPATH, after the image's package.
    return [*_as_image_user(), sys.executable, "-S", *args]


def test_the_package_comes_from_the_image(image: Path) -> None:
    probe = (
        "import json, svc_signer, withdrawal_shared.chain.contracts as c, "
        "withdrawal_shared.settings as s; "
        "print(json.dumps([svc_signer.__file__, str(c.BUILD_DIR), str(s.VAR_DIR), "
        "c.load_artifact('PayoutVault').contract_name]))"
    )
    out = subprocess.run(
        _python("-c", probe),
        cwd=image / "image",
        env=_env(image),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    module, contracts, var, vault = json.loads(out.stdout)
    assert module.startswith(str(image / "image/opt/venv/site-packages")), module
    assert contracts == str(image / "image/opt/aws/contracts/build")
    assert var == str(image / "var")
    assert vault == "PayoutVault"


def test_signer_serves_from_a_read_only_image_as_non_root(image: Path) -> None:
    before = _snapshot(image / "image")
    migrate = subprocess.run(
        _python("-m", "withdrawal_shared.db.migrate"),
        cwd=image / "image",
        env=_env(image),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]

    port = free_port()
    proc = subprocess.Popen(
        _python("-m", "svc_signer"),
        cwd=image / "image",
        env=_env(image, SIGNER_GRPC_PORT=str(port), SIGNER_KEYSTORE_COUNT="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status = None
        deadline = time.monotonic() + 90
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(grpc.RpcError):
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if status.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                time.sleep(0.3)
        assert status is not None and status.status == health_pb2.HealthCheckResponse.SERVING, (
            proc.stdout.read() if proc.poll() is not None and proc.stdout else "no answer"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
    assert _snapshot(image / "image") == before, "the image directory was written to"
    written = {p.relative_to(image / "var").as_posix() for p in (image / "var").rglob("*")}
    assert {"withdrawals.sqlite3", "signer/keystore.json"} <= written
    if os.geteuid() == 0:
        assert (image / "var/signer/keystore.json").stat().st_uid == IMAGE_USER
