"""The library's import graph: no cycle, no private name imported across modules.

Every module of EmphysemaXAILib is parsed with ``ast``; every import counts, including those
inside functions (a function-level import hides a cycle from Python but not from a reader).
Relative imports are resolved; ``from package import name`` points at the submodule ``name``
when there is one, else at the package's ``__init__``.
"""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "EmphysemaXAI"
LIB = ROOT / "EmphysemaXAILib"


#: private imports left in files being rewritten elsewhere: "path: name" (empty this when they are gone)
PENDING: set = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def library_modules() -> dict:
    """{dotted name: (path, ast tree)} of every module of the library."""
    return {module_name(p): (p, ast.parse(p.read_text(encoding="utf-8"), str(p))) for p in sorted(LIB.rglob("*.py"))}


def imports(name: str, path: Path, tree, known) -> list:
    """[(imported module, imported name or None, line)] of the library's own modules."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((a.name, None, node.lineno) for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base not in known:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, None, node.lineno) if sub in known else (base, alias.name, node.lineno))
    return out


def graph() -> tuple:
    modules = library_modules()
    edges, private = {}, []
    for name, (path, tree) in modules.items():
        found = imports(name, path, tree, modules)
        edges[name] = {target for target, _, _ in found if target != name}
        for target, imported, line in found:
            if imported and imported.startswith("_") and not imported.startswith("__") and target != name \
                    and f"{path.relative_to(ROOT).as_posix()}: {imported}" not in PENDING:
                private.append(f"{path.relative_to(ROOT)}:{line}: imports {imported} from {target}")
    return edges, private


def cycles(edges: dict) -> list:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_function_level_and_relative_imports():
    modules = library_modules()
    path, tree = modules["EmphysemaXAILib.model.predictors"]
    targets = {t for t, _, _ in imports("EmphysemaXAILib.model.predictors", path, tree, modules)}
    assert "EmphysemaXAILib.model.pattern_infer" in targets    # inside a function, relative
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_has_no_import_cycle():
    found = cycles(graph()[0])
    assert not found, "import cycles (function-level imports included):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_module_imports_a_private_name_of_another():
    private = graph()[1]
    assert not private, "private names imported across modules (make them public or move them):\n" + "\n".join(private)
