"""The shape of the code, read from its source: no import circles anywhere, a core
that imports no Kafka client or faust, and packages that say what they hold.

Imports are read with `ast`, all of them: at module level, inside functions, and
under `if TYPE_CHECKING:` (a circle for the type checker is a circle for a reader).
"""

from __future__ import annotations

import ast
import fnmatch
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "agents")
FORBIDDEN_IN_CORE = ("faust", "aiokafka", "kafka", "mode")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {
    module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
}
# The command-line layer, pipeline.cli: the composition root of the commands and the
# modules that talk to a broker themselves. Everything else under pipeline/ is the core.
CLI_LAYER = frozenset(m for m in MODULES if m == "pipeline.cli" or m.startswith("pipeline.cli."))


def imported(path: Path) -> Iterator[str]:
    """Every module name an import statement in the file names (relative imports
    resolved), with `from a import b` also as `a.b`."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    return {
        name: {m for m in imported(path) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_every_form_of_import() -> None:
    source = ROOT / "pipeline" / "config" / "load.py"
    names = set(imported(source))
    assert {"pipeline.config.checks", "pipeline.config.settings.Settings"} <= names
    # and imports under TYPE_CHECKING and inside functions
    assert "agents.context.Runtime" in set(imported(ROOT / "agents" / "aggregate.py"))


def test_no_module_imports_itself_back_through_others() -> None:
    assert len(MODULES) > 40
    assert cycles(graph()) == []


CORE = sorted(m for m in MODULES if m.split(".")[0] == "pipeline" and m not in CLI_LAYER)


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_no_kafka_client_nor_faust(name: str) -> None:
    bad = {
        m for m in imported(MODULES[name]) if m.split(".")[0] in FORBIDDEN_IN_CORE or m in CLI_LAYER
    }
    assert bad == set(), f"{name} imports {sorted(bad)}"


def test_the_cli_layer_is_what_it_says() -> None:
    assert set(MODULES) >= CLI_LAYER
    # and the check would catch a core module that reached for a client
    assert "kafka" in {m.split(".")[0] for m in imported(MODULES["pipeline.cli.topics"])}
    assert len(CORE) > 30


def test_every_package_says_in_one_line_what_it_holds() -> None:
    packages = [p for p in MODULES.values() if p.name == "__init__.py"]
    assert len(packages) >= 4
    for path in packages:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc and "\n" not in doc.strip(), path


def test_the_wheel_holds_every_package() -> None:
    """The Dockerfile installs a wheel: a package left out of it is missing there."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    for path in MODULES.values():
        if path.name == "__init__.py":
            name = module_name(path)
            assert any(fnmatch.fnmatchcase(name, pattern) for pattern in include), name


def test_unit_tests_mirror_the_packages() -> None:
    """tests/unit/<package>/ for each package of pipeline/ (and agents/), and no other."""
    packages = {p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")} | {"agents"}
    folders = {p.parent.name for p in (ROOT / "tests" / "unit").glob("*/__init__.py")}
    assert folders == packages
    for folder in folders:  # each holds tests, and says what of
        tests = list((ROOT / "tests" / "unit" / folder).glob("test_*.py"))
        assert tests, folder
