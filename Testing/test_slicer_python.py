"""The Slicer-versions environment (``make test-slicer-python``, requirements/slicer-python.txt).

In both environments: pyproject.toml's ranges admit the versions 3D Slicer 5.10 ships. With
``--slicer-python``: exactly those versions are what this run imports, and none of the
project's optional heavy packages is installed, so the subset proves what it claims.
"""
import importlib.metadata
import importlib.util
import re
import tomllib

import pytest
from helpers import PROJECT
from packaging.requirements import Requirement

pytestmark = pytest.mark.slicer_python

#: What Slicer 5.10 does not ship and the library must not need for reading, QC, classical
#: segmentation, densitometry and DICOM writing.
NOT_IN_SLICER = ("torch", "monai", "captum", "lungmask", "pandas", "pyarrow", "matplotlib", "tqdm", "sklearn",
                 "skimage", "torchvision")


def slicer_versions() -> dict:
    """name -> version of requirements/slicer-python.txt."""
    lines = (PROJECT / "requirements" / "slicer-python.txt").read_text().splitlines()
    pins = [line.split("#")[0].strip() for line in lines]
    return dict(pin.lower().split("==") for pin in pins if pin)


def test_pyproject_ranges_admit_the_versions_slicer_ships():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    pins = slicer_versions()
    assert {"numpy", "scipy", "pydicom", "simpleitk", "pillow"} <= set(pins)
    checked = 0
    for line in project["dependencies"] + project["optional-dependencies"]["headless"]:
        requirement = Requirement(line)
        name = requirement.name.lower()
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), f"{line} excludes {pins[name]}"
            checked += 1
    assert checked >= 6  # numpy, scipy, SimpleITK, pydicom, slicer-core, vtk


def test_this_run_has_exactly_slicer_versions(request):
    if not request.config.getoption("--slicer-python"):
        pytest.skip("checks the environment of `make test-slicer-python` (pytest --slicer-python)")
    import numpy
    import pydicom
    import scipy

    installed = {name: importlib.metadata.version(name) for name in slicer_versions()}
    assert installed == slicer_versions()
    assert (numpy.__version__, scipy.__version__, pydicom.__version__) == ("2.0.2", "1.13.1", "2.4.4")
    present = [name for name in NOT_IN_SLICER if importlib.util.find_spec(name) is not None]
    assert not present, f"not shipped by Slicer, yet installed here: {present}"
    assert re.fullmatch(r"2\.5\.\d+", importlib.metadata.version("simpleitk"))
