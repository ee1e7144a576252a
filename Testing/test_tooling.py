"""The developer tooling around the suite: the pre-commit hooks, the two test lanes."""
import ast
import importlib.util
import re
import subprocess
import sys
import tomllib

import yaml  # PyYAML: a dependency of dask (distributed), which the project requires
from helpers import PROJECT

LIB = PROJECT / "EmphysemaXAI" / "EmphysemaXAILib"
TEST_FILES = sorted([*(PROJECT / "Testing").rglob("test_*.py"),
                     *(PROJECT / "EmphysemaXAI" / "Testing").rglob("*Test.py")])


def _root_conftest():
    """The project root's conftest.py, which applies Testing/slow_tests.txt (``import conftest``
    here would find Testing/conftest.py)."""
    spec = importlib.util.spec_from_file_location("emphysema_root_conftest", PROJECT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROOT_CONFTEST = _root_conftest()
slow_entries, is_listed = ROOT_CONFTEST.slow_entries, ROOT_CONFTEST.is_listed


def collected_names(tree) -> list:
    """``test`` and ``Class::test`` of a test file's test functions."""
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            out.append(node.name)
        elif isinstance(node, ast.ClassDef):
            out.extend(f"{node.name}::{f.name}" for f in node.body
                       if isinstance(f, ast.FunctionDef) and f.name.startswith("test"))
    return out


def library_imports(tree) -> set:
    """The library's sub-packages a test file imports (``EmphysemaXAILib.io.read`` -> io)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n.split(".")[1] for n in names if n.startswith("EmphysemaXAILib.") }


def fast_tests() -> dict:
    """{test file relative to the project: [node ids of its tests not listed slow]}."""
    slow = slow_entries()
    out = {}
    for path in TEST_FILES:
        relative = path.relative_to(PROJECT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        out[relative] = ([f"{relative}::{name}" for name in collected_names(tree)
                          if not is_listed(f"{relative}::{name}", slow)], library_imports(tree))
    return out


def test_pre_commit_runs_the_locked_ruff_with_the_blanket_noqa_rule(tmp_path):
    config = yaml.safe_load((PROJECT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert set(hooks) == {"ruff-check"}
    hook = hooks["ruff-check"]
    assert hook["entry"].split()[:2] == ["ruff", "check"] and hook["language"] == "python"
    locked = re.search(r"^ruff==(\S+)$", (PROJECT / "requirements" / "lock.txt").read_text(), re.M).group(1)
    assert hook["additional_dependencies"] == [f"ruff=={locked}"]
    lint = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "PGH004" in lint["select"]
    # the rule fires with the project's configuration on a blanket noqa, and not on a specific one
    (tmp_path / "blanket.py").write_text("import os  # noqa\n")
    (tmp_path / "specific.py").write_text("import os  # noqa: F401\n")
    codes = {}
    for name in ("blanket.py", "specific.py"):
        done = subprocess.run([sys.executable, "-m", "ruff", "check", "--config", str(PROJECT / "pyproject.toml"),
                               "--no-cache", "--output-format", "concise", str(tmp_path / name)],
                              capture_output=True, text=True)
        codes[name] = (done.returncode, "PGH004" in done.stdout)
    assert codes == {"blanket.py": (1, True), "specific.py": (0, False)}


def test_every_slow_entry_names_an_existing_test():
    known = set()
    for path in TEST_FILES:
        relative = path.relative_to(PROJECT).as_posix()
        known.add(relative)
        names = collected_names(ast.parse(path.read_text(encoding="utf-8")))
        known.update(f"{relative}::{name}" for name in names)
        known.update(f"{relative}::{name.split('::')[0]}" for name in names if "::" in name)
    entries = slow_entries()
    assert entries, "Testing/slow_tests.txt lists no test"
    stale = [e for e in entries if e.split("[")[0] not in known]
    assert not stale, "Testing/slow_tests.txt names tests that do not exist:\n" + "\n".join(stale)
    assert len(entries) == len(set(entries)), "Testing/slow_tests.txt lists a test twice"


def test_the_fast_lane_keeps_a_test_of_every_library_sub_package():
    """make test-fast (-m "not slow") runs, for each sub-package of the library, at least one test
    in its folder of Testing/ or in a test file that imports it."""
    packages = sorted(p.parent.name for p in LIB.glob("*/__init__.py"))
    assert {"io", "analysis", "segmentation", "model", "mrml", "app", "cli"} <= set(packages)
    fast = fast_tests()
    uncovered = [package for package in packages
                 if not any(ids and (relative.startswith(f"Testing/{package}/") or package in imported)
                            for relative, (ids, imported) in fast.items())]
    assert not uncovered, f"no test outside Testing/slow_tests.txt for: {uncovered}"
