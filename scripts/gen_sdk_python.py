"""Regenerate the Python SDK's own protobuf and gRPC modules from proto/.

`make sdk-python-gen` runs this. The partner-facing protos (WithdrawalService, BatchService,
WebhookService) are compiled with the pinned grpcio-tools and mypy-protobuf, exactly as
scripts/gen_proto.py compiles gen/, into `sdk/python/src/assetwithdrawal_sdk/_gen/`; then
every import of the top-level `assetwithdrawal` package is rewritten to
`assetwithdrawal_sdk._gen.assetwithdrawal`, so the SDK never imports (or collides with) the
server's generated package. The descriptors are the same bytes as gen/'s: a process holding
both (our tests) shares one set of message classes. Deterministic: tests/sdk_python fails on
any drift (`--out DIR` writes elsewhere for that comparison).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
VENDOR = ROOT / "third_party" / "proto"
DEFAULT_OUT = ROOT / "sdk" / "python" / "src" / "assetwithdrawal_sdk" / "_gen"
PACKAGE = "assetwithdrawal_sdk._gen"
SOURCES = [
    "assetwithdrawal/withdrawal/v1/withdrawal.proto",
    "assetwithdrawal/withdrawal/v1/batch.proto",
    "assetwithdrawal/webhooks/v1/webhooks.proto",
]
_IMPORT = re.compile(r"^(from|import) assetwithdrawal\.", re.MULTILINE)
_MODULE_NAME = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'assetwithdrawal\.")


def rewrite(text: str) -> str:
    text = _IMPORT.sub(rf"\1 {PACKAGE}.assetwithdrawal.", text)
    return _MODULE_NAME.sub(rf"\1'{PACKAGE}.assetwithdrawal.", text)


def generate(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    bin_dir = Path(sys.executable).parent
    wkt = Path(grpc_tools.__path__[0]) / "_proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{VENDOR}",
        f"-I{wkt}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *SOURCES,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO, stdout=subprocess.DEVNULL)
    for path in sorted(out.rglob("*.py*")):
        path.write_text(rewrite(path.read_text()))
    for directory in sorted({p.parent for p in out.rglob("*_pb2.py")}):
        d = directory
        while d != out.parent:
            (d / "__init__.py").touch()
            d = d.parent
    (out / "README.md").write_text(
        "# _gen/\n\nGenerated from `proto/` by `make sdk-python-gen` "
        "(scripts/gen_sdk_python.py). Do not edit; tests/sdk_python fails on drift.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    generate(args.out)
    print(f"generated {sum(1 for _ in args.out.rglob('*.py'))} modules under {args.out}")


if __name__ == "__main__":
    main()
