"""The line between the runtime library and the tooling, checked on the code itself.

Production is what the four services run: `svc_*` and `withdrawal_shared`. Tooling is
`devstack` (`make up`, the harness stack, anvil, signing with local keys), `chaos`, `bench` and
`tests`. The static import graph (every `import` and `from ... import` in every module, including
the ones inside functions and under `if TYPE_CHECKING:`, plus `importlib.import_module("...")`
with a literal name) is followed from the production entry points:

- every module of `withdrawal_shared` must be reached, or it is tooling living in the library;
- no production module may import a tooling package.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBRARY = "withdrawal_shared"
SERVICES = ("svc_gateway", "svc_processor", "svc_signer", "svc_monitor")
PRODUCTION = (LIBRARY, *SERVICES)
TOOLING = ("devstack", "chaos", "bench", "tests")
ENTRY_POINTS = (
    *(f"{service}.__main__" for service in SERVICES),
    # The schema command (`python -m withdrawal_shared.db.migrate URL`): it runs before the
    # services start, against the production database, and none of them imports it.
    "withdrawal_shared.db.migrate",
    # The first admin operator (`python -m withdrawal_shared.db.admin_bootstrap ID`): run once,
    # against the production database, after the migrations.
    "withdrawal_shared.db.admin_bootstrap",
    # The per-service database users (`python -m withdrawal_shared.db.grants`): run by an
    # operator after the migrations, before the services start.
    "withdrawal_shared.db.grants",
)
# Alembic loads env.py and versions/*.py by file path (script_location), never by import name,
# so no import statement leads to them: they are reached when the module that points Alembic at
# their directory is.
MIGRATIONS = "withdrawal_shared.db.migrations"
MIGRATIONS_LOADER = "withdrawal_shared.db.migrate"


@dataclass(frozen=True)
class Import:
    name: str  # the absolute dotted name as written (or resolved, for a relative import)
    line: int
    member: bool = False  # `pkg.name` of `from pkg import name`: a submodule, or just a name


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def modules_under(root: Path, packages: Iterable[str]) -> dict[str, Module]:
    """Every .py file of the given top-level packages, by dotted module name."""
    found: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            found[name] = Module(name, path)
    return found


def _imported_names(module: Module) -> Iterator[Import]:
    tree = ast.parse(module.path.read_text(), filename=str(module.path))
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield Import(base, node.lineno)
            for alias in node.names:  # `from pkg import submodule` imports pkg.submodule
                if alias.name != "*":
                    yield Import(f"{base}.{alias.name}", node.lineno, member=True)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield Import(node.args[0].value, node.lineno)


def imports_of(module: Module) -> list[Import]:
    return list(_imported_names(module))


def _with_parents(name: str) -> Iterator[str]:
    """`a.b.c` -> `a`, `a.b`, `a.b.c`: importing a module runs its packages' __init__ first."""
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])


def reached(modules: dict[str, Module], roots: Iterable[str]) -> set[str]:
    """The modules (of `modules`) that the roots import, directly or through each other."""
    seen: set[str] = set()
    todo = [name for root in roots for name in _with_parents(root) if name in modules]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in imports_of(modules[name]):
            todo.extend(n for n in _with_parents(imported.name) if n in modules and n not in seen)
    if MIGRATIONS_LOADER in seen:
        seen.update(name for name in modules if name.startswith(f"{MIGRATIONS}."))
        seen.add(MIGRATIONS)
    return seen


def unreached_library_modules(root: Path) -> list[str]:
    """One line per module of the library that no production entry point reaches."""
    modules = modules_under(root, (*PRODUCTION, *TOOLING))
    closure = reached(modules, ENTRY_POINTS)
    return [
        f"{name} ({module.path.relative_to(root)}) is reached from no service entry point: "
        "it is not runtime library code, so move it to the tooling (devstack/, chaos/ or "
        "bench/), or import it from a service if a service needs it"
        for name, module in sorted(modules.items())
        if (name == LIBRARY or name.startswith(f"{LIBRARY}.")) and name not in closure
    ]


def tooling_imports_in_production(root: Path) -> list[str]:
    """One line per import of a tooling package by a production module."""
    problems: list[str] = []
    for name, module in sorted(modules_under(root, PRODUCTION).items()):
        for imported in imports_of(module):
            top = imported.name.partition(".")[0]
            if top in TOOLING and not imported.member:
                where = f"{module.path.relative_to(root)}:{imported.line}"
                problems.append(
                    f"{where}: production module {name} imports {imported.name} (tooling: "
                    f"{', '.join(TOOLING)}); production code must not depend on tooling"
                )
    return problems


def test_every_library_module_is_reached_from_a_service() -> None:
    modules = modules_under(REPO, PRODUCTION)
    assert set(ENTRY_POINTS) <= set(modules), "an entry point moved: update ENTRY_POINTS"
    assert MIGRATIONS in modules, "the migrations moved: update MIGRATIONS"
    problems = unreached_library_modules(REPO)
    assert not problems, "\n".join(problems)


def test_production_code_imports_no_tooling() -> None:
    problems = tooling_imports_in_production(REPO)
    assert not problems, "\n".join(problems)


# -- the checks themselves, on a small tree of their own -------------------------------------


def _write(root: Path, relative: str, text: str = "") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A repository with the real layout's names and a clean line, to be broken by a test."""
    for service in SERVICES:
        _write(tmp_path, f"{service}/__init__.py")
        _write(tmp_path, f"{service}/__main__.py", "from withdrawal_shared import logs\n")
    _write(
        tmp_path,
        "svc_processor/__main__.py",
        "def main():\n    from .pipeline import run\n",
    )
    _write(tmp_path, "svc_processor/pipeline.py", "import withdrawal_shared.chain.payout\n")
    _write(tmp_path, "withdrawal_shared/__init__.py")
    _write(tmp_path, "withdrawal_shared/logs.py")
    _write(tmp_path, "withdrawal_shared/chain/__init__.py")
    _write(tmp_path, "withdrawal_shared/chain/payout.py", "from . import fees\n")
    _write(tmp_path, "withdrawal_shared/chain/fees.py")
    _write(tmp_path, "withdrawal_shared/db/__init__.py")
    _write(tmp_path, "withdrawal_shared/db/migrate.py")
    _write(tmp_path, "withdrawal_shared/db/migrations/__init__.py")
    _write(tmp_path, "withdrawal_shared/db/migrations/env.py")
    _write(tmp_path, "withdrawal_shared/db/migrations/versions/0001_initial.py")
    for package in TOOLING:
        _write(tmp_path, f"{package}/__init__.py")
    _write(tmp_path, "devstack/runner.py", "from withdrawal_shared.chain import payout\n")
    return tmp_path


def test_the_checks_pass_on_a_clean_tree(tree: Path) -> None:
    # Reached: through a lazy import in a function, a relative `from . import`, and the
    # migrations through migrate; the tooling may import the library.
    assert unreached_library_modules(tree) == []
    assert tooling_imports_in_production(tree) == []


def test_a_library_module_no_service_reaches_is_named(tree: Path) -> None:
    _write(tree, "withdrawal_shared/chain/anvil.py", "from withdrawal_shared.chain import fees\n")
    _write(tree, "devstack/harness.py", "from withdrawal_shared.chain.anvil import start\n")
    (problem,) = unreached_library_modules(tree)
    assert problem.startswith("withdrawal_shared.chain.anvil (withdrawal_shared/chain/anvil.py)")
    assert "move it to the tooling" in problem


def test_migrations_count_as_reached_only_through_migrate(tree: Path) -> None:
    (tree / "withdrawal_shared/db/migrate.py").unlink()
    problems = unreached_library_modules(tree)
    assert any(p.startswith("withdrawal_shared.db.migrations.env ") for p in problems), problems


@pytest.mark.parametrize(
    ("relative", "text"),
    [
        ("svc_signer/core.py", "import devstack.anvil\n"),
        ("withdrawal_shared/chain/fees.py", "def f():\n    from chaos.loopback import x\n"),
        (
            "withdrawal_shared/logs.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from tests.support import y\n",
        ),
        ("svc_monitor/server.py", "import importlib\nimportlib.import_module('bench.load')\n"),
    ],
)
def test_a_tooling_import_in_production_is_named(tree: Path, relative: str, text: str) -> None:
    _write(tree, relative, text)
    (problem,) = tooling_imports_in_production(tree)
    assert problem.startswith(f"{relative}:")
    assert "must not depend on tooling" in problem


# -- awctl, the operator CLI: a client of the API, nothing more ------------------------------

AWCTL = "awctl"
AWCTL_ALLOWED = frozenset({AWCTL, "assetwithdrawal", "google", "grpc", "typer", "rich"})


def awctl_foreign_imports(root: Path) -> list[str]:
    """One line per import of awctl that is not the generated API, google, grpc, typer, rich,
    the standard library or awctl itself (so it never reaches into the services or the
    devstack, and installs apart from them)."""
    problems: list[str] = []
    for name, module in sorted(modules_under(root, (AWCTL,)).items()):
        for imported in imports_of(module):
            top = imported.name.partition(".")[0]
            if imported.member or top in AWCTL_ALLOWED or top in sys.stdlib_module_names:
                continue
            where = f"{module.path.relative_to(root)}:{imported.line}"
            problems.append(
                f"{where}: {name} imports {imported.name}; awctl may import only "
                f"{', '.join(sorted(AWCTL_ALLOWED))} and the standard library"
            )
    return problems


def test_awctl_imports_only_the_api_and_its_libraries() -> None:
    assert (REPO / AWCTL / "__init__.py").exists(), "awctl moved: update AWCTL"
    problems = awctl_foreign_imports(REPO)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "text",
    [
        "from svc_gateway.admin.roles import METHOD_ROLES\n",
        "import devstack.config\n",
        "def f():\n    from withdrawal_shared.db import operators\n",
        "import grpc_status\n",
    ],
)
def test_a_foreign_import_in_awctl_is_named(tree: Path, text: str) -> None:
    _write(tree, "awctl/__init__.py", "import json\nimport grpc\nfrom rich.table import Table\n")
    _write(tree, "awctl/cli.py", "import typer\nfrom assetwithdrawal.admin.v1 import admin_pb2\n")
    assert awctl_foreign_imports(tree) == []
    _write(tree, "awctl/client.py", text)
    (problem,) = awctl_foreign_imports(tree)
    assert problem.startswith("awctl/client.py:") and "awctl may import only" in problem
