"""pytest's ``--slicer-python`` option and the ``slow`` marker, for both test folders.

With ``--slicer-python`` (``make test-slicer-python``), pytest runs only the tests marked
``slicer_python``: those that need nothing beyond what 3D Slicer 5.10's Python ships
(requirements/slicer-python.txt). Test files that do not declare the marker are not even
imported (their imports may need torch or pandas), and the test files without pytest that also
run inside Slicer (``SLICER_PYTHON_FILES``) are marked here.

``slow``: the tests listed in Testing/slow_tests.txt (one place, with each one's measured time
and why it is slow) get the marker here; ``make test-fast`` leaves them out (``-m "not slow"``),
``make test`` runs them.
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
MARKER = "slicer_python"
#: Test files that Slicer's own test harness runs too (so they cannot import pytest to mark themselves).
SLICER_PYTHON_FILES = {"EmphysemaXAI/Testing/Python/EmphysemaXAICoreTest.py"}
SLOW = "slow"
SLOW_LIST = ROOT / "Testing" / "slow_tests.txt"


def slow_entries(path: Path = SLOW_LIST) -> list:
    """The node ids of Testing/slow_tests.txt: a file, ``file::test`` (every parameter) or
    ``file::test[id]``, one per line before any ``#``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [entry for entry in (line.split("#", 1)[0].strip() for line in lines) if entry]


def is_listed(nodeid: str, entries) -> bool:
    """Whether a test's node id is one of ``entries`` or inside one (its file, class or function)."""
    return any(nodeid == e or nodeid.startswith((e + "::", e + "[")) for e in entries)


def pytest_addoption(parser):
    parser.addoption("--slicer-python", action="store_true",
                     help=f"run only the tests marked {MARKER} (the environment of 3D Slicer's own packages)")


def pytest_configure(config):
    if config.getoption("--slicer-python") and not config.option.markexpr:
        config.option.markexpr = MARKER


def _relative(path: Path) -> str | None:
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return None


def pytest_ignore_collect(collection_path, config):
    if not config.getoption("--slicer-python") or collection_path.suffix != ".py":
        return None
    if collection_path.name == "conftest.py" or _relative(collection_path) in SLICER_PYTHON_FILES:
        return None
    return True if MARKER not in collection_path.read_text(encoding="utf-8") else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    slow = slow_entries()
    for item in items:
        if _relative(item.path) in SLICER_PYTHON_FILES:
            item.add_marker(getattr(pytest.mark, MARKER))
        if is_listed(item.nodeid, slow):
            item.add_marker(getattr(pytest.mark, SLOW))
