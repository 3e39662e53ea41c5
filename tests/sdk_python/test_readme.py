"""sdk/python/README.md: its complete example runs, unchanged, against a real stack (a
separate Python process with only the SDK imported, the key and target in its environment),
and every other Python block of the README at least compiles."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.sdk_python.conftest import Stack

README = Path(__file__).resolve().parents[2] / "sdk" / "python" / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _complete_example() -> str:
    text = README.read_text()
    marker = text.index("<!-- example: complete -->")
    match = BLOCK.search(text, marker)
    assert match is not None
    return match.group(1)


def test_every_python_block_compiles() -> None:
    blocks = BLOCK.findall(README.read_text())
    assert len(blocks) >= 4
    for number, block in enumerate(blocks):
        compile(block, f"README.md block {number}", "exec")


def test_the_complete_example_runs_against_the_stack(stack: Stack, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_complete_example())
    env = {
        **os.environ,
        "ASSETWITHDRAWAL_API_KEY": stack.partner.api_key,
        "ASSETWITHDRAWAL_TARGET": stack.grpc_target,
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "STATE_COMPLETED" in out and "paid in 0x" in out, out
    assert "listed withdrawals/" in out
    assert "bad field: withdrawal.amount" in out and "not found: NOT_FOUND" in out
