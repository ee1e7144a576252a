"""Explanations: attribution methods (captum / MONAI), volumes on the CT grid, region scores,
faithfulness figures, analyze --explain, the scene's attribution nodes."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import run_cli

from EmphysemaXAILib.explain.methods import FILL_HU, METHODS, NORMAL_LUNG_HU, attribute, normal_lung_baseline
from EmphysemaXAILib.model.severity_net import SeverityNet
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return SeverityNet(width=8, hidden=16).eval()


@pytest.fixture(scope="module")
def tiles():
    rng = np.random.default_rng(0)
    images = rng.normal(-860, 25, (4, 3, 32, 32)).astype(np.float32)
    images[:, :, :, :6] = FILL_HU                     # a chest-wall strip outside the lung
    images[1, :, 10:18, 10:18] = -990                 # a lesion in tile 1
    return images


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_a_lung_only_map(net, tiles, method):
    maps = attribute(net, tiles, method, steps=8)
    assert maps.shape == tiles.shape and maps.dtype == np.float32
    assert np.isfinite(maps).all() and np.abs(maps).max() > 0
    assert (maps[:, :, :, :6] == 0).all()           # nothing outside the lung
    if method in ("gradcam", "gradcampp", "attention"):
        assert maps.min() >= 0


def test_integrated_gradients_completeness_from_the_normal_lung_baseline(net, tiles):
    """IG's attributions add up to f(x) - f(baseline) (captum's completeness axiom) and the
    baseline is normal lung (not zeros / air)."""
    from EmphysemaXAILib.explain.methods import TargetLogit

    baseline = normal_lung_baseline(torch.from_numpy(tiles))
    assert float(baseline[0, 0, 20, 20]) == NORMAL_LUNG_HU and float(baseline[0, 0, 0, 0]) == FILL_HU
    maps = attribute(net, tiles, "ig", steps=64)
    wrapper = TargetLogit(net)
    with torch.no_grad():
        delta = (wrapper(torch.from_numpy(tiles)) - wrapper(baseline))[:, 0].numpy()
    assert maps.sum(axis=(1, 2, 3)) == pytest.approx(delta, abs=float(0.05 * np.abs(delta).max() + 1e-4))


def test_unknown_method_is_refused(net, tiles):
    with pytest.raises(ValueError, match="unknown explanation method"):
        attribute(net, tiles, "lime")
    bad = run_cli("analyze", "x.nrrd", "--out", "nowhere", "--explain", "gradcam,lime", "--no-scene")
    assert bad.returncode == 2 and "lime" in bad.stderr


@pytest.fixture(scope="module")
def explained_case(tiny_model, tmp_path_factory):
    phantom = generate_phantom(PhantomParams(size="small", seed=21, extent_pct=20, pattern="mixed"))
    folder = write_phantom(phantom, tmp_path_factory.mktemp("ex") / "ph", fmt="nrrd")
    out = folder.parent / "out"
    done = run_cli("analyze", folder / "ct.nrrd", "--out", out, "--model", tiny_model, "--lung-mask",
                   folder / "labels" / "lungs.nrrd", "--explain", "gradcam,ig,attention,occlusion",
                   "--no-report")  # the report with an attribution panel: test_thin_inputs.py
    assert done.returncode == 0, done.stderr
    return phantom, out


def test_analyze_writes_attribution_volumes_on_the_ct_grid(explained_case):
    phantom, out = explained_case
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["explanations"]) == {"gradcam", "ig", "attention", "occlusion"}
    ct = sitk.ReadImage(str(out / "lung_labels.nrrd"))
    lung = phantom.labels["lungs"] > 0
    for _, entry in summary["explanations"].items():
        image = sitk.ReadImage(str(out / entry["file"]))
        assert image.GetPixelID() == sitk.sitkFloat32
        assert image.GetSize() == ct.GetSize() and image.GetSpacing() == ct.GetSpacing()
        assert image.GetOrigin() == ct.GetOrigin() and image.GetDirection() == ct.GetDirection()
        values = sitk.GetArrayFromImage(image)
        assert (values[~lung] == 0).all() and np.abs(values[lung]).max() > 0
        scores = entry["region_scores"]
        assert scores["whole"] == pytest.approx(1.0)
        assert scores["right"] + scores["left"] == pytest.approx(1.0, abs=1e-4)
        assert scores["upper"] + scores["middle"] + scores["lower"] == pytest.approx(1.0, abs=1e-4)
        positive = np.clip(values, 0, None)
        right = positive[phantom.labels["lungs"] == 1].sum() / positive[lung].sum()
        assert scores["right"] == pytest.approx(right, abs=1e-3)
    assert summary["explanations"]["gradcam"]["tiles_explained"] == summary["explanations"]["gradcam"]["tiles_total"]
    ig = summary["explanations"]["ig"]
    assert ig["tiles_explained"] <= 96 and "most-attended" in ig["coverage"]
    assert summary["timings_s"]["explain"] > 0


def test_scene_has_attribution_overlays_renderings_and_table(explained_case):
    import slicer

    from EmphysemaXAILib.mrml.app import bootstrap

    _, out = explained_case
    scene, _ = bootstrap(fresh=True)
    slicer.util.loadScene(str(out / "scene.mrb"))
    names = {n.GetName() for n in scene.GetNodesByClass("vtkMRMLScalarVolumeNode")}
    assert {f"CT attribution {m}" for m in ("gradcam", "ig", "attention", "occlusion")} <= names
    node = scene.GetFirstNodeByName("CT attribution gradcam")
    display = node.GetScalarVolumeDisplayNode()
    assert display.GetColorNode().GetName() == "EmphysemaXAI attribution" and display.GetApplyThreshold()
    tables = {n.GetName() for n in scene.GetNodesByClass("vtkMRMLTableNode")}
    assert "CT attribution by region" in tables
    renderings = list(scene.GetNodesByClass("vtkMRMLVolumeRenderingDisplayNode"))
    visible = [r.GetVolumeNode().GetName() for r in renderings if r.GetVisibility()]
    assert visible == ["CT LAA map"]      # the default view: the LAA map; an attribution's rendering when chosen
