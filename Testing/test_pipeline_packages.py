"""analyze_case when optional packages are missing: lungmask (classical engine), torch (QCT only,
or a one-line error for a model chosen explicitly), captum / MONAI (that explanation skipped)."""
import sys

import pytest

from EmphysemaXAILib import pipeline
from EmphysemaXAILib.errors import MissingPackage
from EmphysemaXAILib.model.checkpoint import SHIPPED_DIR, shipped_available
from EmphysemaXAILib.options import AnalysisOptions
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.pipeline import analyze_case


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParams(size="small", seed=5, extent_pct=15, pattern="mixed"))


@pytest.fixture
def no_cache(monkeypatch):
    monkeypatch.setattr(pipeline, "_PREDICTORS", {})     # a predictor cached by another test would hide torch


def test_defaults_without_lungmask_and_torch_give_qct_and_say_why(phantom, monkeypatch, no_cache):
    monkeypatch.setitem(sys.modules, "lungmask", None)
    monkeypatch.setitem(sys.modules, "torch", None)      # `import torch` now raises ImportError
    result = analyze_case(phantom.ct)                    # engine auto, model auto
    assert result.segmentation.engine_used == "classical"
    assert result.qct is not None and result.qct.regions
    assert result.severity is None and result.explanations == {}
    assert any("lungmask" in w and "not installed" in w for w in result.warnings)
    cnn = [w for w in result.warnings if w.startswith("severity CNN skipped")]
    assert len(cnn) == 1 and "torch" in cnn[0] and "QCT" in cnn[0]
    assert result.summary()["severity"] is None


def test_a_model_chosen_explicitly_without_torch_is_a_one_line_error(phantom, monkeypatch, no_cache):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingPackage) as raised:
        analyze_case(phantom.ct, AnalysisOptions(engine="classical", model=str(SHIPPED_DIR)), lung_mask=None)
    assert raised.value.package == "torch" and "\n" not in str(raised.value)
    assert "torch>=" in str(raised.value) and "model none" in str(raised.value)


@pytest.fixture(scope="module")
def explained(phantom):
    """One analysis with the shipped model and four explanations asked for, captum and MONAI
    hidden (ig and gradcampp skipped, gradcam and attention run), and every progress call: the
    two tests below read it (each used to run its own analysis of the same phantom, ~40 s)."""
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "captum", None)
        patch.setitem(sys.modules, "monai", None)
        patch.setitem(sys.modules, "monai.visualize", None)
        options = AnalysisOptions(engine="classical", explain=("ig", "gradcampp", "gradcam", "attention"))
        result = analyze_case(phantom.ct, options, lung_mask=phantom.labels["lungs"],
                              progress=lambda step, fraction, message: calls.append((step, fraction, message)))
    return result, calls


@pytest.mark.skipif(not shipped_available(), reason="the shipped model is not installed")
def test_an_explanation_whose_package_is_missing_is_skipped_and_the_others_run(explained):
    result, _ = explained
    assert result.severity is not None
    assert list(result.explanations) == ["gradcam", "attention"]          # torch alone: the module's defaults
    assert result.explanations["attention"].volume.any() and result.explanations["gradcam"].volume.any()
    skipped = [w for w in result.warnings if w.startswith("explanation ")]
    assert len(skipped) == 2
    assert "ig skipped" in skipped[0] and "captum" in skipped[0] and "captum>=0.9" in skipped[0]
    assert "gradcampp skipped" in skipped[1] and "package monai," in skipped[1] and "monai>=1.5.1" in skipped[1]


@pytest.mark.skipif(not shipped_available(), reason="the shipped model is not installed")
def test_progress_moves_within_the_model_and_the_explanations(explained):
    """The module's bar moves while the CNN and the explanations run (issue 26: it stood still for
    the longest steps): several calls inside each of those steps, the whole sequence never going back
    (also when two of the four explanations asked for are skipped)."""
    _, calls = explained
    fractions = [fraction for _, fraction, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    steps = len(pipeline.STEPS)
    for name, index, unit in (("severity", 4, "slice"), ("explain", 5, "tile")):
        inside = [(f, m) for s, f, m in calls if s == name and index / steps < f <= (index + 1) / steps]
        assert len(inside) >= 2, (name, [c for c in calls if c[0] == name])
        assert all(unit in m for _, m in inside)
    assert any("gradcam" in m for s, _, m in calls if s == "explain") and \
        any("attention" in m for s, _, m in calls if s == "explain")
