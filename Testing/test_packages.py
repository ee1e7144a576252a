"""What options need (EmphysemaXAILib.packages): required vs optional packages, what is missing,
and the pip ranges, which equal Resources/requirements.txt and pyproject.toml."""
import sys
import tomllib

import pytest
from helpers import PROJECT

from EmphysemaXAILib.errors import InputError, MissingPackage
from EmphysemaXAILib.options import EXPLAIN_METHODS, AnalysisOptions
from EmphysemaXAILib.packages import (
    METHOD_PACKAGES,
    PIP_REQUIREMENTS,
    is_installed,
    missing_for,
    missing_package,
    required_packages,
)


def by_name(needs):
    return {need.package: need for need in needs}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub cache of this test's own, empty (the test may put lungmask's weights in it)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("EMPHYSEMA_XAI_LUNGMASK_WEIGHTS", raising=False)
    return tmp_path / "hub" / "checkpoints"


def test_engine_auto_offers_lungmask_only_with_its_weights_on_this_machine(hub, monkeypatch):
    assert [n.package for n in required_packages()] == ["torch"]        # auto would never run lungmask
    hub.mkdir(parents=True)
    (hub / "unet_r231-d5d2fc3d.pth").write_bytes(b"made by the test")    # lungmask's published file name
    assert [n.package for n in required_packages()] == ["torch", "lungmask"]
    for name in ("torch",):                                               # the check runs before torch is loaded
        monkeypatch.setitem(sys.modules, name, None)
    assert [n.package for n in required_packages()] == ["torch", "lungmask"]
    (hub / "unet_r231-d5d2fc3d.pth").unlink()
    given = hub / "mine.pth"
    given.write_bytes(b"made by the test")
    assert [n.package for n in required_packages(AnalysisOptions(lungmask_weights=str(given)))] == ["torch", "lungmask"]


def test_defaults_need_torch_and_lungmask_as_optional(hub):
    hub.mkdir(parents=True)
    (hub / "unet_r231-d5d2fc3d.pth").write_bytes(b"made by the test")
    needs = required_packages()
    assert [n.package for n in needs] == ["torch", "lungmask"]        # torch first: installed before the others
    assert not any(n.required for n in needs)
    assert "classical engine" in by_name(needs)["lungmask"].without
    assert "QCT only" in by_name(needs)["torch"].without
    assert by_name(needs)["lungmask"].requirement == PIP_REQUIREMENTS["lungmask"]


def test_classical_engine_without_a_model_needs_nothing():
    assert required_packages(AnalysisOptions(engine="classical", model="none")) == []


def test_explicit_choices_are_required():
    needs = by_name(required_packages(AnalysisOptions(engine="lungmask", model="none")))
    assert set(needs) == {"torch", "lungmask"} and needs["lungmask"].required and needs["torch"].required
    needs = by_name(required_packages(AnalysisOptions(engine="classical", model="/models/mine")))
    assert set(needs) == {"torch"} and needs["torch"].required and "stops" in needs["torch"].without


def test_explanation_methods_need_captum_or_monai_or_neither():
    assert set(METHOD_PACKAGES) == set(EXPLAIN_METHODS)
    needs = by_name(required_packages(AnalysisOptions(engine="classical", explain=("attention", "gradcam"))))
    assert set(needs) == {"torch"}                                   # attention and gradcam: torch alone
    needs = by_name(required_packages(AnalysisOptions(engine="classical",
                                                      explain=("gradcam", "gradcampp", "ig", "smoothgrad"))))
    assert set(needs) == {"torch", "captum", "monai"}
    assert needs["captum"].features == ("explanation ig", "explanation smoothgrad")
    assert needs["monai"].features == ("explanation gradcampp",) and not needs["monai"].required   # skipped
    assert "skipped" in needs["captum"].without


def test_output_extras():
    options = AnalysisOptions(engine="classical", model="none")
    assert required_packages(options) == []                     # the case files need nothing Slicer lacks
    report = required_packages(options, report=True)
    assert [(n.package, n.required) for n in report] == [("matplotlib", True)]
    batch = required_packages(options, batch=True)
    assert [(n.package, n.required) for n in batch] == [("matplotlib", False), ("tqdm", False)]
    assert batch[1].without == "one progress line per case"
    on_dask = required_packages(options, batch=True, dask=True)     # --workers N > 1 or --scheduler tcp://
    assert [(n.package, n.required) for n in on_dask][-1] == ("distributed", True)
    assert on_dask[-1].requirement == "distributed>=2024.8"
    assert "distributed" in [n.package for n in missing_for(options, batch=True, dask=True, installed=lambda n: False)]


def test_missing_for_keeps_what_does_not_import(monkeypatch, hub):
    hub.mkdir(parents=True)
    (hub / "unet_r231-d5d2fc3d.pth").write_bytes(b"made by the test")
    options = AnalysisOptions(explain=("gradcam", "ig"))
    assert [n.package for n in missing_for(options, installed=lambda name: name == "torch")] == ["lungmask", "captum"]
    monkeypatch.setitem(sys.modules, "lungmask", None)     # `import lungmask` now raises ImportError
    assert not is_installed("lungmask") and is_installed("numpy")
    assert "lungmask" in [n.package for n in missing_for(options)]
    assert not is_installed("surely_no_such_package_here")


def test_missing_package_error_is_one_line_and_an_input_error():
    error = missing_package("lungmask", "engine lungmask", "choose engine classical")
    assert isinstance(error, MissingPackage) and isinstance(error, InputError) and error.package == "lungmask"
    text = str(error)
    assert "\n" not in text and "lungmask>=0.2.22" in text and "choose engine classical" in text


def test_pip_ranges_equal_the_requirements_file_and_pyproject():
    lines = [line.split("#")[0].strip() for line in
             (PROJECT / "EmphysemaXAI" / "Resources" / "requirements.txt").read_text().splitlines()]
    assert sorted(line for line in lines if line) == sorted(PIP_REQUIREMENTS.values())
    declared = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in PIP_REQUIREMENTS.values():
        assert requirement in declared, requirement


@pytest.mark.parametrize("shipped", ["numpy", "scipy", "SimpleITK", "pydicom"])
def test_never_asks_for_a_package_slicer_ships(shipped):
    assert shipped.lower() not in {name.lower() for name in PIP_REQUIREMENTS}


def test_dicom_results_require_highdicom():
    needs = missing_for(AnalysisOptions(engine="classical", model="none"), dicom=True, installed=lambda name: False)
    assert [(n.package, n.required) for n in needs] == [("highdicom", True)]
    assert not missing_for(AnalysisOptions(engine="classical", model="none"), installed=lambda name: False)
