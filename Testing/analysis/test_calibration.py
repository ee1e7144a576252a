"""Calibrated densitometry: the maths of the correction, QC's air / blood references and its air
warning on generated scans, and invariance under a linear mis-calibration on real series."""
import copy
import json

import numpy as np
import pytest
from helpers import shared

from EmphysemaXAILib import read_ct
from EmphysemaXAILib.analysis.air import air_mode, trachea_air
from EmphysemaXAILib.analysis.blood import unenhanced_blood
from EmphysemaXAILib.analysis.calibration import (
    NOMINAL_AIR_HU,
    NOMINAL_BLOOD_HU,
    calibration_from_qc,
    calibration_from_refs,
    percentile_interpolated,
    share_at_or_below,
)
from EmphysemaXAILib.analysis.qc import run_qc
from EmphysemaXAILib.analysis.qct import OFFSET, QCTConfig, measure_qct, qct_severity
from EmphysemaXAILib.errors import InputError
from EmphysemaXAILib.options import build_options
from EmphysemaXAILib.phantom.sample import make_sample_ct

FINE = dict(shape=(48, 384, 384), spacing=(0.8, 0.8, 5.0))  # trachea 18 mm = 22 pixels across


def rescaled(ct, slope, intercept, seed=0):
    """The scan as a scanner reading ``slope * HU + intercept`` would store it: the continuous
    value behind each integer HU (the integer + uniform -0.5..0.5: a scanner rounds continuous
    values, not integers) rescaled, rounded to integer HU and clipped at -1024 HU; padding
    (below -1024) kept."""
    out = copy.copy(ct)
    continuous = ct.hu.astype(np.float64) + np.random.default_rng(seed).uniform(-0.5, 0.5, ct.hu.shape)
    new = np.clip(np.rint(slope * continuous + intercept), -1024, 3071)
    out.hu = np.where(ct.hu < -1024, ct.hu, new).astype(np.int16)
    return out


def warned(report, text):
    return any(text in w for w in report.warnings)


# --- maths ---------------------------------------------------------------------------------

def test_two_point_correction_maps_references_onto_nominal_values():
    cal = calibration_from_refs(-920.0, "trachea", 120.0)
    assert cal.reference == "blood"
    assert cal.apply(-920.0) == pytest.approx(NOMINAL_AIR_HU)
    assert cal.apply(120.0) == pytest.approx(NOMINAL_BLOOD_HU)
    assert cal.apply(cal.raw_threshold(-950.0)) == pytest.approx(-950.0)
    water = calibration_from_refs(-920.0, "outside_air", None)
    assert water.reference == "water" and water.apply(0.0) == pytest.approx(0.0)
    assert water.apply(-920.0) == pytest.approx(-1000.0)
    assert json.loads(json.dumps(cal.as_dict()))["air_source"] == "trachea"


def test_implausible_slope_gives_no_calibration_and_says_why():
    notes = []
    assert calibration_from_qc({"calibration_air_hu": -700.0, "calibration_air_source": "trachea",
                                "blood_hu": 40.0}, notes) is None
    assert "slope" in notes[0]
    notes = []
    assert calibration_from_qc({"calibration_air_hu": None}, notes) is None
    assert "neither tracheal nor outside air" in notes[0]
    ok = calibration_from_qc({"calibration_air_hu": -990.0, "calibration_air_source": "trachea", "blood_hu": 45.0})
    assert ok is not None and 0.99 < ok.slope < 1.01 and ok.reference == "blood"
    notes = []
    enhanced = calibration_from_qc({"calibration_air_hu": -980.0, "calibration_air_source": "trachea",
                                    "blood_hu": 115.0}, notes)
    assert enhanced.reference == "water" and "contrast?" in notes[0]


def test_share_at_or_below_is_exact_at_integers_and_interpolates_between():
    values = np.rint(np.random.default_rng(1).normal(-900, 60, 50000)).astype(np.int64)
    histogram = np.bincount(values + OFFSET, minlength=2 * OFFSET)
    assert share_at_or_below(histogram, OFFSET, -950) == (values <= -950).sum()
    assert share_at_or_below(histogram, OFFSET, -950, inclusive=False) == (values < -950).sum()
    lo, hi = (values <= -951).sum(), (values <= -950).sum()
    assert share_at_or_below(histogram, OFFSET, -950.25) == pytest.approx(lo + 0.75 * (hi - lo))
    # a rescaled, re-rounded copy counted at the rescaled threshold gives the same share
    continuous = values + np.random.default_rng(2).uniform(-0.5, 0.5, values.size)
    scaled = np.rint(0.95 * continuous - 40).astype(np.int64)
    other = np.bincount(scaled + OFFSET, minlength=2 * OFFSET)
    assert share_at_or_below(other, OFFSET, 0.95 * -950 - 40) == pytest.approx(hi, rel=0.01)
    p15 = percentile_interpolated(histogram, OFFSET, 0.15)
    assert 0.95 * p15 - 40 == pytest.approx(percentile_interpolated(other, OFFSET, 0.15), abs=0.5)


def test_identity_calibration_reproduces_raw_figures_and_class_from_setting():
    ct = make_sample_ct()
    labels = np.zeros(ct.shape, np.uint8)
    labels[:, 30:100, 20:60] = 1
    labels[:, 30:100, 68:108] = 2
    identity = calibration_from_refs(-1000.0, "trachea", 40.0)
    result = measure_qct(ct, labels, noise_hu=5.0, calibration=identity)
    for row in result.regions:
        assert row["laa950_pct_calibrated"] == pytest.approx(row["laa950_pct"], abs=1e-9)
        assert row["mean_hu_calibrated"] == pytest.approx(row["mean_hu"], abs=1e-6)
        assert row["perc15_hu_calibrated"] == pytest.approx(row["perc15_hu"], abs=0.5)
        assert row["robust_extent_pct_calibrated"] == pytest.approx(row["robust_extent_pct"], abs=1e-6)
    assert result.calibration["slope"] == pytest.approx(1.0)
    assert result.laa_map_threshold == {"hu": -950.0, "scale": "calibrated", "raw_hu": -950.0}
    frame = result.dataframe()
    assert {"laa950_pct_calibrated", "calibration_air_hu", "calibration_reference"} <= set(frame.columns)
    assert qct_severity(result.regions, 5.0, QCTConfig(class_from="raw"))["rule"].startswith("laa950_pct ")
    assert qct_severity(result.regions, 5.0, QCTConfig())["rule"].startswith("laa950_pct_calibrated")
    assert qct_severity(result.regions, 50.0, QCTConfig())["rule"].startswith(
        "robust_extent_pct_calibrated")  # a noisy scan: the robust extent, on calibrated HU
    assert qct_severity(result.regions, 50.0, QCTConfig(class_from="raw"))["rule"].startswith("robust_extent_pct ")
    bare = measure_qct(ct, labels, noise_hu=5.0)
    assert bare.region("whole")["laa950_pct_calibrated"] is None and bare.calibration is None
    assert "no calibration" in qct_severity(bare.regions, 5.0, QCTConfig(class_from="calibrated"))["rule"]


def test_class_from_in_the_settings_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[qct]\nclass_from = "calibrated"\n')
    assert build_options(path).qct_config().class_from == "calibrated"
    assert build_options().qct_config().class_from == "calibrated"
    path.write_text('[qct]\nclass_from = "raw"\n')
    assert build_options(path).qct_config().class_from == "raw"
    path.write_text('[qct]\nclass_from = "both"\n')
    with pytest.raises(InputError, match="class_from"):
        build_options(path)


# --- references measured by quality control --------------------------------------------------

def test_air_mode_ignores_a_clipped_pile_and_dense_tail():
    rng = np.random.default_rng(0)
    air = np.concatenate([rng.normal(-1000, 35, 40000), rng.normal(-850, 60, 8000)])  # air + clothes
    air = np.clip(np.rint(air), -1024, None)
    assert air_mode(air) == pytest.approx(-1000, abs=3)
    assert np.median(air) > -995  # the median is pulled by the tail
    shifted = np.clip(np.rint(air + 80), -1024, None)
    assert air_mode(shifted) == pytest.approx(-920, abs=3)


def test_unenhanced_blood_from_the_soft_tissue_peak():
    rng = np.random.default_rng(0)
    box = np.concatenate([rng.normal(40, 15, 30000), rng.normal(-100, 15, 20000), rng.normal(-850, 50, 5000)])
    assert unenhanced_blood(box, 1.0) == pytest.approx(40, abs=3)
    assert unenhanced_blood(0.95 * box - 40, 1.0) == pytest.approx(-2, abs=3)
    assert unenhanced_blood(box[:1000], 1.0) is None  # too little soft tissue (< 15 ml)


@pytest.mark.parametrize("offset", [0.0, 80.0])
def test_tracheal_air_measured_and_warned_when_off_nominal(offset):
    ct = rescaled(make_sample_ct(**FINE), 1.0, offset)
    report = run_qc(ct)
    m = report.measures
    assert m["calibration_air_source"] == "trachea" and m["trachea_air_level"] == "intrathoracic"
    assert m["trachea_air_hu"] == pytest.approx(-1000 + offset, abs=3)
    assert m["blood_hu"] == pytest.approx(40 + offset, abs=5)
    assert warned(report, "more than 20 HU from -1000 HU") == (offset > 20)
    cal = calibration_from_qc(m)
    assert cal.apply(-1000 + offset) == pytest.approx(-1000, abs=3)
    # a +80 HU offset puts blood at 120 HU: as contrast it would be 130 HU once air and water
    # correct it, but an offset drift explains both references, so blood stays one
    assert cal.reference == "blood" and cal.apply(40 + offset) == pytest.approx(40, abs=5)


def test_trachea_too_narrow_for_coarse_voxels_falls_back_to_outside_air():
    ct = make_sample_ct(shape=(48, 64, 64), spacing=(5.0, 5.0, 5.0))
    report = run_qc(ct)
    m = report.measures
    assert m["trachea_air_hu"] is None and "too narrow" in m["trachea_air_note"]
    assert m["calibration_air_source"] == "outside_air"
    assert m["calibration_air_hu"] == pytest.approx(-1000, abs=5)
    assert warned(report, "calibration air from outside the body")
    assert trachea_air(make_sample_ct(**FINE))["voxels"] >= 200


# --- invariance under HU' = 0.95 HU - 40 ----------------------------------------------------

def calibrated_whole(ct, labels):
    measures = run_qc(ct).measures
    calibration = calibration_from_qc(measures)
    assert calibration is not None
    result = measure_qct(ct, labels, noise_hu=measures["noise_hu"], calibration=calibration)
    return result.region("whole"), calibration


def assert_invariant(ct, labels):
    original, cal = calibrated_whole(ct, labels)
    changed, cal2 = calibrated_whole(rescaled(ct, 0.95, -40.0), labels)
    assert cal2.air_source == cal.air_source and cal2.reference == cal.reference == "blood"
    assert changed["laa950_pct"] < original["laa950_pct"] - 1.0  # the raw figure moves
    assert changed["laa950_pct_calibrated"] == pytest.approx(original["laa950_pct_calibrated"], abs=0.3)
    assert changed["perc15_hu_calibrated"] == pytest.approx(original["perc15_hu_calibrated"], abs=2.0)
    return original, changed


def test_invariance_on_generated_scan():
    from EmphysemaXAILib.segmentation import segment_lungs

    ct = make_sample_ct(**FINE)
    labels = segment_lungs(ct, engine="classical").labels
    lung = labels > 0
    ct.hu[lung] = np.clip(ct.hu[lung] - 70, -1024, None)  # emphysematous lungs: %LAA-950 about 20
    original, _ = assert_invariant(ct, labels)
    assert 10 < original["laa950_pct"] < 40


def test_invariance_on_ct64():
    """COPDGene ct-64 (4 mm voxels): the trachea is too narrow, outside air is the reference."""
    ct = read_ct(shared("cip-copdgene", "ct-64.nrrd"))
    labels = (read_ct(shared("cip-copdgene", "lm-64.nrrd")).hu % 256 > 0).astype(np.uint8)
    original, _ = assert_invariant(ct, labels)
    assert run_qc(ct).measures["calibration_air_source"] == "outside_air"


def test_invariance_on_lung_pet_ct_dx():
    """Philips 5 mm series: tracheal air measured in the intrathoracic trachea."""
    from EmphysemaXAILib.segmentation import segment_lungs

    ct = read_ct(shared("lung-pet-ct-dx-A0001"))
    labels = segment_lungs(ct, engine="classical").labels
    assert_invariant(ct, labels)
    assert run_qc(ct).measures["calibration_air_source"] == "trachea"


@pytest.mark.parametrize("blood, expected", [(40.0, 40.0), (280.0, None)])
def test_blood_on_a_single_slice_unless_enhanced(blood, expected):
    ct = make_sample_ct(blood_hu=blood, **FINE)
    one = copy.copy(ct)
    one.hu = np.ascontiguousarray(ct.hu[18:19])  # heart level
    measured = run_qc(one).measures["blood_hu"]
    assert (measured is None) if expected is None else measured == pytest.approx(expected, abs=5)


def test_references_on_the_real_single_slices():
    """LIDC slices are contrast enhanced (no blood reference: water); the 2-slice COPDGene crop
    has blood but no air outside the body nor trachea (no calibration)."""
    lidc = run_qc(read_ct(shared("lidc-two-slices", "0.dcm"))).measures
    assert lidc["blood_hu"] is None and lidc["calibration_air_source"] == "outside_air"
    assert calibration_from_qc(lidc).reference == "water"
    crop = run_qc(read_ct(shared("cip-copdgene", "crop_ct_2slices.nrrd"))).measures
    assert crop["calibration_air_hu"] is None and crop["blood_hu"] == pytest.approx(33, abs=10)
    notes = []
    assert calibration_from_qc(crop, notes) is None and notes
