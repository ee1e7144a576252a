"""pytest's ``--slicer-python`` option, for both test folders (``make test-slicer-python``).

With it, pytest runs only the tests marked ``slicer_python``: those that need nothing beyond
what 3D Slicer 5.10's Python ships (requirements/slicer-python.txt). Test files that do not
declare the marker are not even imported (their imports may need torch or pandas), and the test
files without pytest that also run inside Slicer (``SLICER_PYTHON_FILES``) are marked here.
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
MARKER = "slicer_python"
#: Test files that Slicer's own test harness runs too (so they cannot import pytest to mark themselves).
SLICER_PYTHON_FILES = {"EmphysemaXAI/Testing/Python/EmphysemaXAICoreTest.py"}


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
    for item in items:
        if _relative(item.path) in SLICER_PYTHON_FILES:
            item.add_marker(getattr(pytest.mark, MARKER))
