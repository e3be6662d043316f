"""The layout holds: no import cycles between mcpgate's modules, and no imports hidden inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("mcpgate", "audit", "identity", "oauth_ext", "console", "mcp_bridge", "notes")


def modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _first_party(name: str, known: dict[str, Path]) -> str | None:
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(known: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Module-level first-party imports of each module, and every import found inside a function."""
    graph: dict[str, set[str]] = {}
    hidden: list[str] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()

        def visit(
            node: ast.AST,
            *,
            in_function: bool,
            module: str = module,
            edges: set[str] = edges,
            is_package: bool = is_package,
        ) -> None:
            for child in ast.iter_child_nodes(node):
                if _type_checking(child):
                    continue
                if isinstance(child, ast.Import | ast.ImportFrom):
                    names: list[str] = []
                    if isinstance(child, ast.Import):
                        names = [alias.name for alias in child.names]
                    else:
                        target = _resolve(module, child, is_package)
                        names = [f"{target}.{alias.name}" for alias in child.names] + [target]
                    targets = {t for t in (_first_party(n, known) for n in names) if t and t != module}
                    if in_function:
                        hidden.extend(f"{module}:{child.lineno} imports {t}" for t in sorted(targets))
                    else:
                        edges.update(targets)
                visit(
                    child,
                    in_function=in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef),
                )

        visit(tree, in_function=False)
        graph[module] = edges
    return graph, hidden


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


@pytest.fixture(scope="module")
def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    return imports(modules())


def test_no_module_imports_itself_back_through_others(import_graph: tuple[dict[str, set[str]], list[str]]) -> None:
    graph, _ = import_graph
    # A package's __init__ re-exporting its submodules is not a cycle worth refusing.
    pruned = {m: {t for t in ts if not m.startswith(f"{t}.")} for m, ts in graph.items()}
    assert cycles(pruned) == []


def test_no_first_party_import_is_hidden_inside_a_function(
    import_graph: tuple[dict[str, set[str]], list[str]],
) -> None:
    _, hidden = import_graph
    assert hidden == []


def test_the_checker_sees_a_cycle_and_a_hidden_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    known = {"pkg.m": Path("m.py")}
    tree = ast.parse("def f():\n    from pkg import m\n")
    node = tree.body[0].body[0]  # type: ignore[attr-defined]
    assert _first_party(_resolve("pkg.x", node, False) + ".m", known) == "pkg.m"
