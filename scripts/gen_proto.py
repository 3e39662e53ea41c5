"""Regenerate everything derived from proto/: the vendored third-party protos and gen/.

One command (`make gen`) runs this. It is deterministic, so `make gen-check` can run it and
fail on any diff. Never edit gen/ or third_party/proto/ by hand.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import google.api
import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
VENDOR = ROOT / "third_party" / "proto"
GEN = ROOT / "gen"

# Protos vendored from googleapis-common-protos (pinned in requirements.lock), because buf's
# remote dependencies are not reachable here. buf.yaml keeps this module out of lint/breaking.
VENDORED = [
    "google/api/annotations.proto",
    "google/api/field_behavior.proto",
    "google/api/http.proto",
    "google/api/resource.proto",
    "google/rpc/code.proto",
    "google/rpc/error_details.proto",
    "google/rpc/status.proto",
]


def vendor() -> None:
    source_root = Path(google.api.__path__[0]).parent.parent
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    for rel in VENDORED:
        target = VENDOR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_root / rel, target)


def generate() -> None:
    if GEN.exists():
        shutil.rmtree(GEN)
    GEN.mkdir()
    sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
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
        f"--python_out={GEN}",
        f"--grpc_python_out={GEN}",
        f"--mypy_out={GEN}",
        f"--mypy_grpc_out={GEN}",
        # Descriptors with comments, for the OpenAPI document and REST transcoding.
        f"--descriptor_set_out={GEN / 'assetwithdrawal' / 'descriptors.binpb'}",
        "--include_source_info",
        "--include_imports",
        *sources,
    ]
    (GEN / "assetwithdrawal").mkdir()
    subprocess.run(cmd, check=True, cwd=PROTO, stdout=subprocess.DEVNULL)
    # Make every generated directory a regular package, typed (PEP 561).
    for directory in sorted({p.parent for p in GEN.rglob("*_pb2.py")}):
        d = directory
        while d != GEN:
            (d / "__init__.py").touch()
            d = d.parent
    (GEN / "assetwithdrawal" / "py.typed").touch()
    readme = GEN / "README.md"
    readme.write_text(
        "# gen/\n\nGenerated from `proto/` by `make gen` (scripts/gen_proto.py). "
        "Do not edit; CI fails on drift.\n"
    )


def main() -> None:
    vendor()
    generate()
    print(f"generated {sum(1 for _ in GEN.rglob('*.py'))} modules under gen/")


if __name__ == "__main__":
    main()
