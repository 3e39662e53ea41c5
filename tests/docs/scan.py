"""What the code defines and what the docs say, read statically (no service is imported).

The helpers here find, by walking the source's AST:

- every environment variable the code reads (`env_str/env_int/env_float/env_bool("NAME", ...)`
  from `withdrawal_shared.settings`, `os.environ.get("NAME")`, `os.environ["NAME"]`,
  `os.getenv("NAME")`, `<mapping>.get(CONSTANT)` where the constant names a variable, and
  module constants named `ENV_*` or `*_ENV` whose value is a variable's name, the convention
  the signer's key backends and the crash points use). A name built with an f-string
  (`f"{prefix}_METRICS_PORT"`) is reported with its placeholder as `<SERVICE>`;
- every OpenTelemetry instrument (`create_counter("name")`, ...) under the name Prometheus
  shows (counters get `_total`);

and, in the Markdown, the names in the first column of the tables of one `## ` section.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

ENV_HELPERS = frozenset({"env_str", "env_int", "env_float", "env_bool", "getenv"})
_ENV_NAME = re.compile(r"^[A-Z<][A-Z0-9_<>]*$")
_PLACEHOLDER_ALIASES = {"PREFIX": "SERVICE", "NAME": "SERVICE"}
_INSTRUMENTS = {
    "create_counter": "_total",
    "create_up_down_counter": "",
    "create_histogram": "",
    "create_gauge": "",
    "create_observable_counter": "_total",
    "create_observable_up_down_counter": "",
    "create_observable_gauge": "",
}


def code_dirs(repo: Path = REPO) -> list[Path]:
    """The directories whose variables operators and developers set.

    Services (`svc_*`), the shared library (`withdrawal_shared`), the dev stack (`devstack`),
    the benchmark and chaos tooling (`bench`, `chaos`: documented in their own table) and the
    operator CLI (`awctl`: its own table too). Tests are
    not scanned: their few variables (TEST_MARIADB_*) are in docs/development.md.
    """
    dirs = sorted(p for p in repo.glob("svc_*") if p.is_dir())
    for name in ("withdrawal_shared", "devstack", "bench", "chaos", "awctl"):
        if (repo / name).is_dir():
            dirs.append(repo / name)
    return dirs


def python_files(dirs: Iterable[Path]) -> Iterator[Path]:
    for directory in dirs:
        yield from sorted(directory.rglob("*.py"))


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_env_name(value: object) -> bool:
    return isinstance(value, str) and bool(_ENV_NAME.match(value))


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "VALUE"` (or annotated) whose value looks like a variable name."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if (
            isinstance(target, ast.Name)
            and isinstance(value, ast.Constant)
            and _is_env_name(value.value)
        ):
            found[target.id] = str(value.value)
    return found


def _is_environ(node: ast.expr) -> bool:
    """`os.environ` or a bare `environ`/`env` mapping."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in {"environ", "env"}


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _resolve(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.Attribute):
        return constants.get(node.attr)
    if isinstance(node, ast.JoinedStr):
        parts: list[str] = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                inner = value.value
                label = inner.id if isinstance(inner, ast.Name) else "VALUE"
                label = label.upper().strip("_")
                parts.append(f"<{_PLACEHOLDER_ALIASES.get(label, label)}>")
        return "".join(parts)
    return None


def _read_argument(node: ast.AST) -> ast.expr | None:
    """The name argument of an environment read, if `node` is one."""
    if isinstance(node, ast.Call) and node.args:
        callee = _callee(node)
        if callee in ENV_HELPERS or (
            callee == "get"
            and isinstance(node.func, ast.Attribute)
            and _is_environ(node.func.value)
        ):
            return node.args[0]
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.ctx, ast.Load)
        and _is_environ(node.value)
    ):
        return node.slice
    return None


def _forwarders(tree: ast.Module) -> dict[str, dict[str, int]]:
    """Functions that read the variable named by one of their parameters, e.g.
    `_port(stack_var, service_var, default)`: function -> {parameter: position}."""
    found: dict[str, dict[str, int]] = {}
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        params = [a.arg for a in (*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs)]
        for node in ast.walk(func):
            argument = _read_argument(node)
            if isinstance(argument, ast.Name) and argument.id in params:
                found.setdefault(func.name, {})[argument.id] = params.index(argument.id)
    return found


def env_reads(files: Iterable[Path]) -> dict[str, set[str]]:
    """Variable name -> the files (relative to the repository) that read it."""
    trees = {path: _parse(path) for path in files}
    constants: dict[str, str] = {}
    forwarders: dict[str, dict[str, int]] = {}
    for tree in trees.values():
        constants.update(_module_constants(tree))
        forwarders.update(_forwarders(tree))
    found: dict[str, set[str]] = {}

    def add(name: str | None, path: Path) -> None:
        if name is not None and _is_env_name(name):
            found.setdefault(name, set()).add(_shown(path))

    for path, tree in trees.items():
        for name, value in _module_constants(tree).items():
            if name.startswith("ENV_") or name.endswith("_ENV"):
                add(value, path)
        for node in ast.walk(tree):
            argument = _read_argument(node)
            if argument is not None:
                add(_resolve(argument, constants), path)
            if isinstance(node, ast.Call) and _callee(node) in forwarders:
                for param, position in forwarders[_callee(node) or ""].items():
                    if position < len(node.args):
                        add(_resolve(node.args[position], constants), path)
                    for keyword in node.keywords:
                        if keyword.arg == param:
                            add(_resolve(keyword.value, constants), path)
    return found


def metric_names(files: Iterable[Path]) -> dict[str, str]:
    """Prometheus metric name -> the file that defines its instrument."""
    found: dict[str, str] = {}
    for path in files:
        for node in ast.walk(_parse(path)):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            suffix = _INSTRUMENTS.get(node.func.attr)
            if suffix is None or not node.args:
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                name = first.value if first.value.endswith(suffix) else first.value + suffix
                found[name] = _shown(path)
    return found


def section(markdown: str, title: str) -> str:
    """The text of the `## {title}` section (up to the next `## ` heading)."""
    match = re.search(rf"^## {re.escape(title)}[ \t]*$", markdown, re.MULTILINE)
    if match is None:
        raise AssertionError(f"no '## {title}' section")
    rest = markdown[match.end() :]
    following = re.search(r"^## ", rest, re.MULTILINE)
    return rest[: following.start()] if following else rest


def first_column_names(text: str, pattern: str = r"`([^`]+)`") -> list[str]:
    """The backticked names in the first cell of every table body row of `text`."""
    names: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("|"):
            continue
        cells = [c.strip() for c in stripped.strip("|").split("|")]
        if not cells or set(cells[0]) <= set("-: "):
            continue
        names.extend(re.findall(pattern, cells[0]))
    return names


def diff_message(what: str, in_code: set[str], documented: set[str], where: str) -> str:
    missing = sorted(in_code - documented)
    extra = sorted(documented - in_code)
    lines = [f"{what} and {where} disagree:"]
    if missing:
        lines.append(f"  in the code but not documented: {', '.join(missing)}")
    if extra:
        lines.append(f"  documented but not in the code: {', '.join(extra)}")
    return "\n".join(lines)
