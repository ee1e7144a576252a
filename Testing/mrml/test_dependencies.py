"""Installing the module's packages inside Slicer (EmphysemaXAILib.mrml.dependencies): the pure
parts (plan, constraints, pip arguments, message) and the thin Slicer calls with stand-ins for
slicer.util and the PyTorch extension (no network, nothing installed)."""
import subprocess
import sys
import types

import pytest
from helpers import PROJECT

from EmphysemaXAILib.errors import MissingPackage
from EmphysemaXAILib.mrml import dependencies as deps
from EmphysemaXAILib.options import AnalysisOptions
from EmphysemaXAILib.packages import required_packages

REQUIREMENTS = PROJECT / "EmphysemaXAI" / "Resources" / "requirements.txt"


def test_requirements_file_and_torch_range():
    names = [name for name, _ in deps.read_requirements(REQUIREMENTS)]
    assert names[0] == "torch" and {"lungmask", "monai", "captum"} <= set(names)
    assert not set(names) & {n.lower() for n in deps.SLICER_SHIPPED}        # pydicom, numpy ... never
    assert deps.torch_requirement(REQUIREMENTS) == ">=2.4.1,<=2.14.1"
    assert deps.requirement_specifier("monai>=1.5.1") == ">=1.5.1"


@pytest.mark.parametrize("version,ok", [("2.5.1+cu121", True), ("2.4.1", True), ("2.14.1", True),
                                        ("2.4.0", False), ("2.2.2", False), ("2.15.0", False), ("odd", False)])
def test_torch_version_check(version, ok):
    assert deps.satisfies(version, ">=2.4.1,<=2.14.1") is ok


def test_constraints_pin_what_is_installed_and_skip_the_rest():
    installed = {"numpy": "2.0.2", "SimpleITK": "2.5.0", "pydicom": "2.4.4", "torch": "2.5.1+cu121"}
    pins = deps.pinned_versions(version=installed.get)
    assert pins == installed
    text = deps.constraints_text(pins)
    assert "numpy==2.0.2\n" in text and "torch==2.5.1+cu121\n" in text and "scipy" not in text
    real = deps.pinned_versions()                       # this Python: numpy and scipy at least
    assert {"numpy", "scipy"} <= set(real)
    assert deps.pip_arguments(["monai>=1.5.1"], "/a b/c.txt") == ["-c", "/a b/c.txt", "monai>=1.5.1"]


@pytest.fixture
def r231_weights(tmp_path, monkeypatch):
    """lungmask's R231 weights in a torch hub cache of this test's own (a file the test creates;
    only its presence matters here)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("EMPHYSEMA_XAI_LUNGMASK_WEIGHTS", raising=False)
    path = tmp_path / "r231.pth"
    path.write_bytes(b"weights made by the test")
    return path


def test_plan_installs_torch_first_never_a_shipped_package():
    plan = deps.install_plan(REQUIREMENTS, ["lungmask", "captum", "pydicom", "numpy"], version=lambda n: None,
                             weights_here=lambda: True)
    assert plan.torch == ">=2.4.1,<=2.14.1" and not plan.torch_upgrade       # lungmask needs torch
    assert plan.pip == ["lungmask>=0.2.22", "captum>=0.9"] and not plan.lungmask_weights
    assert sorted(plan.refused) == ["numpy", "pydicom"]
    plan = deps.install_plan(REQUIREMENTS, ["monai"], version={"torch": "2.2.2"}.get)
    assert plan.torch == ">=2.4.1,<=2.14.1" and plan.torch_upgrade and plan.pip == ["monai>=1.5.1"]
    plan = deps.install_plan(REQUIREMENTS, ["tqdm"], version={"torch": "2.6.0"}.get)
    assert plan.torch is None and plan.pip == ["tqdm>=4.66"]
    assert "torch>=2.4.1" in deps.confirmation_text(deps.install_plan(REQUIREMENTS, ["torch"], version=lambda n: None))


def test_lungmask_is_offered_with_its_weights_in_one_confirmation(monkeypatch):
    plan = deps.install_plan(REQUIREMENTS, ["lungmask"], version=lambda n: None, weights_here=lambda: False)
    assert plan.lungmask_weights and plan.pip == ["lungmask>=0.2.22"]
    assert "lungmask's R231 weights" in deps.confirmation_text(plan)
    assert not deps.install_plan(REQUIREMENTS, ["captum"], weights_here=lambda: False).lungmask_weights
    slicer, fetched = FakeSlicer(), []
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.setattr(deps, "download_lungmask_weights", lambda: fetched.append("R231") or ({}, []))
    monkeypatch.setattr(deps, "installed_version", lambda name: {"torch": "2.6.0", "lungmask": "0.2.22"}.get(name))
    monkeypatch.setattr("EmphysemaXAILib.segmentation.lungmask_engine.weights_found", lambda *a, **k: False)
    result = deps.install_for(REQUIREMENTS, ["lungmask"])
    assert len(slicer.questions) == 1 and "R231 weights" in slicer.questions[0]       # one confirmation
    assert fetched == ["R231"] and result.ok and "lungmask R231 weights" in result.installed

    def offline():
        raise OSError("no internet")

    monkeypatch.setattr(deps, "download_lungmask_weights", offline)
    result = deps.install_for(REQUIREMENTS, ["lungmask"], ask_confirmation=False)
    assert result.failed == {"lungmask R231 weights": "no internet"} and "lungmask" in result.installed


def test_one_message_says_what_happened_and_what_runs_without(r231_weights):
    needs = required_packages(AnalysisOptions(explain=("gradcam",), lungmask_weights=str(r231_weights)))
    text = deps.install_message({"torch": "2.6.0", "captum": "0.9.0"},
                                {"lungmask": "pip could not install lungmask>=0.2.22 beside Slicer's packages"},
                                needs, restart=True, refused=["pydicom"])
    assert text.startswith("Installed torch 2.6.0, captum 0.9.0.")
    assert "Could not install lungmask: pip could not" in text and "classical engine" in text
    assert "pydicom comes with Slicer" in text and "Restart Slicer" in text
    assert deps.install_message({}, {}) == "Nothing to install: every package is here."


class FakeSlicer:
    """Stand-in for ``slicer`` recording pip_install calls (the list form Slicer accepts)."""

    def __init__(self, confirm=True, fail_on=()):
        self.calls, self.questions = [], []
        self.fail_on = fail_on
        self.util = types.SimpleNamespace(pip_install=self.pip_install, confirmOkCancelDisplay=self.confirm)
        self._confirm = confirm

    def confirm(self, text, windowTitle=None, **kwargs):
        self.questions.append(text)
        return self._confirm

    def pip_install(self, requirements):
        assert isinstance(requirements, list) and requirements[0] == "-c"
        self.calls.append((requirements[2:], open(requirements[1]).read()))
        if any(r.startswith(self.fail_on) for r in requirements[2:]) if self.fail_on else False:
            raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip"])


def fake_pytorch_utils(calls, returns=True):
    class PyTorchUtilsLogic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
            calls.append({"askConfirmation": askConfirmation, "torchVersionRequirement": torchVersionRequirement})
            return returns

    return types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic)


def test_install_for_runs_torch_through_the_extension_then_pip_under_constraints(monkeypatch):
    slicer, torch_calls = FakeSlicer(), []
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", fake_pytorch_utils(torch_calls))
    result = deps.install_for(REQUIREMENTS, ["torch", "monai", "captum"])
    assert slicer.questions and "monai>=1.5.1" in slicer.questions[0]
    assert torch_calls == [{"askConfirmation": False, "torchVersionRequirement": ">=2.4.1,<=2.14.1"}]
    (requirements, constraints), = slicer.calls
    assert requirements == ["monai>=1.5.1", "captum>=0.9"]
    assert f"numpy=={deps.installed_version('numpy')}\n" in constraints
    assert f"torch=={deps.installed_version('torch')}\n" in constraints
    assert result.ok and set(result.installed) == {"torch", "monai", "captum"}
    assert result.message.startswith("Installed torch ")


def test_install_for_reports_each_failure_and_installs_the_rest(monkeypatch, r231_weights):
    slicer = FakeSlicer(fail_on="lungmask")
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)          # the PyTorch extension is not installed
    monkeypatch.setattr(deps, "installed_version", lambda name: {"numpy": "2.0.2", "tqdm": "4.67.1"}.get(name))
    needs = required_packages(AnalysisOptions(lungmask_weights=str(r231_weights)), batch=True)
    result = deps.install_for(REQUIREMENTS, ["lungmask", "captum", "tqdm"], ask_confirmation=False, needs=needs)
    assert "PyTorch extension is not installed" in result.failed["torch"]
    assert result.failed["lungmask"] == result.failed["captum"] == "it needs torch, which could not be installed"
    assert [c[0] for c in slicer.calls] == [["tqdm>=4.66"]] and result.installed == {"tqdm": "4.67.1"}
    assert not result.ok and "Without it: the classical engine" in result.message
    with pytest.raises(RuntimeError, match="Could not install torch"):
        deps.install_packages(REQUIREMENTS, ["lungmask"])


def test_a_failing_pip_batch_is_retried_package_by_package(monkeypatch):
    slicer = FakeSlicer(fail_on="lungmask")
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    result = deps.install_for(REQUIREMENTS, ["lungmask", "tqdm"], ask_confirmation=False)
    assert [c[0] for c in slicer.calls] == [["lungmask>=0.2.22", "tqdm>=4.66"], ["lungmask>=0.2.22"], ["tqdm>=4.66"]]
    assert "exit code 1" in result.failed["lungmask"] and "tqdm" in result.installed


def test_cancelled_installs_nothing_and_says_what_runs_without(monkeypatch):
    slicer = FakeSlicer(confirm=False)
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    needs = required_packages(AnalysisOptions(engine="classical", explain=("gradcam", "ig")), batch=True)
    result = deps.install_for(REQUIREMENTS, ["tqdm", "captum"], needs=needs)
    assert result.cancelled and not slicer.calls and "cancelled" in result.message
    assert "Without captum: the ig explanation is skipped" in result.message
    assert "Without tqdm: one progress line per case" in result.message


def test_download_lungmask_weights_without_lungmask(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))   # not torch.hub.set_dir: it would stick for later tests
    monkeypatch.setitem(sys.modules, "lungmask", None)
    with pytest.raises(MissingPackage, match="lungmask"):
        deps.download_lungmask_weights()
    assert not any(tmp_path.iterdir())                  # nothing downloaded
