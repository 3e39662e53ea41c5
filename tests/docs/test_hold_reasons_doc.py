"""docs/operations.md lists exactly the hold reasons of the registry, as the registry words
them: its `## ON_HOLD reasons` section is rendered by scripts/gen_docs.py."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from withdrawal_shared.holds import TABLE_HEADING, HoldReason, operations_table

HEADER = "| reason | what it means | what an operator does |"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|")
FIX = "run `.venv/bin/python scripts/gen_docs.py` and commit docs/operations.md"


def _section(document: str) -> list[str]:
    lines = document.splitlines()
    assert TABLE_HEADING in lines, f"docs/operations.md has no {TABLE_HEADING!r}: {FIX}"
    start = lines.index(TABLE_HEADING) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def test_the_documented_hold_reasons_are_the_registry(repo_root: Path) -> None:
    section = _section((repo_root / "docs" / "operations.md").read_text(encoding="utf-8"))
    table = [line.strip() for line in section if line.strip().startswith("|")]
    assert table and table[0] == HEADER, f"the table must start with {HEADER!r}"
    documented = [m.group(1) for line in table[2:] if (m := ROW.match(line))]
    assert len(documented) == len(table) - 2, "every row names one reason in backticks"
    assert len(documented) == len(set(documented)), "a reason is listed twice"
    registry = {r.value for r in HoldReason}
    assert set(documented) == registry, (
        f"missing from the doc: {sorted(registry - set(documented))}; "
        f"not in the registry: {sorted(set(documented) - registry)}; {FIX}"
    )


def test_the_doc_is_what_the_script_renders(repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}{result.stderr}; {FIX}"


def test_the_script_rewrites_only_its_section(repo_root: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_docs", repo_root / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    gen_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_docs)
    table = operations_table()
    before = "# Operations\n\nIntro.\n\n"
    after = "## Runbooks\n\nKeep me.\n"
    stale = before + f"{TABLE_HEADING}\n\n| reason | old |\n\n" + after
    assert gen_docs.with_section(stale, table) == before + table + "\n" + after
    assert gen_docs.with_section(before + table, table) == before + table
    assert gen_docs.with_section("# Operations\n", table) == "# Operations\n\n" + table
    assert gen_docs.with_section("", table) == table
