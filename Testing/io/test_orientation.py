"""One canonical orientation: the same chest stored axial, coronal, sagittal or flipped gives the
same numbers, and every output lies on the grid of the file the user gave.

The reoriented copies are made here with SimpleITK's PermuteAxes / Flip, which move voxels and
keep every voxel's physical (LPS) position, so each file holds the same chest in the same place.
"""
import itertools
import json

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import run_cli, shared

from EmphysemaXAILib import read_ct
from EmphysemaXAILib.errors import InputError
from EmphysemaXAILib.io.orientation import canonical, reorientation
from EmphysemaXAILib.volume import CTVolume

#: name -> (PermuteAxes order, Flip axes), in SimpleITK's (x, y, z) index order
STORAGES = {
    "axial": ((0, 1, 2), (False, False, False)),
    "coronal": ((0, 2, 1), (False, True, False)),      # slices along y (anterior-posterior)
    "sagittal": ((2, 1, 0), (True, False, True)),      # slices along x (right-left)
    "flipped": ((0, 1, 2), (True, True, True)),        # axial, every axis reversed (feet-first, RAS-like)
    "coronal_flipped": ((1, 2, 0), (True, False, True)),
}
MODEL_STORAGES = ("axial", "coronal_flipped")


def stored(image, name):
    order, flips = STORAGES[name]
    return sitk.Flip(sitk.PermuteAxes(image, list(order)), list(flips))


def ct_of(image) -> CTVolume:
    return CTVolume(hu=sitk.GetArrayFromImage(image), spacing=image.GetSpacing(), origin=image.GetOrigin(),
                    direction=image.GetDirection())


def test_every_axis_order_and_flip_maps_exactly_both_ways():
    rng = np.random.default_rng(0)
    values = rng.integers(-1000, 100, (7, 9, 11)).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.7, 0.8, 2.0))
    image.SetOrigin((-10.0, 20.0, 30.0))
    reference = canonical(ct_of(image))
    assert reference.orientation.identity and reference.hu is not None
    for order in itertools.permutations(range(3)):
        for flips in itertools.product((False, True), repeat=3):
            moved = sitk.Flip(sitk.PermuteAxes(image, list(order)), list(flips))
            ct = canonical(ct_of(moved))
            assert np.array_equal(ct.hu, values), (order, flips)
            np.testing.assert_allclose(ct.spacing, reference.spacing)
            np.testing.assert_allclose(ct.origin, reference.origin, atol=1e-6)
            np.testing.assert_allclose(ct.direction, reference.direction, atol=1e-9)
            assert np.array_equal(ct.on_input_grid(ct.hu), sitk.GetArrayFromImage(moved))
            np.testing.assert_allclose(ct.as_input().origin, moved.GetOrigin(), atol=1e-6)
            assert canonical(ct) is ct  # idempotent


def test_oblique_grid_is_resampled_with_a_warning_and_maps_back():
    values = np.full((20, 30, 30), -800, np.int16)
    values[5:15, 10:20, 10:20] = 40
    image = sitk.GetImageFromArray(values)
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(0.45, 0.0, 0.0)  # 26 degrees about x
    image.SetDirection(rotation.GetMatrix())
    ct = canonical(ct_of(image))
    assert ct.orientation.resampled and ct.orientation.oblique_deg == pytest.approx(25.78, abs=0.01)
    assert any("oblique grid (25.8 degrees" in w for w in ct.read_warnings)
    np.testing.assert_allclose(ct.direction_matrix, np.eye(3))
    labels = (ct.hu > -200).astype(np.uint8)
    back = ct.on_input_grid(labels)
    assert back.shape == values.shape and back.dtype == np.uint8
    inside = values > -200
    dice = 2 * np.sum(back.astype(bool) & inside) / (back.astype(bool).sum() + inside.sum())
    assert dice > 0.9


def test_axes_at_45_degrees_are_refused():
    c = np.sqrt(0.5)
    with pytest.raises(InputError, match="about 45 degrees"):
        reorientation((4, 4, 4), (1, 1, 1), (0, 0, 0), (c, -c, 0, c, c, 0, 0, 0, 1))


def _regions(summary):
    return {r["region"]: r for r in summary["qct"]["regions"]}


def _assert_same_results(reference, other, name):
    ref_regions, regions = _regions(reference), _regions(other)
    assert set(ref_regions) == set(regions), name
    for region, row in ref_regions.items():
        for key in ("voxels", "volume_l", "mean_hu", "perc15_hu", "laa950_pct", "robust_extent_pct"):
            a, b = row[key], regions[region][key]
            assert (a is None and b is None) or abs(a - b) <= 0.01, (name, region, key, a, b)
    assert reference["qct_severity"]["class"] == other["qct_severity"]["class"], name
    assert reference["qct_severity"]["zone_grades"] == other["qct_severity"]["zone_grades"], name
    if reference.get("severity"):
        assert other["severity"]["class"] == reference["severity"]["class"], name
        assert abs(other["severity"]["extent_pct"] - reference["severity"]["extent_pct"]) <= 0.01, name
        for region, value in reference["severity"]["extent_by_region"].items():
            assert abs(other["severity"]["extent_by_region"][region] - value) <= 0.01, (name, region)


def _write(image, path):
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def _check_outputs_on_input_grid(out, input_path, reference_labels):
    """lung_labels.nrrd lies on the input file's grid and, put on the canonical grid, equals
    the axial run's labels voxel for voxel."""
    written = sitk.ReadImage(str(out / "lung_labels.nrrd"))
    source = sitk.ReadImage(str(input_path))
    assert written.GetSize() == source.GetSize()
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
    labels = canonical(ct_of(written)).hu
    assert np.array_equal(labels, reference_labels)


@pytest.fixture(scope="module")
def phantom_chest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("orient")
    done = run_cli("phantom", folder / "ph", "--size", "small", "--format", "nrrd", "--extent", 14,
                   "--pattern", "mixed", "--zones", "0.6,0.3,0.1", "--seed", 4)
    assert done.returncode == 0, done.stderr
    return (folder, sitk.ReadImage(str(folder / "ph" / "ct.nrrd")),
            sitk.ReadImage(str(folder / "ph" / "labels" / "lungs.nrrd")))


@pytest.fixture(scope="module")
def axial_classical(phantom_chest):
    """The chest stored axially, analysed with the classical engine and the model (no scene, no
    report): (file, output folder, summary). The five-storages test's axial reference and the
    oblique test's axial run are this same command on the same file: run once."""
    folder, image, _ = phantom_chest
    path = _write(stored(image, "axial"), folder / "axial-classical.nrrd")
    out = folder / "out-axial-classical"
    done = run_cli("analyze", path, "--out", out, "--engine", "classical", "--no-scene", "--no-report", "--json")
    assert done.returncode == 0, done.stderr
    return path, out, json.loads(done.stdout)


# The model's orientation is checked with the classical engine, on the axial storage and the one
# that permutes and flips most (coronal_flipped); the other runs are QCT only (--no-model: the
# model costs 12 of a run's 14 s): every storage's labels equal the axial run's voxel for voxel
# on the canonical grid, which is the grid the model reads.
@pytest.mark.parametrize("engine_args", [("--engine", "classical"), ("--lung-mask",)], ids=["classical", "user_mask"])
def test_same_chest_in_five_storages_gives_the_same_numbers_and_class(phantom_chest, engine_args, request):
    folder, image, lungs = phantom_chest
    summaries, labels = {}, None
    for name in STORAGES:
        if name == "axial" and engine_args[0] == "--engine":   # the same run as the oblique test's axial one
            ct_path, out, summary = request.getfixturevalue("axial_classical")
        else:
            ct_path = _write(stored(image, name), folder / f"{name}-{engine_args[0][2:]}.nrrd")
            args = list(engine_args)
            if args == ["--lung-mask"]:
                args.append(_write(stored(lungs, name), folder / f"{name}-mask.nrrd"))
            if args[0] == "--lung-mask" or name not in MODEL_STORAGES:
                args.append("--no-model")
            out = folder / f"out-{name}-{engine_args[0][2:]}"
            done = run_cli("analyze", ct_path, "--out", out, "--no-scene", "--no-report", "--json", *args)
            assert done.returncode == 0, done.stderr
            summary = json.loads(done.stdout)
        assert summary["input"]["shape"] == list(sitk.GetArrayViewFromImage(stored(image, name)).shape)
        summaries[name] = summary
        if name == "axial":
            assert summary["input"]["reoriented"] is None
            labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lung_labels.nrrd")))
        else:
            assert "reordered" in summary["input"]["reoriented"]
            _check_outputs_on_input_grid(out, ct_path, labels)
    reference = summaries["axial"]
    upper, lower = _regions(reference)["upper"]["laa950_pct"], _regions(reference)["lower"]["laa950_pct"]
    assert upper > lower + 3  # the phantom's emphysema is upper-zone: the zones are not mixed up
    with_model = engine_args[0] == "--engine"
    assert (reference["severity"] is not None) == with_model
    for name, summary in summaries.items():
        assert (summary["severity"] is not None) == (with_model and name in MODEL_STORAGES), name
        _assert_same_results(reference if summary["severity"] else dict(reference, severity=None), summary, name)


def test_real_ct_stored_coronally_gives_the_axial_numbers(tmp_path):
    """COPDGene ct-64 (real CT, CIP's whole-lung mask as the user's mask) stored axial and
    coronal (feet-first): every region the same."""
    image = sitk.ReadImage(str(shared("cip-copdgene", "ct-64.nrrd")))
    whole = sitk.ReadImage(str(shared("cip-copdgene", "wholeLung-64.nrrd")))
    summaries = {}
    for name in ("axial", "coronal_flipped"):
        ct_path = _write(stored(image, name), tmp_path / f"{name}.nrrd")
        mask_path = _write(sitk.Cast(stored(whole, name), sitk.sitkUInt8), tmp_path / f"{name}-mask.nrrd")
        done = run_cli("analyze", ct_path, "--lung-mask", mask_path, "--out", tmp_path / name, "--no-scene",
                       "--no-report", "--no-model", "--json")
        assert done.returncode == 0, done.stderr
        summaries[name] = json.loads(done.stdout)
        # the classical engine too (it traces airways from the top: orientation matters)
        done = run_cli("segment", ct_path, "--engine", "classical", "--out", tmp_path / f"{name}-seg.nrrd", "--json")
        assert done.returncode == 0, done.stderr
        summaries[name + "-seg"] = json.loads(done.stdout)
    _assert_same_results(summaries["axial"], summaries["coronal_flipped"], "ct-64 coronal")
    for key in ("right_voxels", "left_voxels"):
        assert summaries["axial-seg"][key] == summaries["coronal_flipped-seg"][key]
    regions = _regions(summaries["axial"])
    assert 10 < regions["whole"]["laa950_pct"] < 30  # the case has visible emphysema


def test_read_ct_reorients_and_reorient_false_keeps_the_file_grid(tmp_path):
    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 1000
    image = sitk.GetImageFromArray(values)
    path = _write(stored(image, "coronal"), tmp_path / "c.nrrd")
    ct = read_ct(path)
    assert np.array_equal(ct.hu, values) and ct.orientation is not None
    raw = read_ct(path, reorient=False)
    assert raw.shape == (5, 4, 6) and raw.orientation is None
    assert ct.input_geometry_dict()["shape"] == [5, 4, 6]


def _rotated(image, degrees):
    """The same chest resampled onto a grid rotated about the left-right axis (nearest
    neighbour, -3024 HU outside the scan: what a resampling tool writes)."""
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(np.radians(degrees), 0.0, 0.0)
    direction = np.asarray(rotation.GetMatrix()).reshape(3, 3)
    size = np.array(image.GetSize()) + np.array([0, 24, 24])
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    spacing = np.asarray(image.GetSpacing())
    origin = centre - direction @ (spacing * (size - 1) / 2)
    reference = sitk.Image([int(n) for n in size], image.GetPixelID())
    reference.SetSpacing(image.GetSpacing())
    reference.SetOrigin(origin.tolist())
    reference.SetDirection(direction.ravel().tolist())
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, -3024)


def test_oblique_chest_gives_the_axial_numbers_within_resampling(phantom_chest, axial_classical):
    """A chest on a grid rotated by 20 degrees (padding wedges of -3024 HU above and below the
    scan): the classical engine still finds both lungs (padding is not outside air), HU are
    moved by nearest neighbour so %LAA-950 keeps its value, and the CNN gives the same class."""
    folder, image, _ = phantom_chest
    results = {"axial": axial_classical[2]}   # analyze --engine classical --no-scene --no-report --json
    path = _write(_rotated(image, 20), folder / "tilt-oblique.nrrd")
    done = run_cli("analyze", path, "--out", folder / "tilt-out-oblique", "--engine", "classical",
                   "--no-scene", "--no-report", "--json")
    assert done.returncode == 0, done.stderr
    results["oblique"] = json.loads(done.stdout)
    assert "oblique grid (20.0 degrees" in results["oblique"]["input"]["reoriented"]
    axial, oblique = _regions(results["axial"]), _regions(results["oblique"])
    for region in ("whole", "upper", "middle", "lower"):
        assert abs(axial[region]["laa950_pct"] - oblique[region]["laa950_pct"]) < 0.5, region
    assert abs(axial["whole"]["volume_l"] - oblique["whole"]["volume_l"]) < 0.03 * axial["whole"]["volume_l"]
    assert results["oblique"]["severity"]["class"] == results["axial"]["severity"]["class"]


def test_classical_engine_ignores_padding_slabs_above_and_below(phantom_chest):
    """Padding (-3024 HU) slices above and below the scan, where a resampled volume has them:
    the trachea ends at the padding, it does not make the lungs outside air."""
    from EmphysemaXAILib.segmentation.classical import segment_classical

    _, image, lungs = phantom_chest
    hu = sitk.GetArrayFromImage(image)
    padded = np.pad(hu, ((20, 20), (0, 0), (0, 0)), constant_values=-3024)
    labels = segment_classical(padded, image.GetSpacing()).labels[20:-20]
    truth = sitk.GetArrayFromImage(lungs)
    for lung in (1, 2):
        dice = 2 * np.sum((labels == lung) & (truth == lung)) / ((labels == lung).sum() + (truth == lung).sum())
        assert dice > 0.95, (lung, dice)


def test_info_reports_the_files_own_grid_and_the_reorientation(tmp_path):
    values = np.full((6, 10, 12), -900, np.int16)
    path = _write(stored(sitk.GetImageFromArray(values), "sagittal"), tmp_path / "s.nrrd")
    done = run_cli("info", path, "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["shape"] == list(sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))).shape)
    assert info["direction"] == pytest.approx(sitk.ReadImage(str(path)).GetDirection())
    assert "canonical axial grid" in info["reoriented"]
