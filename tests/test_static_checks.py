"""The contracts and generated code: buf lint/format are clean and gen/ has no drift."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path


def test_buf_lint_and_format(repo_root: Path) -> None:
    buf = repo_root / "node_modules" / ".bin" / "buf"
    assert buf.exists(), "run `make deps` to install buf"
    lint = subprocess.run([buf, "lint"], cwd=repo_root, capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [buf, "format", "--diff", "--exit-code"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_generated_code_has_no_drift(repo_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    for name in ("proto", "scripts"):
        shutil.copytree(repo_root / name, copy / name)
    subprocess.run(
        [sys.executable, str(copy / "scripts" / "gen_proto.py")],
        check=True,
        capture_output=True,
    )
    comparison = filecmp.dircmp(repo_root / "gen", copy / "gen")
    problems: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        problems.extend(f"{prefix}{n}: only in gen/" for n in cmp.left_only if n != "__pycache__")
        problems.extend(f"{prefix}{n}: missing from gen/" for n in cmp.right_only)
        for name in cmp.common_files:
            left = Path(cmp.left) / name
            right = Path(cmp.right) / name
            if left.read_bytes() != right.read_bytes():
                problems.append(f"{prefix}{name}: differs")
        for name, sub in cmp.subdirs.items():
            if name != "__pycache__":
                walk(sub, f"{prefix}{name}/")

    walk(comparison, "gen/")
    assert problems == [], "run `make gen` and commit:\n" + "\n".join(problems)
