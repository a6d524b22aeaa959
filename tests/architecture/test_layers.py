"""The house's layering, checked on the source: which package may import which, no circles, and no
module above its room. The rules are `LAYERS` below; docs/architecture.md draws them."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: For each room, the rooms it must never import (prefix match on module names).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "app.services.generation": (
        "app.services.gateway",
        "app.services.apps",
        "app.services.retrieval",
        "app.api",
        "app.main",
        "app.cli",
    ),
    "app.services.gateway": ("app.services.apps", "app.api", "app.main", "app.cli"),
    "app.services.retrieval": ("app.services.apps", "app.services.gateway", "app.api", "app.main", "app.cli"),
    "app.services.apps": ("app.api", "app.main", "app.cli"),
    "app.providers": ("app.services", "app.api", "app.storage", "app.main", "app.cli", "app.schemas"),
    "app.storage": ("app.services", "app.api", "app.providers", "app.main", "app.cli", "app.schemas"),
    "app.schemas": ("app.services", "app.api", "app.storage", "app.main", "app.cli"),
    "app.observability": ("app.services", "app.api", "app.main", "app.cli"),
    "app.api": ("app.main", "app.cli"),
    "app.settings": ("app.services", "app.api", "app.storage", "app.providers", "app.main"),
    "app.errors": ("app.services", "app.api", "app.storage", "app.providers", "app.main"),
    "app.clock": ("app.services", "app.api", "app.storage", "app.providers", "app.main"),
}


#: Exceptions to `FORBIDDEN`: wire models build the core's spec (`to_spec()`), a plain dataclass.
ALLOWED: dict[str, tuple[str, ...]] = {"app.schemas": ("app.services.generation.spec",)}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(source: str, module: str, *, top_level_only: bool) -> Iterator[str]:
    """The `app.*` modules a module imports; `top_level_only` leaves out imports inside
    functions and under `TYPE_CHECKING` (those cannot make an import-time circle)."""
    tree = ast.parse(source)
    package = module  # relative imports are anchored at the importing module

    def walk(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking_only(node):
                if not top_level_only:
                    yield from walk(node.body)
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if not top_level_only:
                    yield from walk(node.body)
                continue
            if isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, [])
                    for sub in inner:
                        if isinstance(sub, ast.ExceptHandler):
                            yield from walk(sub.body)
                        else:
                            yield from walk([sub])
                continue
            yield node

    for node in walk(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("app"):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: -node.level] if node.level else []
                base = ".".join([*anchor, *([base] if base else [])])
            if base.startswith("app"):
                yield base
                for alias in node.names:
                    yield f"{base}.{alias.name}"


def graph(root: Path, *, top_level_only: bool) -> dict[str, set[str]]:
    """module -> the app modules it imports (names that are not modules, such as a class
    imported with `from m import C`, are dropped)."""
    sources = {module_name(p, root): p.read_text() for p in (root / "app").rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for module, source in sources.items():
        targets = {t for t in imports_of(source, module, top_level_only=top_level_only) if t in sources}
        edges[module] = targets - {module}
    return edges


def violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in edges.items():
        for room, banned in FORBIDDEN.items():
            if module == room or module.startswith(room + "."):
                allowed = ALLOWED.get(room, ())
                for target in targets:
                    if target in allowed:
                        continue
                    if any(target == b or target.startswith(b + ".") for b in banned):
                        found.append(f"{module} imports {target}")
    return sorted(found)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            # A package's __init__ importing its own submodules is not a circle of rooms.
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return result


def _without_package_inits(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    # `from app.x import y` names package `app.x` too; an edge into a package's __init__ from
    # its own submodule is how Python imports, not an arrow of ours.
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}


def test_no_room_imports_what_it_must_not() -> None:
    assert violations(graph(ROOT, top_level_only=False)) == []


def test_the_import_graph_has_no_circle() -> None:
    assert cycles(_without_package_inits(graph(ROOT, top_level_only=True))) == []


def test_services_holds_only_packages() -> None:
    services = ROOT / "app" / "services"
    loose = sorted(p.name for p in services.glob("*.py") if p.name != "__init__.py")
    assert loose == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "app.services.generation.pipeline",
            "from app.services.gateway.keys import KeyStore\n",
            "app.services.generation.pipeline imports app.services.gateway.keys",
        ),
        (
            "app.services.generation.pipeline",
            "def f():\n    from app.services.apps import responses\n",
            "app.services.generation.pipeline imports app.services.apps.responses",
        ),
        ("app.providers.local", "import app.api.deps\n", "app.providers.local imports app.api.deps"),
    ],
)
def test_a_deliberate_violation_is_caught(tmp_path: Path, module: str, source: str, expected: str) -> None:
    """The check is real: a tree with one forbidden import fails it, naming the import."""
    for name in (module, expected.split(" imports ")[1]):
        path = tmp_path.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text("")
    tmp_path.joinpath(*module.split(".")).with_suffix(".py").write_text(source)
    assert expected in violations(graph(tmp_path, top_level_only=False))


def test_a_deliberate_circle_is_caught(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "a.py").write_text("from app import b\n")
    (tmp_path / "app" / "b.py").write_text("import app.a\n")
    assert cycles(_without_package_inits(graph(tmp_path, top_level_only=True))) == [["app.a", "app.b"]]


def test_time_is_read_only_through_the_injected_clocks() -> None:
    """Every TTL, deadline, expiry and timestamp reads `Clocks` (app/clock.py), so tests move
    time instead of sleeping; nothing else in app/ calls the system clocks."""
    reads = ("datetime.now(", "datetime.utcnow(", "time.time(", "time.monotonic(")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "app").rglob("*.py"))
        if path.name != "clock.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(read in line for read in reads)
    ]
    assert found == []


def test_no_function_takes_more_than_eight_parameters() -> None:
    """A hand-off with more than eight values is a spec object waiting to be named
    (`GenerationSpec` is the one `plan` takes); `self` and `cls` are not counted."""
    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                names = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
                count = len([n for n in names if n.arg not in ("self", "cls")])
                if count > 8:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}({count})")
    assert found == []
