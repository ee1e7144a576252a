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


@pytest.mark.skipif(not shipped_available(), reason="the shipped model is not installed")
def test_an_explanation_whose_package_is_missing_is_skipped_and_the_others_run(phantom, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "monai", None)
    monkeypatch.setitem(sys.modules, "monai.visualize", None)
    options = AnalysisOptions(engine="classical", explain=("ig", "gradcampp", "gradcam", "attention"))
    result = analyze_case(phantom.ct, options, lung_mask=phantom.labels["lungs"])
    assert result.severity is not None
    assert list(result.explanations) == ["gradcam", "attention"]          # torch alone: the module's defaults
    assert result.explanations["attention"].volume.any() and result.explanations["gradcam"].volume.any()
    skipped = [w for w in result.warnings if w.startswith("explanation ")]
    assert len(skipped) == 2
    assert "ig skipped" in skipped[0] and "captum" in skipped[0] and "captum>=0.9" in skipped[0]
    assert "gradcampp skipped" in skipped[1] and "package monai," in skipped[1] and "monai>=1.5.1" in skipped[1]
