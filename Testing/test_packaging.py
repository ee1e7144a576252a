"""The extension's packaging: CMake lists, extension description, UI bindings (the layers: test_imports.py)."""
import ast
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET

from helpers import PROJECT

MODULE = PROJECT / "EmphysemaXAI"


def cmake_set(text: str, name: str) -> list:
    """Items of ``set(NAME item item ...)`` in a CMakeLists text (variables expanded for MODULE_NAME)."""
    match = re.search(rf"set\(\s*{name}\s+(.*?)\)", text, re.S)
    assert match, f"set({name} ...) not found"
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    module = re.search(r"set\(MODULE_NAME\s+(\w+)\)", text).group(1)
    return [i.replace("${MODULE_NAME}", module) for i in " ".join(items).split()]


def test_module_cmakelists_lists_every_python_file_and_only_existing_files():
    text = (MODULE / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in text and "slicerMacroBuildScriptedModule" in text
    scripts = cmake_set(text, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_set(text, "MODULE_PYTHON_RESOURCES")
    missing = [f for f in scripts + resources if not (MODULE / f).is_file()]
    assert not missing, f"listed in EmphysemaXAI/CMakeLists.txt but missing: {missing}"
    on_disk = {p.relative_to(MODULE).as_posix() for p in (MODULE / "EmphysemaXAILib").rglob("*.py")}
    on_disk.add("EmphysemaXAI.py")
    unlisted = sorted(on_disk - set(scripts))
    assert not unlisted, f"not listed in MODULE_PYTHON_SCRIPTS (would be missing from the extension): {unlisted}"
    data = {p.relative_to(MODULE).as_posix() for p in (MODULE / "Resources").rglob("*") if p.is_file()}
    assert not sorted(data - set(resources)), "resource files not listed in MODULE_PYTHON_RESOURCES"


def test_cmake_test_directories_exist_and_reference_real_scripts():
    assert "add_subdirectory(Python)" in (MODULE / "Testing" / "CMakeLists.txt").read_text()
    text = (MODULE / "Testing" / "Python" / "CMakeLists.txt").read_text()
    for script in re.findall(r"SCRIPT\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+)\)", text):
        assert (MODULE / "Testing" / "Python" / script).is_file()


#: Slicer's extension catalog entry schema v1.0.1 (Slicer/Slicer, Schemas/
#: slicer-extension-catalog-entry-schema-v1.0.1.json; the Extensions Index checks entries against
#: it): property -> type, the required ones, and no other property allowed
CATALOG_PROPERTIES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                      "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}
CATALOG_REQUIRED = ("$schema", "category", "scm_url")


def test_extension_catalog_entry_follows_slicers_schema_and_agrees_with_cmake():
    import json

    cmake = (PROJECT / "CMakeLists.txt").read_text()
    assert "add_subdirectory(EmphysemaXAI)" in cmake
    meta = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', cmake))
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert meta.get(f"EXTENSION_{key}"), f"EXTENSION_{key} missing in CMakeLists.txt"
    entry = json.loads((PROJECT / "EmphysemaXAI.json").read_text())      # named after the extension
    assert set(entry) <= set(CATALOG_PROPERTIES), f"not in the schema: {set(entry) - set(CATALOG_PROPERTIES)}"
    assert all(key in entry for key in CATALOG_REQUIRED)
    assert all(isinstance(entry[key], CATALOG_PROPERTIES[key]) for key in entry)
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert entry["scm_type"] in ("git", "local") and entry["tier"] in (1, 3, 5)
    assert entry["category"] == meta["EXTENSION_CATEGORY"]
    assert entry["build_dependencies"] == meta["EXTENSION_DEPENDS"].split()           # PyTorch, as CMake says
    assert re.search(r"project\((\w+)\)", cmake).group(1) == "EmphysemaXAI"
    # The icon and screenshot the URLs point to exist in the repository.
    for url in (meta["EXTENSION_ICONURL"], meta["EXTENSION_SCREENSHOTURLS"]):
        assert (PROJECT / url.split("/main/", 1)[1]).is_file()


def test_pyproject_installs_the_library_and_command():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["emphysema-xai"] == "EmphysemaXAILib.cli:main"
    assert project["tool"]["setuptools"]["packages"]["find"]["where"] == ["EmphysemaXAI"]
    deps = " ".join(project["project"]["dependencies"])
    torch = next(d for d in project["project"]["dependencies"] if d.startswith("torch"))
    assert "<" in torch, "torch must be bounded above (an open range pulls a multi-GB build)"
    assert "slicer-core" not in deps  # a headless/test extra only, never installed into Slicer
    assert any("slicer-core" in d for d in project["project"]["optional-dependencies"]["headless"])
    lock = (PROJECT / "requirements" / "lock.txt").read_text()
    assert re.search(r"^torch==\S+$", lock, re.M) and re.search(r"^torchvision==\S+$", lock, re.M)


def test_ui_parameter_names_match_the_parameter_node():
    ui = ET.parse(MODULE / "Resources" / "UI" / "EmphysemaXAI.ui")
    names = {prop.find("string").text for prop in ui.iter("property") if prop.get("name") == "SlicerParameterName"}
    tree = ast.parse((MODULE / "EmphysemaXAI.py").read_text())
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EmphysemaXAIParameterNode")
    fields = {n.target.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    # the path fields and the explanation methods are bound by the widget (PATH_PARAMETERS: Slicer
    # 5.10's parameterNodeWrapper binds a ctkPathLineEdit only to pathlib.Path, which shows "." when
    # empty, and has no connector for a ctkCheckableComboBox)
    by_hand = ast.literal_eval(next(n.value for n in tree.body if isinstance(n, ast.Assign)
                                    and n.targets[0].id == "PATH_PARAMETERS"))
    assert names | set(by_hand) | {"explainMethods"} == fields and not names & (set(by_hand) | {"explainMethods"})
    classes_of = {w.get("name"): w.get("class") for w in ui.iter("widget")}
    assert {classes_of[w] for w in by_hand.values()} == {"ctkPathLineEdit"}            # issue 26 item 10
    assert classes_of["explainMethodsComboBox"] == "ctkCheckableComboBox"
    assert "QLineEdit" not in {classes_of[w.get("name")] for w in ui.iter("widget") if "Path" in w.get("name")}
    custom = {c.find("class").text: c.find("extends").text for c in ui.iter("customwidget")}
    assert custom["ctkCheckableComboBox"] == "QComboBox" and "ctkPathLineEdit" in custom
    annotations = {n.target.id: ast.unparse(n.annotation) for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    assert all(annotations[name] == "str" for name in [*by_hand, "explainMethods"])   # empty: not given
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    assert classes == ["EmphysemaXAI", "EmphysemaXAIParameterNode", "EmphysemaXAIWidget",
                       "EmphysemaXAILogic", "EmphysemaXAITest"]


def test_widget_uses_only_widgets_of_the_ui_and_methods_of_the_logic():
    source = (MODULE / "EmphysemaXAI.py").read_text()
    ui = ET.parse(MODULE / "Resources" / "UI" / "EmphysemaXAI.ui")
    widgets = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and used <= widgets, f"widgets missing from the .ui: {sorted(used - widgets)}"
    tree = ast.parse(source)
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EmphysemaXAILogic")
    methods = {n.name for n in logic.body if isinstance(n, ast.FunctionDef)}
    called = set(re.findall(r"self\.logic\.(\w+)", source))
    assert called <= methods, f"logic methods missing: {sorted(called - methods)}"
    # the library functions the logic calls exist (they are tested headless elsewhere)
    import importlib
    for module, name in re.findall(r"from (EmphysemaXAILib[\w.]*) import (\w+)", source):
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_translated_texts_are_whole_literals_with_placeholders():
    """Every ``_()`` of the module takes one string literal (adjacent literals are one literal to
    the parser), never a runtime concatenation or an f-string: translators get whole sentences,
    values go in through ``.format`` placeholders (Slicer's i18n rules; issue 26)."""
    tree = ast.parse((MODULE / "EmphysemaXAI.py").read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id == "_"]
    assert len(calls) > 20
    bad = [(call.lineno, ast.unparse(call)[:60]) for call in calls if len(call.args) != 1
           or not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[0].value, str)]
    assert not bad, f"_() with something other than one string literal: {bad}"
    # and no translated text is then glued to another piece of a sentence
    glued = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
             and any(isinstance(side, ast.Call) and isinstance(side.func, ast.Name) and side.func.id == "_"
                     and not side.args[0].value.rstrip().endswith((".", "</ol>", "</p>"))
                     for side in (node.left, node.right))]
    assert not glued, f"a translated fragment is concatenated at lines {glued}"


def test_library_is_importable_without_slicer_and_parses_on_python_312_syntax():
    code = ("import sys, EmphysemaXAILib, EmphysemaXAILib.cli, EmphysemaXAILib.analysis.qc;"
            "assert not any(m.split('.')[0] in ('slicer', 'vtk', 'qt') for m in sys.modules), "
            "[m for m in sys.modules if m.startswith(('slicer', 'vtk'))]")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for path in (MODULE / "EmphysemaXAILib").rglob("*.py"):
        ast.parse(path.read_text(), feature_version=(3, 11))


def test_slicer_requirements_resource_matches_the_package_ranges():
    """The module's Resources/requirements.txt is the one list of what Slicer needs installed;
    each line is the package's own range from pyproject.toml, and the module reads it."""
    declared = {re.split(r"[<>=!~;\[ ]", d)[0].lower(): d.split(";")[0].strip()
                for d in tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["dependencies"]}
    path = MODULE / "Resources" / "requirements.txt"
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    wanted = [line for line in lines if line]
    assert {re.split(r"[<>=!~;\[ ]", w)[0] for w in wanted} == {"torch", "monai", "captum", "lungmask", "matplotlib",
                                                               "tqdm", "highdicom", "distributed"}
    # Slicer's own packages are never (up)graded by the module: its DICOM browser uses its pydicom
    assert not {re.split(r"[<>=!~;\[ ]", w)[0].lower() for w in wanted} & {"numpy", "scipy", "pydicom", "simpleitk",
                                                                         "pillow", "vtk"}
    for line in wanted:
        assert declared[re.split(r"[<>=!~;\[ ]", line)[0]] == line, line
    cmake = (MODULE / "CMakeLists.txt").read_text()
    assert "Resources/requirements.txt" in cmake_set(cmake, "MODULE_PYTHON_RESOURCES")
    assert "REQUIREMENTS_FILE" in (MODULE / "EmphysemaXAI.py").read_text()
