"""Lungs cut by the field of view (what Slicer's Crop Volume or a narrow reconstruction gives):
the classical engine keeps the other lung and the part of the cut lung inside the image, and
quality control says which lung is cut and that its values are partial. Real chest CT from
../shared/data, cropped here."""
from dataclasses import replace

import numpy as np
import pytest
from helpers import shared

from EmphysemaXAILib import read_ct
from EmphysemaXAILib.analysis.qc import QCReport, check_lung_cut
from EmphysemaXAILib.segmentation.classical import segment_classical

CASES = {"ct64": ("cip-copdgene", "ct-64.nrrd"), "lung_pet_ct_dx": ("lung-pet-ct-dx-A0001",)}


@pytest.fixture(scope="module", params=list(CASES))
def uncropped(request):
    ct = read_ct(shared(*CASES[request.param]))
    result = segment_classical(ct.hu, ct.spacing, ct.direction)
    report = QCReport()
    check_lung_cut(ct, result.labels, report)
    assert report.measures["lung_cut"] == {} and not report.warnings
    return ct, result.labels


def _dice(a, b):
    return 2 * np.sum(a & b) / (a.sum() + b.sum())


@pytest.mark.parametrize("pixels", [2, 5, 15])
@pytest.mark.parametrize("cut_lung", [1, 2], ids=["right_cut", "left_cut"])
def test_lung_cut_at_the_side_keeps_both_lungs(uncropped, cut_lung, pixels):
    ct, full = uncropped
    other = 3 - cut_lung
    xs = np.flatnonzero((full == cut_lung).any(axis=(0, 1)))
    # LPS: the right lung (1) lies at low x, the left (2) at high x
    window = np.s_[:, :, xs[0] + pixels:] if cut_lung == 1 else np.s_[:, :, :xs[-1] - pixels + 1]
    result = segment_classical(ct.hu[window], ct.spacing, ct.direction)
    labels, reference = result.labels, full[window]
    assert abs((labels == other).sum() / (full == other).sum() - 1) < 0.02
    assert _dice(labels == cut_lung, reference == cut_lung) >= 0.97
    report = QCReport()
    check_lung_cut(replace(ct, hu=ct.hu[window]), labels, report)
    side = "right" if cut_lung == 1 else "left"
    assert list(report.measures["lung_cut"]) == [side]
    assert any(f"cuts the {side} lung" in w and "zone values" in w and "partial" in w for w in report.warnings)


@pytest.mark.parametrize("pixels", [5, 15])
def test_both_lungs_cut_at_the_front(uncropped, pixels):
    ct, full = uncropped
    ys = np.flatnonzero((full > 0).any(axis=(0, 2)))
    window = np.s_[:, ys[0] + pixels:, :]  # LPS: low y is anterior
    labels = segment_classical(ct.hu[window], ct.spacing, ct.direction).labels
    for lung in (1, 2):
        assert _dice(labels == lung, full[window] == lung) >= 0.97


def test_a_mask_far_smaller_than_the_lung_air_is_a_loud_warning(tmp_path):
    """A user's mask holding one lung of the two (a cut or missed lung): analysed, and said
    loudly on the command line and in summary.json, never measured silently."""
    import json

    import SimpleITK as sitk
    from helpers import run_cli

    done = run_cli("phantom", tmp_path / "ph", "--size", "small", "--format", "nrrd", "--seed", 2)
    assert done.returncode == 0, done.stderr
    lungs = sitk.ReadImage(str(tmp_path / "ph" / "labels" / "lungs.nrrd"))
    one = sitk.GetArrayFromImage(lungs)
    one[one == 2] = 0
    half = sitk.GetImageFromArray(one)
    half.CopyInformation(lungs)
    sitk.WriteImage(half, str(tmp_path / "right_only.nrrd"))
    for mask, loud in ((tmp_path / "ph" / "labels" / "lungs.nrrd", False), (tmp_path / "right_only.nrrd", True)):
        out = tmp_path / f"out-{loud}"
        done = run_cli("analyze", tmp_path / "ph" / "ct.nrrd", "--lung-mask", mask, "--out", out, "--no-model",
                       "--no-scene", "--no-report")
        assert done.returncode == 0, done.stderr
        warned = [w for w in json.loads((out / "summary.json").read_text())["warnings"] if "LUNG MASK TOO SMALL" in w]
        assert bool(warned) == loud and ("LUNG MASK TOO SMALL" in done.stderr) == loud


def test_phantom_lung_cut_at_the_side_needs_no_real_data():
    """The same rule on a generated chest (runs without ../shared): a crop 5 voxels into the
    right lung keeps the left lung whole, the right lung's remaining part, and QC names it."""
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

    phantom = generate_phantom(PhantomParams(size="small", seed=5, extent_pct=10, pattern="centrilobular"))
    truth = phantom.labels["lungs"]
    xs = np.flatnonzero((truth == 1).any(axis=(0, 1)))
    window = np.s_[:, :, xs[0] + 5:]
    cropped = replace(phantom.ct, hu=phantom.ct.hu[window].copy())
    labels = segment_classical(cropped.hu, cropped.spacing, cropped.direction).labels
    assert abs((labels == 2).sum() / (truth == 2).sum() - 1) < 0.02
    assert _dice(labels == 1, truth[window] == 1) >= 0.97
    report = QCReport()
    check_lung_cut(cropped, labels, report)
    assert list(report.measures["lung_cut"]) == ["right"]
