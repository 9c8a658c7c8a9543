"""The house's import direction (ARCHITECTURE.md): lower floors never import upper ones, and
no two modules import each other in a circle.

Every ``rnnkit`` module is parsed (not imported). An import edge ``a → b`` is any ``import`` or
``from … import`` of an ``rnnkit`` module, at module level or inside a function (a lazy import
upward is still an upward dependency); imports under ``if TYPE_CHECKING:`` are annotations only
and count for the floors, not for circles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "rnnkit"

#: floor → module-name prefixes on it, lowest first (the longest matching prefix wins)
FLOORS: dict[int, tuple[str, ...]] = {
    0: ("rnnkit.reference", "rnnkit.errors", "rnnkit.fileio", "rnnkit.version", "rnnkit.checks",
        "rnnkit.figures"),
    1: ("rnnkit.state", "rnnkit.sequence", "rnnkit.native", "rnnkit.runtime", "rnnkit.config",
        "rnnkit.inference", "rnnkit.portable"),
    2: ("rnnkit.cells", "rnnkit.attention", "rnnkit.crf", "rnnkit.regularizers",
        "rnnkit.image_encoders", "rnnkit.decoding"),
    3: ("rnnkit.fast",),
    4: ("rnnkit.time_loop", "rnnkit.layers", "rnnkit.modern"),
    5: ("rnnkit.data", "rnnkit.datasets", "rnnkit.metrics", "rnnkit.music_export",
        "rnnkit.checkpoint", "rnnkit.distributed"),
    6: ("rnnkit.train", "rnnkit.tensorboard_logger"),
    7: ("rnnkit.tasks", "rnnkit.insight", "rnnkit.runs", "rnnkit.api"),
    8: ("rnnkit.export", "rnnkit.server"),
    9: ("rnnkit.cli", "rnnkit.__main__", "rnnkit"),
}  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def floor(module: str) -> int:
    best = max(
        (p for ps in FLOORS.values() for p in ps if module == p or module.startswith(p + ".")),
        key=len,
        default=None,
    )
    if best is None:
        raise AssertionError(f"{module} is on no floor: add it to FLOORS and ARCHITECTURE.md")
    return next(f for f, ps in FLOORS.items() if best in ps)


def _target(name: str) -> str:
    """The module an imported dotted name lives in (``rnnkit.fast.NATIVE`` → ``rnnkit.fast``)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, at module level at run time)`` for each rnnkit import."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, False)
                continue
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in child.names]
            else:
                nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                visit(child, top and not nested)
                continue
            for name in names:
                if name == "rnnkit" or name.startswith("rnnkit."):
                    target = _target(name)
                    if target != module:
                        found.append((target, child.lineno, top))

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


def test_every_module_is_on_a_floor():
    for module in MODULES:
        floor(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_floor(module):
    upward = [
        f"{MODULES[module].relative_to(ROOT.parent)}:{line} imports {target} "
        f"(floor {floor(target)} above floor {floor(module)})"
        for target, line, _ in imports(module)
        if floor(target) > floor(module)
    ]
    assert not upward, "\n".join(upward)


def find_circle(graph: dict[str, list[str]]) -> list[str] | None:
    """A path ``a -> … -> a`` through ``graph`` (module → modules it imports), or None."""
    done: set[str] = set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return path + [start]
                if nxt not in path and nxt not in done:
                    stack.append((nxt, path + [nxt]))
        done.add(start)
    return None


def test_no_import_circle():
    """Module-level imports only: a lazy import inside a function cannot make a circle at
    import time (and the floors test already keeps it pointing down)."""
    graph = {m: sorted({t for t, _, top in imports(m) if top}) for m in MODULES}
    circle = find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("rnnkit.portable")))
def test_portable_modules_import_no_rnnkit_and_no_torch(module):
    """``rnnkit.portable`` is copied into every export folder, where neither exists."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [
        n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level
    ]
    assert not [n for n in names if n.split(".")[0] in ("rnnkit", "torch")]


def test_find_circle_sees_one():
    assert find_circle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_circle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The test itself works: a cell importing a task is caught."""
    fake = tmp_path / "rnnkit" / "cells_probe.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from rnnkit.tasks import get_task\n")
    monkeypatch.setitem(MODULES, "rnnkit.cells_probe", fake)
    monkeypatch.setitem(FLOORS, 2, FLOORS[2] + ("rnnkit.cells_probe",))
    targets = [(t, line) for t, line, _ in imports("rnnkit.cells_probe")]
    assert targets == [("rnnkit.tasks", 2)]
    assert floor("rnnkit.tasks") > floor("rnnkit.cells_probe")
