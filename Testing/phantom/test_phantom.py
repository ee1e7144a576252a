"""Synthetic phantoms: realism, exact truth, reproducibility, outputs and the command line."""
import json

import numpy as np
import pytest
from helpers import run_cli

from EmphysemaXAILib import read_ct, run_qc
from EmphysemaXAILib.analysis.regions import LOBE_NAMES, REGION_NAMES
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom
from EmphysemaXAILib.phantom.patches import sample_patches


def lung_stats(phantom):
    lung = phantom.labels["lungs"] > 0
    values = phantom.ct.hu[lung].astype(float)
    return values.mean(), 100.0 * (values < -950).mean()


@pytest.fixture(scope="module")
def healthy_medium():
    return generate_phantom(PhantomParams(size="medium", seed=11))


@pytest.fixture(scope="module")
def mixed_small():
    return generate_phantom(PhantomParams(extent_pct=20, pattern="mixed", size="small", seed=3),
                            keep_ideal=True)


def test_standard_dose_healthy_lung_density_and_laa(healthy_medium):
    mean, laa = lung_stats(healthy_medium)
    assert -880 <= mean <= -820
    assert laa < 2.0
    assert healthy_medium.truth["extent_pct"] == 0 and healthy_medium.truth["severity"] == "none"
    assert 3000 < healthy_medium.truth["lung_volume_ml"] < 7500  # adult lungs at inspiration


def test_low_dose_sharp_kernel_inflates_naive_laa():
    standard = generate_phantom(PhantomParams(size="small", seed=5))
    noisy = generate_phantom(PhantomParams(size="small", seed=5, dose="low", kernel="sharp"))
    _, laa_standard = lung_stats(standard)
    _, laa_noisy = lung_stats(noisy)
    assert noisy.truth["extent_pct"] == standard.truth["extent_pct"] == 0
    assert laa_noisy > laa_standard + 3.0, (laa_standard, laa_noisy)
    assert noisy.truth["noise_hu"] > 2 * standard.truth["noise_hu"]


@pytest.mark.parametrize("pattern", ["centrilobular", "panlobular", "paraseptal", "bullous", "mixed"])
def test_target_extent_is_reached_within_one_point(pattern):
    phantom = generate_phantom(PhantomParams(extent_pct=20, pattern=pattern, size="small", seed=7))
    truth = phantom.truth
    lung = phantom.labels["lungs"] > 0
    lesion = phantom.labels["emphysema"] > 0
    fraction = 100.0 * lesion.sum() / lung.sum()
    assert fraction == pytest.approx(20.0, abs=1.0)
    assert truth["extent_pct"] == pytest.approx(fraction, abs=1e-3)
    assert not (lesion & ~lung).any()  # lesions only inside the lung
    codes = set(np.unique(phantom.labels["emphysema"])) - {0}
    expected = {"centrilobular": {1}, "panlobular": {2}, "paraseptal": {3}, "bullous": {4},
                "mixed": {1, 2, 3, 4}}[pattern]
    assert codes == expected
    assert truth["severity"] == "moderate"


def test_truth_follows_the_severity_definition(mixed_small):
    """Noise-free: lesion voxels < -950, other lung voxels >= -950, so naive LAA-950 == E."""
    ideal = mixed_small.ideal
    lung = mixed_small.labels["lungs"] > 0
    lesion = mixed_small.labels["emphysema"] > 0
    assert ideal[lesion].max() < -950
    assert ideal[lung & ~lesion].min() >= -950
    naive = 100.0 * (ideal[lung] < -950).mean()
    assert naive == pytest.approx(mixed_small.truth["extent_pct"], abs=1e-4)  # truth is rounded to 4 places
    assert mixed_small.truth["laa950_noise_free_pct"] == pytest.approx(naive, abs=1e-3)


def test_truth_json_keys_and_region_extents(mixed_small):
    truth = mixed_small.truth
    for key in ("extent_pct", "extent_by_region", "subtype", "severity", "zone_grades", "noise_hu", "params"):
        assert key in truth
    assert set(truth["extent_by_region"]) == set(REGION_NAMES + LOBE_NAMES)
    assert truth["extent_by_region"]["whole"] == pytest.approx(truth["extent_pct"], abs=1e-3)
    assert set(truth["zone_grades"]) == {f"{s}_{t}" for s in ("right", "left") for t in ("upper", "middle", "lower")}
    assert truth["subtype"] == "mixed"
    assert sum(truth["subtype_extent_pct"].values()) == pytest.approx(truth["extent_pct"], abs=1e-3)
    assert truth["params"]["seed"] == 3 and truth["params"]["pattern"] == "mixed"
    json.dumps(truth)  # serialisable


def test_zone_distribution_follows_the_subtype_and_the_caller():
    cle = generate_phantom(PhantomParams(extent_pct=10, pattern="centrilobular", size="small", seed=2)).truth
    ple = generate_phantom(PhantomParams(extent_pct=10, pattern="panlobular", size="small", seed=2)).truth
    assert cle["extent_by_region"]["upper"] > 2 * cle["extent_by_region"]["lower"]  # upper-zone predominant
    assert ple["extent_by_region"]["lower"] > 2 * ple["extent_by_region"]["upper"]  # lower-zone predominant
    lower_only = generate_phantom(PhantomParams(extent_pct=5, pattern="centrilobular", zones=(0, 0, 1),
                                                size="small", seed=2)).truth
    assert lower_only["extent_by_region"]["upper"] == 0
    assert lower_only["extent_by_region"]["lower"] == pytest.approx(15.0, abs=1.5)  # 5% of lung in a third


def test_anatomy_labels(mixed_small):
    lungs, lobes = mixed_small.labels["lungs"], mixed_small.labels["lobes"]
    nx = lungs.shape[2]
    right_x = np.argwhere(lungs == 1)[:, 2].mean()
    left_x = np.argwhere(lungs == 2)[:, 2].mean()
    assert right_x < nx / 2 < left_x  # LPS: index x grows toward the patient's left
    assert set(np.unique(lobes[lungs == 1])) == {3, 4, 5}  # RUL, RML, RLL
    assert set(np.unique(lobes[lungs == 2])) == {1, 2}     # LUL, LLL
    assert ((lobes > 0) == (lungs > 0)).all()
    airways = mixed_small.labels["airways"] > 0
    assert airways.any() and not (airways & (lungs > 0)).any()  # trachea and bronchi are not lung
    vessels = mixed_small.labels["vessels"] > 0
    assert (vessels & (lungs > 0)).sum() > 0.01 * (lungs > 0).sum()  # intrapulmonary vessels are lung


def test_same_seed_same_phantom_other_seed_other_anatomy():
    a = generate_phantom(PhantomParams(extent_pct=8, pattern="bullous", size="small", seed=21))
    b = generate_phantom(PhantomParams(extent_pct=8, pattern="bullous", size="small", seed=21))
    c = generate_phantom(PhantomParams(extent_pct=8, pattern="bullous", size="small", seed=22))
    assert np.array_equal(a.ct.hu, b.ct.hu) and a.truth == b.truth
    assert not np.array_equal(a.labels["lungs"], c.labels["lungs"])
    assert a.truth["anatomy"]["body_a"] != c.truth["anatomy"]["body_a"]


@pytest.mark.parametrize("fmt", ["dicom", "nrrd", "nifti"])
def test_written_phantom_reads_back_identically(tmp_path, mixed_small, fmt):
    out = write_phantom(mixed_small, tmp_path / "ph", fmt=fmt)
    source = {"dicom": out / "ct", "nrrd": out / "ct.nrrd", "nifti": out / "ct.nii.gz"}[fmt]
    ct = read_ct(source)
    assert np.array_equal(ct.hu, mixed_small.ct.hu)
    assert ct.spacing == pytest.approx(mixed_small.ct.spacing, abs=1e-4)
    assert ct.origin == pytest.approx(mixed_small.ct.origin, abs=1e-3)
    assert ct.direction == pytest.approx(mixed_small.ct.direction)
    for name in ("lungs", "lobes", "emphysema", "airways", "vessels"):
        label = read_ct(out / "labels" / f"{name}.nrrd")
        assert np.array_equal(label.hu, mixed_small.labels[name])
        assert label.origin == pytest.approx(ct.origin, abs=1e-3)
    assert json.loads((out / "truth.json").read_text())["extent_pct"] == mixed_small.truth["extent_pct"]
    if fmt == "dicom":
        assert ct.acquisition["kernel"] == "STANDARD" and ct.acquisition["kvp"] == 120
        report = run_qc(ct)
        assert report.errors == []
        assert report.measures["noise_hu"] == pytest.approx(mixed_small.truth["noise_hu"], rel=0.2)


def test_cli_phantom_writes_outputs_and_preview(tmp_path):
    out, preview = tmp_path / "p", tmp_path / "preview.png"
    result = run_cli("phantom", out, "--extent", "12", "--pattern", "centrilobular", "--dose", "low",
                     "--seed", "9", "--format", "nrrd", "--preview", preview, "--json")
    assert result.returncode == 0, result.stderr
    truth = json.loads(result.stdout)
    assert truth["extent_pct"] == pytest.approx(12, abs=1) and truth["severity"] == "mild"
    assert (out / "ct.nrrd").is_file() and (out / "truth.json").is_file()
    assert sorted(p.name for p in (out / "labels").iterdir()) == [
        "airways.nrrd", "emphysema.nrrd", "lobes.nrrd", "lungs.nrrd", "vessels.nrrd"]
    import matplotlib.image as mpimg
    picture = mpimg.imread(preview)
    assert picture.shape[0] > 400 and picture.shape[1] > 800 and picture.std() > 0.1
    again = run_cli("phantom", out, "--seed", "9")
    assert again.returncode == 2 and "--overwrite" in again.stderr  # never overwrites silently


def test_cli_phantom_subtype_mix(tmp_path):
    result = run_cli("phantom", tmp_path / "m", "--extent", "10", "--pattern", "mixed", "--mix", "0,1,0,1",
                     "--format", "nrrd", "--json")
    assert result.returncode == 0, result.stderr
    by_subtype = json.loads(result.stdout)["subtype_extent_pct"]
    assert by_subtype["centrilobular"] == by_subtype["paraseptal"] == 0
    assert by_subtype["panlobular"] == pytest.approx(5, abs=1) and by_subtype["bullous"] == pytest.approx(5, abs=1)


@pytest.mark.parametrize("args,message", [(["--extent", "70", "--pattern", "mixed"], "outside 0-60"),
                                          (["--extent", "5", "--pattern", "mixed", "--mix", "1,2"],
                                           "four non-negative weights"),
                                          (["--extent", "5"], "pattern 'none' needs extent_pct 0"),
                                          (["--zones", "1,2"], "three non-negative shares")])
def test_cli_phantom_bad_arguments(tmp_path, args, message):
    result = run_cli("phantom", tmp_path / "x", *args)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "x").exists()


def test_patch_sampler_truth_is_consistent(mixed_small):
    batch = sample_patches(mixed_small, 300, size=32, slices=3, rng=1)
    assert batch.images.shape == (300, 3, 32, 32) and batch.images.dtype == np.float32
    assert (batch.lung_fraction >= 0.3).all()
    k = 17
    z, y, x = batch.centers[k]
    window = (slice(z - 1, z + 2), slice(y - 16, y + 16), slice(x - 16, x + 16))
    assert np.array_equal(batch.images[k], mixed_small.ct.hu[window])
    lung = mixed_small.labels["lungs"][window] > 0
    lesion = mixed_small.labels["emphysema"][window] > 0
    assert batch.emphysema_fraction[k] == pytest.approx(lesion.sum() / lung.sum())
    assert set(np.unique(batch.zone)) == {0, 1, 2}
    assert 0.1 < batch.emphysema_fraction.mean() < 0.35  # about the 20% extent
    assert (batch.subtype[batch.emphysema_fraction == 0] == 0).all()
