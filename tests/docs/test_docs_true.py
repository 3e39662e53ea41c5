"""The docs stay true to the code: settings, metrics, make targets, links, no diary.

Each check compares two lists both ways and names every difference, so adding a setting, a
metric or a target without documenting it fails, and so does documenting one that is gone.

Rules:
- Configuration: every environment variable read under `svc_*`, `withdrawal_shared`,
  `devstack`, `bench`, `chaos` and `awctl` (see `scan.code_dirs`) is a row of a table in the
  `## Configuration` section of docs/operations.md, and every row there is read by the code.
  The tooling's variables (bench, chaos) have a table of their own in that section. A name
  the code builds per service (`f"{prefix}_NICE"`) is documented as `<SERVICE>_NICE`.
- Metrics: every instrument the code creates is a row of the `## Metrics` table of
  docs/operations.md under its Prometheus name (counters end in `_total`), and vice versa.
- Make targets: every Makefile target with a `## description` (what `make help` lists) is a
  row of the `## Make targets` table of docs/development.md, and vice versa.
- README.md has at most 220 lines; every relative link of README.md and docs/*.md resolves
  to a file inside the repository.
- No tracked file carries working-period diary wording (a numbered working period or issue);
  the pattern is assembled from pieces so that this file does not match it either.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.docs import scan

REPO = scan.REPO
OPERATIONS = REPO / "docs" / "operations.md"
DEVELOPMENT = REPO / "docs" / "development.md"
README = REPO / "README.md"
README_MAX_LINES = 220
_SESSION, _ISSUE = "sess" + "ion", "iss" + "ue"
DIARY = re.compile(
    rf"{_SESSION} [0-9]|this {_SESSION}|earlier {_SESSION}|{_ISSUE} [0-9]", re.IGNORECASE
)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_MAKE_TARGET = re.compile(r"^([a-z][a-z0-9-]*):.*## ", re.MULTILINE)


def doc_pages() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def documented_variables(markdown: str) -> set[str]:
    names = scan.first_column_names(scan.section(markdown, "Configuration"))
    return {n for n in names if re.fullmatch(r"[A-Z<][A-Z0-9_<>]*", n)}


def documented_metrics(markdown: str) -> set[str]:
    names = scan.first_column_names(scan.section(markdown, "Metrics"))
    return {n.split("{", 1)[0] for n in names}


def documented_targets(markdown: str) -> set[str]:
    return set(
        scan.first_column_names(scan.section(markdown, "Make targets"), r"`make ([a-z0-9-]+)`")
    )


def makefile_targets(makefile: str) -> set[str]:
    return set(_MAKE_TARGET.findall(makefile))


def broken_links(page: Path, repo: Path = REPO) -> list[str]:
    broken: list[str] = []
    text = page.read_text(encoding="utf-8")
    # Links inside code blocks are examples, not links.
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        path = target.split("#", 1)[0]
        resolved = (page.parent / path).resolve()
        if not resolved.is_relative_to(repo):
            broken.append(f"{page.name}: {target} leaves the repository")
        elif not resolved.exists():
            broken.append(f"{page.name}: {target} does not exist")
    return broken


def tracked_text_files(repo: Path = REPO) -> list[Path]:
    """Every file git tracks, except binary ones (generated descriptors, images)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True
    ).stdout.split(b"\0")
    files = [repo / name.decode() for name in listed if name]
    return [f for f in files if f.is_file() and b"\0" not in f.read_bytes()[:8192]]


def diary_lines(page: Path) -> list[str]:
    return [
        f"{page.relative_to(REPO)}:{number}: {line.strip()}"
        for number, line in enumerate(
            page.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if DIARY.search(line)
    ]


# ---------------------------------------------------------------- the checks


def test_every_environment_variable_is_documented_and_every_documented_one_is_read() -> None:
    in_code = set(scan.env_reads(scan.python_files(scan.code_dirs())))
    documented = documented_variables(OPERATIONS.read_text(encoding="utf-8"))
    assert in_code == documented, scan.diff_message(
        "Environment variables read by the code",
        in_code,
        documented,
        "the tables of '## Configuration' in docs/operations.md",
    )


def test_every_metric_is_documented_and_every_documented_one_exists() -> None:
    in_code = set(scan.metric_names(scan.python_files(scan.code_dirs())))
    documented = documented_metrics(OPERATIONS.read_text(encoding="utf-8"))
    assert in_code, "no metric definition found: the scan is broken"
    assert in_code == documented, scan.diff_message(
        "Metrics defined in the code", in_code, documented, "'## Metrics' in docs/operations.md"
    )


def test_every_make_target_is_documented_and_every_documented_one_exists() -> None:
    in_makefile = makefile_targets((REPO / "Makefile").read_text(encoding="utf-8"))
    documented = documented_targets(DEVELOPMENT.read_text(encoding="utf-8"))
    assert in_makefile, "no '## ' target found in the Makefile: the scan is broken"
    assert in_makefile == documented, scan.diff_message(
        "Makefile targets with a '## ' description",
        in_makefile,
        documented,
        "'## Make targets' in docs/development.md",
    )


def test_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_no_diary_wording_anywhere_in_the_repository() -> None:
    found = [line for path in tracked_text_files() for line in diary_lines(path)]
    assert found == [], "state what is true now, without working-period history:\n" + "\n".join(
        found
    )


# ---------------------------------------------------------------- the checks can fail


def test_the_scans_see_what_they_must(tmp_path: Path) -> None:
    """The readers find each form of a read, and the comparisons name both directions."""
    module = tmp_path / "sample.py"
    module.write_text(
        "import os\n"
        'ENV_TOKEN = "SAMPLE_TOKEN"\n'
        "def _port(var, default):\n"
        "    return int(os.environ.get(var) or default)\n"
        'a = env_int("SAMPLE_INT", 1)\n'
        'b = os.environ["SAMPLE_ITEM"]\n'
        'c = os.getenv("SAMPLE_GETENV")\n'
        'd = _port("SAMPLE_PORT", 1)\n'
        'e = env_str(f"{prefix}_SAMPLE", "")\n'
        'f = meter.create_counter("sample_events")\n',
        encoding="utf-8",
    )
    reads = set(scan.env_reads([module]))
    metrics = set(scan.metric_names([module]))
    assert reads == {
        "SAMPLE_TOKEN",
        "SAMPLE_INT",
        "SAMPLE_ITEM",
        "SAMPLE_GETENV",
        "SAMPLE_PORT",
        "<SERVICE>_SAMPLE",
    }
    assert metrics == {"sample_events_total"}
    message = scan.diff_message("x", {"A", "B"}, {"B", "C"}, "y")
    assert "not documented: A" in message and "not in the code: C" in message

    page = tmp_path / "page.md"
    page.write_text(
        "## Configuration\n\n| variable | default |\n| --- | --- |\n| `ONE` | 1 |\n"
        "## Metrics\n\n| metric | meaning |\n| --- | --- |\n| `m_total{a}` | x |\n"
        "## Make targets\n\n| target | does |\n| --- | --- |\n| `make up` | runs |\n"
        "[gone](missing.md) [out](../../x.md) [web](https://example.com) " + _SESSION + " 4\n",
        encoding="utf-8",
    )
    text = page.read_text(encoding="utf-8")
    assert documented_variables(text) == {"ONE"}
    assert documented_metrics(text) == {"m_total"}
    assert documented_targets(text) == {"up"}
    assert makefile_targets("up: deps ## run\nlock:\n") == {"up"}
    assert len(broken_links(page, repo=tmp_path)) == 2
    assert DIARY.search(text)
