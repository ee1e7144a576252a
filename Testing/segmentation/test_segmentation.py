"""Lung segmentation: classical engine accuracy, lungmask engine with generated weights, masks."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import run_cli, shared

from EmphysemaXAILib import InputError, read_ct
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.segmentation import load_mask, segment_lungs
from EmphysemaXAILib.segmentation.classical import segment_classical
from EmphysemaXAILib.segmentation.lungmask_engine import ENV_FILL_WEIGHTS, ENV_WEIGHTS, WeightsMissing
from EmphysemaXAILib.volume import CTVolume


def dice(a, b):
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("dose,kernel,extent,pattern", [("standard", "standard", 0, "none"),
                                                        ("low", "standard", 0, "none"),
                                                        ("low", "sharp", 25, "mixed"),
                                                        ("standard", "soft", 15, "panlobular")])
@pytest.mark.parametrize("seed", [pytest.param(3, marks=pytest.mark.slicer_python), 8])  # seed 3 in both envs
def test_classical_engine_dice_against_phantom_truth(dose, kernel, extent, pattern, seed):
    phantom = generate_phantom(PhantomParams(size="small", seed=seed, dose=dose, kernel=kernel,
                                             extent_pct=extent, pattern=pattern))
    result = segment_lungs(phantom.ct, engine="classical")
    truth = phantom.labels["lungs"]
    assert result.engine_used == "classical" and result.fallback_reason is None
    assert dice(result.labels > 0, truth > 0) >= 0.97
    assert dice(result.labels == 1, truth == 1) >= 0.97
    assert dice(result.labels == 2, truth == 2) >= 0.97
    # the trachea is not lung; most of the main and lobar bronchi are removed too (a soft kernel
    # at 2.5 mm blurs the narrowest lobar bronchi into the parenchyma)
    airways = phantom.labels["airways"] > 0
    in_lung = result.labels.astype(bool) & airways
    above_apex = ~(truth > 0).any(axis=(1, 2))
    assert not in_lung[above_apex].any()
    assert in_lung.sum() < 0.3 * airways.sum()


def test_classical_engine_medium_phantom_with_touching_lungs():
    # a seed whose anterior junction gap is below a voxel: the lungs touch
    phantom = generate_phantom(PhantomParams(size="medium", seed=8, extent_pct=10, pattern="centrilobular"))
    result = segment_lungs(phantom.ct, engine="classical")
    truth = phantom.labels["lungs"]
    assert dice(result.labels == 1, truth == 1) >= 0.97
    assert dice(result.labels == 2, truth == 2) >= 0.97


@pytest.mark.slicer_python
def test_classical_engine_on_cip_ct64_against_cip_masks():
    ct = read_ct(shared("cip-copdgene", "ct-64Dicom"))
    whole = read_ct(shared("cip-copdgene", "wholeLung-64.nrrd")).hu > 0
    region = read_ct(shared("cip-copdgene", "lm-64.nrrd")).hu.astype(np.int64) % 256
    right = np.isin(region, (2, 4, 5, 6, 12, 13, 14))
    left = np.isin(region, (3, 7, 8, 9, 10, 11))
    labels = segment_lungs(ct, engine="classical").labels
    assert labels.shape == (79, 64, 64)
    assert dice(labels > 0, whole) >= 0.97
    assert dice(labels == 1, right) >= 0.95
    assert dice(labels == 2, left) >= 0.95


@pytest.mark.slicer_python
def test_classical_engine_on_lidc_two_slices_matches_lungmask_counts():
    ct = read_ct(shared("lidc-two-slices"))
    labels = segment_lungs(ct, engine="classical").labels
    right, left = int((labels == 1).sum()), int((labels == 2).sum())
    assert right == pytest.approx(64752, rel=0.08)  # lungmask R231's published counts
    assert left == pytest.approx(36536, rel=0.08)


@pytest.mark.slicer_python
def test_classical_engine_on_one_slice_and_on_a_flipped_volume():
    phantom = generate_phantom(PhantomParams(size="small", seed=2))
    k = int(np.argmax((phantom.labels["lungs"] > 0).sum(axis=(1, 2))))
    one = CTVolume(hu=phantom.ct.hu[k:k + 1].copy(), spacing=phantom.ct.spacing, origin=phantom.ct.origin,
                   direction=phantom.ct.direction)
    labels = segment_classical(one.hu, one.spacing, one.direction, -3024).labels
    truth = phantom.labels["lungs"][k:k + 1]
    assert dice(labels == 1, truth == 1) >= 0.95 and dice(labels == 2, truth == 2) >= 0.95
    # x flipped (direction -1): the right lung is now at high x index and must still be label 1
    flipped = phantom.ct.hu[:, :, ::-1].copy()
    direction = (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
    labels = segment_classical(flipped, phantom.ct.spacing, direction, -3024).labels
    truth = phantom.labels["lungs"][:, :, ::-1]
    assert dice(labels == 1, truth == 1) >= 0.97


@pytest.mark.slicer_python
def test_no_lung_gives_empty_mask_with_warning():
    hu = np.full((5, 40, 40), -1000, np.int16)
    hu[:, 5:35, 5:35] = 40
    result = segment_classical(hu, (1.0, 1.0, 1.0))
    assert not result.labels.any() and result.warnings


@pytest.fixture(scope="module")
def generated_weights(tmp_path_factory):
    """R231- and LTRCLobes-shaped state dicts with random weights (seeded), as lungmask saves them."""
    import torch
    from lungmask.resunet import UNet

    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    torch.manual_seed(0)
    for name, classes in (("r231", 3), ("ltrclobes", 6)):
        model = UNet(n_classes=classes, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False)
        paths[name] = folder / f"{name}.pth"
        torch.save(model.state_dict(), paths[name])
    return paths


@pytest.fixture(scope="module")
def two_slices():
    phantom = generate_phantom(PhantomParams(size="small", seed=1))
    k = int(np.argmax((phantom.labels["lungs"] > 0).sum(axis=(1, 2))))
    ct = phantom.ct
    return CTVolume(hu=ct.hu[k:k + 2].copy(), spacing=ct.spacing, origin=ct.origin, direction=ct.direction)


def test_lungmask_engine_runs_real_inference_with_generated_weights(two_slices, generated_weights, monkeypatch,
                                                                    tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    result = segment_lungs(two_slices, engine="lungmask", lungmask_weights=generated_weights["r231"])
    assert result.engine_used == "lungmask" and result.labels.shape == two_slices.shape
    assert result.labels.dtype == np.uint8 and set(np.unique(result.labels)) <= {0, 1, 2}
    record = result.weights["R231"]
    assert record["published"] is False and len(record["sha256"]) == 64
    assert any("not the published ones" in w for w in result.warnings)


def test_lungmask_fusion_mode_for_lobes_with_environment_variables(two_slices, generated_weights, monkeypatch,
                                                                   tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    monkeypatch.setenv(ENV_WEIGHTS, str(generated_weights["ltrclobes"]))
    monkeypatch.setenv(ENV_FILL_WEIGHTS, str(generated_weights["r231"]))
    result = segment_lungs(two_slices, engine="lungmask", lobes=True)
    assert result.lobes is not None and result.lobes.shape == two_slices.shape
    assert set(np.unique(result.lobes)) <= {0, 1, 2, 3, 4, 5}
    assert set(result.weights) == {"LTRCLobes", "R231"}


def test_lungmask_weights_found_in_the_torch_hub_cache(two_slices, generated_weights, monkeypatch, tmp_path):
    hub = tmp_path / "hub"
    (hub / "hub" / "checkpoints").mkdir(parents=True)
    target = hub / "hub" / "checkpoints" / "unet_r231-d5d2fc3d.pth"
    target.write_bytes(generated_weights["r231"].read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(hub))
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    result = segment_lungs(two_slices, engine="auto")
    assert result.engine_used == "lungmask" and result.weights["R231"]["path"] == str(target)


def test_offline_without_weights_lungmask_errors_and_auto_falls_back(two_slices, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    with pytest.raises(WeightsMissing, match="unet_r231-d5d2fc3d.pth"):
        segment_lungs(two_slices, engine="lungmask")
    result = segment_lungs(two_slices, engine="auto")
    assert result.engine_used == "classical"
    assert "lungmask weights missing" in result.fallback_reason
    assert result.warnings[0] == result.fallback_reason


def test_cli_segment_engines_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    phantom = generate_phantom(PhantomParams(size="small", seed=6))
    sitk.WriteImage(phantom.ct.to_sitk(), str(tmp_path / "ct.nrrd"))
    out = tmp_path / "mask.nrrd"
    result = run_cli("segment", tmp_path / "ct.nrrd", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["engine_used"] == "classical" and "lungmask weights missing" in info["fallback_reason"]
    assert "warning" in result.stderr  # never silent
    mask = read_ct(out)
    assert mask.shape == phantom.ct.shape and mask.origin == pytest.approx(phantom.ct.origin)
    assert dice(mask.hu > 0, phantom.labels["lungs"] > 0) >= 0.97
    strict = run_cli("segment", tmp_path / "ct.nrrd", "--out", tmp_path / "m2.nrrd", "--engine", "lungmask")
    assert strict.returncode == 2 and "unet_r231-d5d2fc3d.pth" in strict.stderr
    assert len(strict.stderr.strip().splitlines()) == 1 and not (tmp_path / "m2.nrrd").exists()


def test_user_mask_must_lie_on_the_ct_grid(tmp_path):
    phantom = generate_phantom(PhantomParams(size="small", seed=6))
    from EmphysemaXAILib.phantom.io import save_label

    save_label(phantom.labels["lungs"], phantom.ct, tmp_path / "ok.nrrd")
    assert np.array_equal(load_mask(tmp_path / "ok.nrrd", phantom.ct), phantom.labels["lungs"])
    shifted = CTVolume(hu=phantom.ct.hu, spacing=phantom.ct.spacing, direction=phantom.ct.direction,
                       origin=tuple(np.add(phantom.ct.origin, (5.0, 0, 0))))
    save_label(phantom.labels["lungs"], shifted, tmp_path / "shifted.nrrd")
    with pytest.raises(InputError, match="origin"):
        load_mask(tmp_path / "shifted.nrrd", phantom.ct)
    small = CTVolume(hu=phantom.ct.hu[:10], spacing=phantom.ct.spacing, origin=phantom.ct.origin,
                     direction=phantom.ct.direction)
    save_label(phantom.labels["lungs"][:10], small, tmp_path / "small.nrrd")
    with pytest.raises(InputError, match="on the CT grid"):
        load_mask(tmp_path / "small.nrrd", phantom.ct)


def test_download_path_fetches_into_the_hub_cache(two_slices, generated_weights, monkeypatch, tmp_path):
    """The download path (no internet here): torch.hub's fetch is replaced by a copy of generated
    weights, so the rest of lungmask's real path runs; a failing fetch is a one-line error."""
    import torch

    hub = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(hub))
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    calls = []

    def fake_fetch(url, **kwargs):
        calls.append((url, kwargs.get("check_hash")))
        target = hub / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(generated_weights["r231"].read_bytes())
        return torch.load(target, weights_only=True)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_fetch)
    result = segment_lungs(two_slices, engine="lungmask", download=True)
    assert result.engine_used == "lungmask"
    assert calls == [("https://github.com/JoHof/lungmask/releases/download/v0.0/unet_r231-d5d2fc3d.pth", True)]

    def offline(url, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "other"))
    with pytest.raises(WeightsMissing, match="could not be downloaded"):
        segment_lungs(two_slices, engine="lungmask", download=True)


@pytest.fixture(scope="module")
def five_slices():
    phantom = generate_phantom(PhantomParams(size="small", seed=1))
    k = int(np.argmax((phantom.labels["lungs"] > 0).sum(axis=(1, 2))))
    ct = phantom.ct
    return CTVolume(hu=ct.hu[k - 2:k + 3].copy(), spacing=ct.spacing, origin=ct.origin, direction=ct.direction)


def test_lungmask_reports_progress_per_batch_of_slices_and_gives_the_same_mask(five_slices, generated_weights,
                                                                              monkeypatch, tmp_path):
    """Issue 26 item 8: lungmask ran silent for minutes (the bar stood still). It now reports
    after each batch of slices through the progress callback; counting changes nothing."""
    from EmphysemaXAILib.segmentation.lungmask_engine import run_lungmask

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    original = five_slices.hu.copy()
    calls = []
    reported = run_lungmask(five_slices, generated_weights["r231"], batch_size=2,
                            progress=lambda fraction, message: calls.append((fraction, message)))
    assert calls == [(0.4, "lungmask: 2 of 5 slices"), (0.8, "lungmask: 4 of 5 slices"),
                     (1.0, "lungmask: 5 of 5 slices")]
    silent = run_lungmask(five_slices, generated_weights["r231"], batch_size=2)
    assert np.array_equal(reported.labels, silent.labels) and np.array_equal(five_slices.hu, original)
    calls.clear()                                          # lobes: the LTRCLobes pass, then the R231 fill pass
    run_lungmask(five_slices, generated_weights["ltrclobes"], generated_weights["r231"], lobes=True, batch_size=5,
                 progress=lambda fraction, message: calls.append((fraction, message)))
    assert calls == [(0.5, "lungmask: 5 of 10 slices"), (1.0, "lungmask: 10 of 10 slices")]
    calls.clear()
    segment_lungs(five_slices, engine="lungmask", lungmask_weights=generated_weights["r231"],
                  progress=lambda fraction, message: calls.append(fraction))
    assert calls == [1.0]                                  # lungmask's default batch of 20 slices


def test_lungmask_counts_the_slices_it_runs_whatever_the_stored_orientation():
    """lungmask reorients to LPS and runs its network along S-I: a sagittally stored volume of
    (x 30, y 40, z 50) voxels whose third index axis points left-right runs 30 axial slices."""
    from EmphysemaXAILib.segmentation.lungmask_engine import axial_slices

    image = sitk.Image(50, 40, 30, sitk.sitkInt16)        # index axes: i -> S, j -> P, k -> L
    image.SetDirection((0, 0, 1, 0, 1, 0, 1, 0, 0))
    assert axial_slices(image) == sitk.DICOMOrient(image, "LPS").GetSize()[2] == 50
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))      # axial, stored inferior to superior
    assert axial_slices(image) == 30


def test_the_pipeline_maps_the_engines_progress_into_the_segment_step(monkeypatch):
    import EmphysemaXAILib.segmentation as segmentation
    from EmphysemaXAILib.options import AnalysisOptions
    from EmphysemaXAILib.pipeline import STEPS, analyze_case

    real = segmentation.segment_lungs

    def engine(ct, progress=None, **kwargs):
        progress(0.5, "lungmask: 10 of 20 slices")
        return real(ct, engine="classical")

    monkeypatch.setattr(segmentation, "segment_lungs", engine)
    seen = []
    phantom = generate_phantom(PhantomParams(size="small", seed=1))
    analyze_case(phantom.ct, AnalysisOptions(engine="classical", model="none"),
                 progress=lambda step, fraction, message: seen.append((step, fraction, message)))
    assert ("segment", (STEPS.index("segment") + 0.5) / len(STEPS), "lungmask: 10 of 20 slices") in seen
