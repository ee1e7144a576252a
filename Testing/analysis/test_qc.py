"""Quality control on generated scans with known noise, contrast, metal and geometry."""
import numpy as np
import pytest

from EmphysemaXAILib.analysis.qc import hu_histogram, kernel_class, run_qc
from EmphysemaXAILib.phantom.sample import make_sample_ct
from EmphysemaXAILib.volume import CTVolume

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)


def warned(report, text):
    return any(text in w for w in report.warnings)


@pytest.mark.parametrize("noise", [10.0, 20.0, 45.0, 70.0])
def test_noise_estimated_from_air(noise):
    report = run_qc(make_sample_ct(noise_hu=noise))
    assert report.measures["noise_hu"] == pytest.approx(noise, rel=0.08)
    assert report.measures["noise_source"] == "outside_air"
    assert report.measures["air_hu"] == pytest.approx(-1000, abs=noise * 0.1 + 2)
    assert warned(report, "high image noise") == (noise > 35)


def test_clean_sample_has_no_errors_and_only_resolution_warnings():
    report = run_qc(make_sample_ct())
    assert report.errors == [] and not report.excluded
    assert report.measures["padding_fraction"] > 0.2  # circular field of view
    assert report.measures["hu_min"] == -1024  # padding (-3024) ignored
    assert report.measures["lung_air_fraction"] == pytest.approx(0.22, abs=0.05)
    assert not warned(report, "contrast") and not warned(report, "metal")
    assert not warned(report, "field of view cuts")


def test_contrast_enhancement_detected():
    plain = run_qc(make_sample_ct(blood_hu=40.0))
    enhanced = run_qc(make_sample_ct(blood_hu=280.0))
    assert plain.measures["blood_pool_hu"] == pytest.approx(40, abs=15)
    assert enhanced.measures["blood_pool_hu"] == pytest.approx(280, abs=15)
    assert warned(enhanced, "contrast enhancement") and not warned(plain, "contrast")


def test_metal_warns_but_does_not_exclude_by_default_and_seeds_profile_excludes():
    ct = make_sample_ct(metal=True)
    report = run_qc(ct)
    assert warned(report, "metal") and report.errors == []
    assert report.measures["hu_max"] == 3071  # scanners clip at 3071
    seeds = run_qc(ct, profile="seeds")
    assert any("maximum 3071 HU above 1600" in e for e in seeds.errors)


def test_thick_slices_and_coarse_pixels_warn():
    report = run_qc(make_sample_ct(spacing=(0.8, 0.8, 3.0), shape=(40, 400, 400)))
    assert warned(report, "3.00 mm thick")
    assert not warned(report, "in-plane pixel size")
    coarse = run_qc(make_sample_ct())
    assert warned(coarse, "in-plane pixel size 2.500")


def test_few_slices_warns_but_runs():
    ct = make_sample_ct(shape=(2, 128, 128), spacing=(2.5, 2.5, 5.0))
    report = run_qc(ct)
    assert warned(report, "only 2 slices") and report.errors == []


def test_no_lung_in_field_of_view_excludes():
    from scipy import ndimage

    ct = make_sample_ct()
    air = (ct.hu < -400) & (ct.hu >= -1024)
    labels, _ = ndimage.label(air)
    outside = np.unique(np.concatenate([labels[:, [0, -1], :].ravel(), labels[:, :, [0, -1]].ravel(),
                                        labels[[0, -1]].ravel()]))
    enclosed = air & ~np.isin(labels, outside)
    assert enclosed.sum() > 0.05 * ct.hu.size  # the lungs were there
    abdomen = ct.hu.copy()
    abdomen[enclosed] = 30  # soft tissue instead of lung: a scan with no lung
    report = run_qc(CTVolume(hu=abdomen, spacing=ct.spacing, origin=ct.origin, direction=ct.direction))
    assert any("no lung in the field of view" in e for e in report.errors)
    assert report.excluded


def test_field_of_view_cutting_the_body_warns():
    ct = make_sample_ct()
    cut = CTVolume(hu=np.ascontiguousarray(ct.hu[:, :, 20:108]), spacing=ct.spacing, origin=ct.origin,
                   direction=ct.direction)
    report = run_qc(cut)
    assert warned(report, "field of view cuts the body") and report.errors == []


def test_wrong_intercept_warns_about_air():
    ct = make_sample_ct()
    shifted = CTVolume(hu=(ct.hu.astype(np.int32) + 1024).astype(np.int16), spacing=ct.spacing,
                       origin=ct.origin, direction=ct.direction)
    report = run_qc(shifted)
    assert warned(report, "no air near -1000 HU")


def test_histogram_matches_numpy_and_ignores_padding():
    rng = np.random.default_rng(0)
    hu = rng.integers(-3024, 3000, size=(20, 30, 30)).astype(np.int16)
    values, counts = hu_histogram(hu, padding_hu=-1000.0, chunk=7)
    valid = hu[(hu >= -1024) & (hu != -1000)]
    assert counts.sum() == valid.size
    assert values[0] == valid.min() and values[-1] == valid.max()
    assert (values * counts).sum() == valid.astype(np.int64).sum()


@pytest.mark.parametrize("kernel,expected", [("B70f", "sharp"), ("B30f", "soft"), ("LUNG", "sharp"),
                                             ("STANDARD", "soft"), ("L", "sharp"), ("FC51", "sharp"),
                                             (None, "unknown"), ("Q1X", "unknown")])
def test_kernel_class(kernel, expected):
    assert kernel_class(kernel) == expected
