"""Real chest CT from ../shared/data (skipped with the reason when absent)."""
import json

import numpy as np
import pytest
from helpers import run_cli, shared

from EmphysemaXAILib import read_ct, run_qc


def test_cip_ct64_dicom_series_matches_its_nrrd_voxel_for_voxel():
    series = read_ct(shared("cip-copdgene", "ct-64Dicom"))
    reference = read_ct(shared("cip-copdgene", "ct-64.nrrd"))
    assert series.shape == reference.shape == (79, 64, 64)
    assert series.hu.dtype == np.int16
    assert np.array_equal(series.hu, reference.hu)
    assert series.spacing == pytest.approx(reference.spacing, abs=0.01)
    assert series.origin == pytest.approx(reference.origin, abs=0.01)
    assert series.direction == pytest.approx(reference.direction, abs=1e-6)
    assert series.acquisition["manufacturer"] == "GE Medical Systems"


def test_cip_ct64_quality_control_keeps_the_coarse_scan():
    report = run_qc(read_ct(shared("cip-copdgene", "ct-64Dicom")))
    assert report.errors == []  # 4 mm voxels warn, never exclude
    assert any("4.172 x 4.172 mm" in w for w in report.warnings)
    assert any("3.99 mm thick" in w for w in report.warnings)
    assert 3000 < report.measures["lung_air_volume_ml"] < 7000


def test_lung_pet_ct_dx_series_reads_with_spacing_and_hu():
    ct = read_ct(shared("lung-pet-ct-dx-A0001"))
    assert ct.shape == (64, 512, 512)
    assert ct.spacing == pytest.approx((0.841796875, 0.841796875, 5.0))
    assert ct.acquisition["kernel"] == "L" and ct.acquisition["kvp"] == 120
    assert ct.acquisition["manufacturer"] == "Philips"
    report = run_qc(ct)
    assert report.errors == []
    assert report.measures["air_hu"] == pytest.approx(-1000, abs=30)
    assert report.measures["kernel_class"] == "sharp"
    # Slices are sorted head-to-foot consistently: z positions strictly increasing.
    assert ct.geometry["method"] == "uniform"
    lung = (ct.hu > -950) & (ct.hu < -500)
    assert lung.sum() > 1e6  # lungs present


def test_lidc_two_slices_read_with_spacing_and_hu():
    ct = read_ct(shared("lidc-two-slices"))
    assert ct.shape == (2, 512, 512)
    assert ct.spacing[:2] == pytest.approx((0.625, 0.625))
    assert ct.padding_hu is None and ct.hu.min() == -2048  # outside the circular field of view
    report = run_qc(ct)
    assert report.errors == []  # two slices and padding: warnings only
    assert report.measures["hu_min"] == -1024
    assert any("only 2 slices" in w for w in report.warnings)
    assert any("Modality tag missing" in w for w in report.warnings)
    # HU scale: air at -1000, soft tissue (fat, muscle, blood) around 0-40
    assert report.measures["air_hu"] == pytest.approx(-1000, abs=30)
    assert np.median(ct.hu[(ct.hu > -100) & (ct.hu < 150)]) == pytest.approx(10, abs=40)


def test_cip_two_slice_crop_is_not_excluded():
    ct = read_ct(shared("cip-copdgene", "crop_ct_2slices.nrrd"))
    assert ct.shape == (2, 349, 443)
    assert run_qc(ct).errors == []


@pytest.mark.parametrize("folder", ["cip-copdgene/ct-64Dicom", "lung-pet-ct-dx-A0001", "lidc-two-slices"])
def test_info_json_on_real_series_has_contract_keys_and_no_identity(folder):
    path = shared(*folder.split("/"))
    result = run_cli("info", path, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    for key in ("shape", "spacing", "origin", "direction", "hu_min", "hu_max", "series", "acquisition", "qc"):
        assert key in info
    assert set(info["acquisition"]) == {"kernel", "kvp", "exposure_mas", "ctdivol", "slice_thickness_mm",
                                        "manufacturer", "series_uid", "study_date"}
    assert set(info["qc"]) >= {"errors", "warnings", "measures"}
    assert "identity" not in info
    import pydicom
    first = next(p for p in sorted(path.iterdir()) if p.suffix == ".dcm")
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    for tag in ("PatientName", "PatientID"):
        value = str(ds.get(tag, "") or "")
        if len(value) > 3:
            assert value not in result.stdout
