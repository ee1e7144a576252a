"""One- and two-slice inputs (screening or teaching images) through `analyze` with the default
options: the report and the scene are written, the views are axial only, and both the printed
summary and summary.json say that the zone values do not describe the whole lung."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_cli, shared


def _analyze_default(path, out):
    done = run_cli("analyze", path, "--out", out, "--engine", "classical")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = (out / "report.html").read_text()
    assert "no coronal view" in report and "coronal row" not in report
    assert (out / "scene.mrb").stat().st_size > 0
    return done, json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("slices", [1, 2])
def test_phantom_slices_write_report_and_scene(tmp_path, slices):
    done = run_cli("phantom", tmp_path / "ph", "--size", "small", "--format", "nrrd", "--extent", 10,
                   "--pattern", "centrilobular", "--seed", 6)
    assert done.returncode == 0, done.stderr
    image = sitk.ReadImage(str(tmp_path / "ph" / "ct.nrrd"))
    middle = image.GetSize()[2] // 2
    thin = image[:, :, middle:middle + slices]
    sitk.WriteImage(thin, str(tmp_path / "thin.nrrd"))
    done, summary = _analyze_default(tmp_path / "thin.nrrd", tmp_path / "out")
    assert summary["input"]["shape"][0] == slices
    whole = next(r for r in summary["qct"]["regions"] if r["region"] == "whole")
    assert whole["voxels"] > 1000
    printed = done.stdout + done.stderr
    assert "do not describe the whole lung" in printed or "this slice only" in printed


def test_real_screening_slice_writes_report_and_scene(tmp_path):
    done, summary = _analyze_default(shared("lidc-two-slices", "0.dcm"), tmp_path / "out")
    regions = {r["region"]: r for r in summary["qct"]["regions"]}
    # lungmask R231's published expectation on both LIDC slices: 64,752 right, 36,536 left voxels
    assert regions["right"]["voxels"] > 0.8 * 64752 / 2 and regions["left"]["voxels"] > 0.8 * 36536 / 2
    assert summary["severity"]["low_confidence"] is True


def test_real_two_slice_crop_with_explanations(tmp_path):
    out = tmp_path / "out"
    done = run_cli("analyze", shared("cip-copdgene", "crop_ct_2slices.nrrd"), "--out", out, "--explain", "gradcam")
    assert done.returncode == 0, done.stderr
    report = (out / "report.html").read_text()
    assert "attribution: gradcam - axial" not in report or "gradcam - coronal" not in report
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lung_labels.nrrd")))
    assert labels.shape[0] == 2 and np.isin(labels, (0, 1, 2)).all() and (labels == 1).any() and (labels == 2).any()
