"""The lungmask engine when its package is missing, and fetching its weights through lungmask's
own loading path (tests create the weights: no internet)."""
import sys

import pytest

from EmphysemaXAILib.errors import MissingPackage
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.segmentation import segment_lungs
from EmphysemaXAILib.segmentation.lungmask_engine import PUBLISHED, WeightsMissing, fetch_weights


@pytest.fixture(scope="module")
def ct():
    return generate_phantom(PhantomParams(size="small", seed=5)).ct


def test_auto_falls_back_to_classical_when_lungmask_is_not_installed(ct, monkeypatch):
    monkeypatch.setitem(sys.modules, "lungmask", None)      # `from lungmask import ...` raises ImportError
    result = segment_lungs(ct, engine="auto")
    assert result.engine_used == "classical" and (result.labels == 1).any() and (result.labels == 2).any()
    assert "lungmask" in result.fallback_reason and "not installed" in result.fallback_reason
    assert result.warnings[0] == result.fallback_reason
    assert result.as_dict()["fallback_reason"] == result.fallback_reason


def test_chosen_lungmask_engine_without_the_package_is_a_one_line_error(ct, monkeypatch):
    monkeypatch.setitem(sys.modules, "lungmask", None)
    with pytest.raises(MissingPackage) as raised:
        segment_lungs(ct, engine="lungmask")
    text = str(raised.value)
    assert raised.value.package == "lungmask" and "\n" not in text
    assert "lungmask>=0.2.22" in text and "classical" in text


def test_fetch_weights_keeps_a_cached_file_and_downloads_through_lungmask(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    mask = pytest.importorskip("lungmask.mask")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))   # the hub cache is $TORCH_HOME/hub (set_dir would stick
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)  # for every later test)
    target = tmp_path / "hub" / "checkpoints" / PUBLISHED["R231"][0]
    calls = []

    def fake_get_model(name, modelpath=None):          # what lungmask's download leaves behind
        calls.append(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"w": torch.zeros(3)}, target)

    monkeypatch.setattr(mask, "get_model", fake_get_model)
    path, warnings = fetch_weights("R231")
    assert path == target and target.is_file() and calls == ["R231"]
    assert warnings and "not the published ones" in warnings[0]     # digest checked after download
    path, _ = fetch_weights("R231")                                   # cached: no second download
    assert calls == ["R231"]

    def offline(name, modelpath=None):
        raise OSError("no network")

    monkeypatch.setattr(mask, "get_model", offline)
    with pytest.raises(WeightsMissing, match="could not be downloaded"):
        fetch_weights("LTRCLobes")
