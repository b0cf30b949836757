"""Which way imports run (ARCHITECTURE.md, "Which way imports run"), read from the source.

Every `import` of a reelrank module counts: at module level, inside functions (imported
late) and under `if TYPE_CHECKING:` (for annotations). A late or annotation-only import
hides a circle from the interpreter, not from a reader, so circles are looked for over all
of them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "reelrank"

STAGES = ("recall", "rank", "rerank")
UPPER = ("pipeline", "engine", "services", "train", "serve", "cli", "evaluate", "sim")
UPPER += ("experiments",)
SERVING = ("types", "schema", "errors", "config", "storage", "index", "state", "content")
SERVING += ("ingest", "recall", "rank", "rerank", "pipeline", "serve", "metrics")
GROUND = ("types", "schema", "errors")


@dataclass(frozen=True)
class Edge:
    source: str  # reelrank.a.b
    target: str
    typing_only: bool  # under `if TYPE_CHECKING:`
    line: int

    def __str__(self) -> str:
        how = " (annotations)" if self.typing_only else ""
        return f"{self.source} -> {self.target}{how}, line {self.line}"


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def edges_of(path: Path, modules: set[str], root: Path = SRC) -> list[Edge]:
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[Edge] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        # `from . import x` and `from .pkg import mod` name modules; else the module itself
        return [
            f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names
        ]

    def walk(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.body:
                    walk_one(sub, True)
                for sub in child.orelse:
                    walk_one(sub, typing_only)
            else:
                walk_one(child, typing_only)

    def walk_one(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in targets(node):
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]  # `import a.b.c` of a name in a.b
                if target in modules and target != name:
                    found.append(Edge(name, target, typing_only, node.lineno))
        else:
            walk(node, typing_only)

    walk(ast.parse(path.read_text(), str(path)), False)
    return found


def read_graph(root: Path = SRC) -> list[Edge]:
    files = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in files}
    return [e for p in files for e in edges_of(p, modules, root)]


def floor(module: str) -> str:
    """The first part below the package: `reelrank.recall.pool` -> `recall`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def circles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_the_source() -> None:
    """The reader sees relative, absolute, late and annotation-only imports."""
    edges = read_graph()
    assert len({e.source for e in edges}) > 50
    seen = {(e.source, e.target, e.typing_only) for e in edges}
    assert ("reelrank.services.app", "reelrank.train.trainer", False) in seen  # in a method
    assert ("reelrank.types", "reelrank.state.catalog", True) in seen  # TYPE_CHECKING
    assert ("reelrank.recall", "reelrank.recall.pool", False) in seen  # from .pool import


def test_a_circle_is_found_through_late_and_annotation_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "reelrank"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..b import y\n"
    )
    (pkg / "b.py").write_text("def f():\n    from .c import z\n")
    (pkg / "c.py").write_text("from .a.x import thing\n")
    edges = read_graph(pkg)
    assert circles(edges) == [["reelrank.a.x", "reelrank.b", "reelrank.c"]]


def test_no_import_circles() -> None:
    assert circles(read_graph()) == []


@pytest.mark.parametrize(
    ("rule", "broken"),
    [
        (
            "a stage (recall, rank, rerank) imports only the floors below it: never the "
            "pipeline, the engine, training, serving, evaluation, simulation or experiments",
            lambda e: floor(e.source) in STAGES and floor(e.target) in UPPER,
        ),
        (
            "serving never imports training (the composition root of every role, "
            "services/app.py, starts the trainer; evaluation and simulation drive it)",
            lambda e: floor(e.source) in SERVING and floor(e.target) == "train",
        ),
        (
            "state never imports content",
            lambda e: floor(e.source) == "state" and floor(e.target) == "content",
        ),
        (
            "the fold (state/fold.py) does no I/O: it imports no store, log or database",
            lambda e: e.source == "reelrank.state.fold" and floor(e.target) == "storage",
        ),
        (
            "the ground floor (types, schema, errors) imports only the ground floor, but "
            "for annotations",
            lambda e: (
                floor(e.source) in GROUND and floor(e.target) not in GROUND and not e.typing_only
            ),
        ),
    ],
)
def test_imports_run_one_way(rule: str, broken: object) -> None:
    assert callable(broken)
    bad = [str(e) for e in read_graph() if broken(e)]
    assert bad == [], f"{rule}: {bad}"


MODULE_LINES = 400
# Modules over MODULE_LINES, each held at its size until it is split: `config.py` is the
# settings table (one documented field per setting).
LONGER = {
    "reelrank/config.py": 751,
}


def test_no_module_grows_past_its_bound() -> None:
    """No module over MODULE_LINES lines, but those listed, which may shrink, not grow."""
    over = {}
    for path in sorted(SRC.rglob("*.py")):
        name = path.relative_to(SRC.parent).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > LONGER.get(name, MODULE_LINES):
            over[name] = lines
    assert over == {}, f"modules over their bound (split them): {over}"
    stale = {
        n
        for n in LONGER
        if not (SRC.parent / n).exists()
        or len((SRC.parent / n).read_text().splitlines()) <= MODULE_LINES
    }
    assert stale == set(), f"listed modules now within the bound (unlist them): {stale}"
