"""The shape of the package: rooms per stage, imports one way, no private reaches, short modules.

Read from the source with `ast` (nothing is imported): every `from ... import` and `import`
inside the package counts, inside functions too; `if TYPE_CHECKING:` blocks do not (they never
run). The checks run first on a small package made here, so each is seen to fail.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jobrl_async"
MAX_LOOSE = 10  # top-level modules beside __init__, __main__ and cli
MAX_LINES = 600
ENTRY = {"__init__", "__main__", "cli"}


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def _runs(tree: ast.Module) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:`."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def imports(root: Path) -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the package's modules it imports; and each import of another module's private name."""
    mods = modules(root)
    edges: dict[str, set[str]] = defaultdict(set)
    private: list[str] = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runs(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name in mods)
            if not isinstance(node, ast.ImportFrom):
                continue
            base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)] if node.level else []
            target = ".".join([*base, node.module] if node.module else base) if node.level else node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in mods:  # `from package import module`
                    edges[name].add(full)
                elif target in mods:
                    edges[name].add(target)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{name} imports {target}.{alias.name}")
        edges[name].discard(name)
    return edges, private


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(set(edges) | {n for targets in edges.values() for n in targets}):
        if node not in index:
            visit(node)
    return found


def rooms(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between the top level's packages and loose modules (the package itself apart)."""
    def room(module: str) -> str:
        return ".".join(module.split(".")[:2])

    out: dict[str, set[str]] = defaultdict(set)
    for source, targets in edges.items():
        for target in targets:
            if room(source) != room(target) and "." in target:
                out[room(source)].add(room(target))
    return out


def loose(root: Path) -> list[str]:
    return sorted(p.stem for p in root.glob("*.py") if p.stem not in ENTRY)


def long_modules(root: Path) -> list[str]:
    return [f"{p.relative_to(root)}: {n} lines" for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES]


# ---------------------------------------------------------------- the checks can fail


@pytest.fixture
def crooked(tmp_path: Path) -> Path:
    """A package with each fault once: a circle through a function-level import, a private reach,
    rooms that import each other, a long module."""
    root = tmp_path / "crooked"
    (root / "stage").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from .b import thing\n",
        "b.py": "def thing():\n    from .a import other\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import X\n",
        "d.py": "from .c import _hidden\n" + "x = 1\n" * MAX_LINES,
        "stage/__init__.py": "",
        "stage/work.py": "from .. import a\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_the_checks_find_each_fault_of_a_crooked_package(crooked: Path) -> None:
    edges, private = imports(crooked)
    assert circles(edges) == [["crooked.a", "crooked.b"]]  # c <-> d only under TYPE_CHECKING
    assert private == ["crooked.d imports crooked.c._hidden"]
    assert edges["crooked.stage.work"] == {"crooked.a"}
    assert rooms(edges)["crooked.stage"] == {"crooked.a"}
    assert circles(rooms(edges)) == [["crooked.a", "crooked.b"]]
    assert loose(crooked) == ["a", "b", "c", "d"]
    assert long_modules(crooked) == [f"d.py: {MAX_LINES + 1} lines"]


# ---------------------------------------------------------------- the house


def test_no_import_circle_between_modules() -> None:
    assert circles(imports(PACKAGE)[0]) == []


def test_no_import_circle_between_the_top_level_packages() -> None:
    """A trajectory's way (producer -> generation -> judge -> collector -> learning -> checkpoints)
    is followed from room to room without climbing back."""
    assert circles(rooms(imports(PACKAGE)[0])) == []


STAGES = ["producer", "generation", "remote", "judge", "collector", "learning", "checkpoints"]  # a trajectory's way
SHARED = ["flow", "policy", "ops", "data", "config", "storage", "errors", "aio", "retry", "breaker"]
ALLOWED = {("remote", "generation")}  # vLLM generation implements the generator's protocol


def test_no_stage_imports_another_stage() -> None:
    graph = rooms(imports(PACKAGE)[0])
    crossings = [f"{a} -> {b}" for a in STAGES for b in STAGES
                 if f"jobrl_async.{b}" in graph.get(f"jobrl_async.{a}", ()) and (a, b) not in ALLOWED]
    assert crossings == []


def test_the_shared_rooms_import_no_stage_and_nothing_above_them() -> None:
    graph = rooms(imports(PACKAGE)[0])
    above = [f"{a} -> {b}" for a in SHARED for b in graph.get(f"jobrl_async.{a}", ())
             if b.removeprefix("jobrl_async.") not in SHARED]
    assert above == []


def test_every_room_is_named_here() -> None:
    """A new top-level package or module takes its place in the order above (or among the rooms on top)."""
    on_top = ["pipeline", "commands", "report", "testing", "cli", "__main__"]
    present = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    present |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert sorted(present - {*STAGES, *SHARED, *on_top}) == []


def test_no_module_imports_another_modules_private_names() -> None:
    assert imports(PACKAGE)[1] == []


def test_at_most_ten_loose_modules_at_the_top_level() -> None:
    assert len(loose(PACKAGE)) <= MAX_LOOSE, loose(PACKAGE)


def test_no_module_over_600_lines() -> None:
    assert long_modules(PACKAGE) == []
