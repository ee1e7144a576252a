"""The library's import graph: layers that only point down, no cycle, no private name imported
across modules.

Every module of EmphysemaXAILib is parsed with ``ast``; every import counts, including those
inside functions (a function-level import hides a cycle from Python but not from a reader).
Relative imports are resolved; ``from package import name`` points at the submodule ``name``
when there is one, else at the package's ``__init__``.

The layer order (``LAYERS``) is the one docs/architecture.md draws; this file is the repository's
layer check (``make check-layers``), with no skip.
"""
import ast
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "EmphysemaXAI"
LIB = ROOT / "EmphysemaXAILib"


#: private imports left in files being rewritten elsewhere: "path: name" (empty this when they are gone)
PENDING: set = set()

#: The library's layers, lowest first (docs/architecture.md). A module may import modules of its
#: own layer and of the layers below, never of a layer above. A top-level module (``options``) or
#: a sub-package (``io``) is one entry; ``""`` is the package's face (``EmphysemaXAILib/__init__``).
LAYERS = (
    ("errors", "notices", "volume"),    # the data type and the error contract
    ("io",),
    ("analysis",),
    ("options",),
    ("packages",),
    ("segmentation",),
    ("phantom",),
    ("model",),
    ("explain",),
    ("embed",),
    ("linear",),
    ("pipeline",),                      # the core ends here: no slicer, vtk or Qt below this line
    ("mrml",),                          # the MRML layer: slicer and vtk, never Qt
    ("app",),                           # front ends
    ("", "cli", "__main__"),
)
#: The first layer that may import slicer / vtk (the MRML layer).
MRML_LAYER = next(i for i, layer in enumerate(LAYERS) if "mrml" in layer)
#: Only the Slicer module (EmphysemaXAI/EmphysemaXAI.py) may import these.
QT_NAMES = ("qt", "ctk", "PythonQt", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "slicer.i18n")
MRML_NAMES = ("slicer", "vtk", "vtkmodules")

#: Upward imports that exist today, "importer -> imported" (issue 27). The layer test fails on any
#: other upward import, and on an entry here that is no longer found (delete it when it is fixed).
KNOWN_UPWARD = {
    # io's DICOM SEG / SR writers use the pattern and region tables (the issue's
    # "analysis/qct.py -> io/csv_table.py" arrow: gone when the writers leave io/)
    "EmphysemaXAILib.io.dicom_seg -> EmphysemaXAILib.analysis.patterns",
    "EmphysemaXAILib.io.dicom_seg -> EmphysemaXAILib.analysis.regions",
    "EmphysemaXAILib.io.dicom_sr -> EmphysemaXAILib.analysis.patterns",
    # QC's tracheal air uses the one airway finder
    "EmphysemaXAILib.analysis.air -> EmphysemaXAILib.segmentation.airways",
    # the lungmask weights check (function-level)
    "EmphysemaXAILib.packages -> EmphysemaXAILib.segmentation.lungmask_engine",
    # mrml imports app in 4 places (issue 27: the module's logic and results loader move to a front end)
    "EmphysemaXAILib.mrml.load_results -> EmphysemaXAILib.app.case_layers",
    "EmphysemaXAILib.mrml.module_logic -> EmphysemaXAILib.app.analysis_process",
    "EmphysemaXAILib.mrml.scene_export -> EmphysemaXAILib.app.case_layers",
    "EmphysemaXAILib.mrml.scene_export -> EmphysemaXAILib.app.report_figures",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@functools.cache
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


def layer(module: str) -> int:
    """The index in LAYERS of a library module's layer (KeyError names a module LAYERS lacks)."""
    parts = module.split(".")
    group = parts[1] if len(parts) > 1 else ""
    for index, names in enumerate(LAYERS):
        if group in names:
            return index
    raise KeyError(f"{module}: its package or module '{group}' is in no layer of LAYERS; add it there")


def upward(edges: dict) -> set:
    """{"importer -> imported"} for every import of a module in a higher layer."""
    return {f"{a} -> {b}" for a, targets in edges.items() for b in targets if layer(b) > layer(a)}


def outside_imports(tree) -> set:
    """Dotted names of absolute imports (``import a.b``; ``from a.b import c`` gives a.b and a.b.c)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def matches(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@functools.cache
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


def test_the_layer_checker_finds_an_upward_import():
    edges = {"EmphysemaXAILib.io.read": {"EmphysemaXAILib.volume", "EmphysemaXAILib.app.text"},
             "EmphysemaXAILib.cli": {"EmphysemaXAILib.app.text", "EmphysemaXAILib"}}
    assert upward(edges) == {"EmphysemaXAILib.io.read -> EmphysemaXAILib.app.text"}
    tree = ast.parse("import vtk\nfrom slicer.i18n import tr\nfrom . import x\n")
    assert outside_imports(tree) == {"vtk", "slicer.i18n", "slicer.i18n.tr"}
    assert matches("slicer.i18n.tr", QT_NAMES) and not matches("slicerx", MRML_NAMES)


def test_imports_only_point_down_the_layers():
    found = upward(graph()[0])
    new, fixed = sorted(found - KNOWN_UPWARD), sorted(KNOWN_UPWARD - found)
    assert not new, ("imports of a higher layer (LAYERS, docs/architecture.md): move the code down or the "
                     "import up:\n" + "\n".join(new))
    assert not fixed, "no longer found: delete them from KNOWN_UPWARD:\n" + "\n".join(fixed)


def test_the_core_imports_no_slicer_vtk_or_qt_and_mrml_no_qt():
    problems = []
    for name, (path, tree) in library_modules().items():
        outside = outside_imports(tree)
        forbidden = QT_NAMES + (MRML_NAMES if layer(name) < MRML_LAYER else ())
        problems += [f"{path.relative_to(ROOT)}: imports {n}" for n in sorted(outside) if matches(n, forbidden)]
    assert not problems, "layer breaches (Qt only in EmphysemaXAI.py; slicer / vtk only from mrml up):\n" + \
        "\n".join(problems)
