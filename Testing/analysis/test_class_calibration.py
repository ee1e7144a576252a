"""The QCT class on miscalibrated and noisy scanners (issue 25, part 1): class, zone grades and
LAA map on calibrated HU by default, the noise-robust extent computed on calibrated HU, and the
noise correction distrusted where it alone would turn a high %LAA-950 into "none"."""
import copy

import numpy as np
import pytest
from helpers import shared
from scipy import ndimage
from test_calibration import rescaled

from EmphysemaXAILib import read_ct
from EmphysemaXAILib.analysis.calibration import calibration_from_qc
from EmphysemaXAILib.analysis.qc import run_qc
from EmphysemaXAILib.analysis.qct import UNTRUSTED_LAA_PCT, QCTConfig, measure_qct, qct_severity


def noisy(ct, sigma, seed=1):
    """Spatially correlated noise (a 1-voxel in-plane Gaussian) of SD ``sigma`` HU added, rounded
    and clipped at -1024 HU as a scanner stores it."""
    out = copy.copy(ct)
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(ct.hu.shape).astype(np.float32),
                                    (0, 1, 1))
    noise *= np.float32(sigma / noise.std())
    out.hu = np.clip(np.rint(ct.hu + noise), -1024, 3071).astype(np.int16)
    return out


def qct(ct, labels):
    measures = run_qc(ct).measures
    result = measure_qct(ct, labels, noise_hu=measures["noise_hu"], calibration=calibration_from_qc(measures))
    return result


@pytest.fixture(scope="module")
def a0001():
    from EmphysemaXAILib.segmentation import segment_lungs

    ct = read_ct(shared("lung-pet-ct-dx-A0001"))
    return ct, segment_lungs(ct, engine="classical").labels


def test_class_kept_on_a_rescaled_real_series(a0001):
    """Lung-PET-CT-Dx A0001 (noise 37 HU: the robust extent on calibrated HU decides) read by
    scanners whose air is off by up to +80 HU or whose scale is off by 10 %: same class, and the
    class figure within a point where the blood reference survives the rescale."""
    ct, labels = a0001
    base = qct(ct, labels).qct_severity
    assert base["rule"].startswith("robust_extent_pct_calibrated")
    for a, b, tolerance in ((1.0, 40, 1.0), (0.9, 78, 1.0), (1.1, 78, 1.0), (1.0, 78, 2.0)):
        moved = qct(rescaled(ct, a, b), labels)
        severity = moved.qct_severity
        assert severity["class"] == base["class"], (a, b)
        assert severity["class"] != "none" or moved.region("whole")["laa950_pct_calibrated"] < UNTRUSTED_LAA_PCT
        assert severity["extent_pct"] == pytest.approx(base["extent_pct"], abs=tolerance), (a, b)
        assert moved.laa_map_threshold["scale"] == "calibrated"
        cal = moved.calibration
        assert moved.laa_map_threshold["raw_hu"] == pytest.approx((-950 - cal["intercept"]) / cal["slope"], abs=1e-3)
        raw = moved.region("whole")
        if a == 1.0:  # the raw figures stay raw, beside the calibrated ones
            assert raw["laa950_pct"] < raw["laa950_pct_calibrated"] - 5


def test_a_scanner_reading_air_at_minus_920_is_not_called_none():
    """COPDGene ct-64 (emphysema) made noisy (+30 HU) and read 78 HU high, as the hidden screening
    scanner (air about -922 HU, noise about 37 HU): raw %LAA-950 is 0 and the raw robust extent
    says "none"; the calibrated class does not."""
    ct = read_ct(shared("cip-copdgene", "ct-64.nrrd"))
    labels = (read_ct(shared("cip-copdgene", "lm-64.nrrd")).hu % 256 > 0).astype(np.uint8)
    shifted = rescaled(noisy(ct, 30.0), 1.0, 78.0)
    result = qct(shifted, labels)
    whole = result.region("whole")
    assert whole["laa950_pct"] < 0.5 and whole["robust_extent_pct"] < 1.0   # read at raw -950 HU
    assert result.qct_severity["class"] in ("moderate", "severe")          # ct-64: 20.8 % as stored
    assert whole["robust_extent_pct_calibrated"] > 20
    raw = qct_severity(result.regions, result.noise_hu, QCTConfig(class_from="raw"))
    assert raw["class"] == "none"  # what the class said before calibrated became the default


def test_noisy_thin_real_slices_keep_their_class():
    """The LIDC slices (no emphysema, 0.7 mm pixels) with correlated noise of 30 and 50 HU."""
    ct = read_ct(shared("lidc-two-slices"))
    from EmphysemaXAILib.segmentation import segment_lungs

    labels = segment_lungs(ct, engine="classical").labels
    assert qct(ct, labels).qct_severity["class"] == "none"
    for sigma in (30.0, 50.0):
        severity = qct(noisy(ct, sigma), labels).qct_severity
        assert severity["class"] == "none", (sigma, severity)
        assert severity["rule"].startswith("robust_extent_pct_calibrated")


def test_noise_correction_is_not_trusted_to_call_a_high_laa_none():
    rows = [{"region": "whole", "laa950_pct": 2.0, "laa950_pct_calibrated": 22.0, "robust_extent_pct": 0.1,
             "robust_extent_pct_calibrated": 3.0}]
    severity = qct_severity(rows, 60.0, QCTConfig())
    assert severity["class"] == "moderate" and severity["extent_pct"] == 22.0
    assert severity["rule"].startswith("laa950_pct_calibrated (noise correction not trusted")
    rows[0]["laa950_pct_calibrated"] = UNTRUSTED_LAA_PCT - 0.1   # below the rule's level: trusted
    assert qct_severity(rows, 60.0, QCTConfig())["class"] == "none"
    rows[0]["robust_extent_pct_calibrated"] = 6.0                 # not "none": trusted
    assert qct_severity(rows, 60.0, QCTConfig())["extent_pct"] == 6.0
    assert qct_severity(rows, 20.0, QCTConfig())["extent_pct"] == UNTRUSTED_LAA_PCT - 0.1  # not noisy
