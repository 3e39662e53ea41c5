"""Regenerate the parts of docs/ rendered from code: the `## ON_HOLD reasons` section of
docs/operations.md, from the hold reason registry (`withdrawal_shared/holds.py`).

Only that section is rewritten (from its heading to the next `## ` heading); the rest of the
file is kept as it is. A file without the section gets it appended; a missing file is created
with only the section. `--check` changes nothing and exits 1 when the file differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from withdrawal_shared.holds import TABLE_HEADING, operations_table

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"


def with_section(document: str, section: str) -> str:
    """`document` with its `TABLE_HEADING` section replaced by `section` (or appended)."""
    lines = document.splitlines(keepends=True)
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == TABLE_HEADING)
    except StopIteration:
        prefix = document.rstrip("\n")
        return (prefix + "\n\n" if prefix else "") + section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + after if after else "")


def main(argv: list[str]) -> int:
    current = OPERATIONS.read_text(encoding="utf-8") if OPERATIONS.exists() else ""
    wanted = with_section(current, operations_table())
    if "--check" in argv:
        if current != wanted:
            print(f"{OPERATIONS.relative_to(ROOT)} is out of date: run scripts/gen_docs.py")
            return 1
        return 0
    if current != wanted:
        OPERATIONS.parent.mkdir(parents=True, exist_ok=True)
        OPERATIONS.write_text(wanted, encoding="utf-8")
        print(f"wrote {OPERATIONS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
