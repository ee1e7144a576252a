"""DICOM series reading on generated series: sorting, rescale, series choice, geometry."""
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import ramp_volume

from EmphysemaXAILib import InputError, read_ct
from EmphysemaXAILib.io.dicom_write import write_dicom_series

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)

OBLIQUE = (0.0, 1.0, 0.0,  # a rotation: index x runs along LPS y, index y along -x
           -1.0, 0.0, 0.0,
           0.0, 0.0, 1.0)


def test_slices_sorted_by_position_not_name_or_instance_number(tmp_path, ramp):
    n = ramp.shape[0]
    # File names and InstanceNumbers run against the slice positions.
    names = [f"img{(n - k) * 7 % 100:03d}.dcm" for k in range(n)]
    write_dicom_series(ramp, tmp_path, spacing=(0.7, 0.7, 1.25), origin=(-10, -20, -300),
                       file_names=names)
    for k, name in enumerate(names):
        ds = pydicom.dcmread(tmp_path / name)
        ds.InstanceNumber = n - k
        ds.save_as(tmp_path / name)
    ct = read_ct(tmp_path)
    assert np.array_equal(ct.hu, ramp)
    assert ct.spacing == pytest.approx((0.7, 0.7, 1.25))
    assert ct.origin == pytest.approx((-10, -20, -300))
    assert ct.hu.dtype == np.int16
    assert ct.geometry["method"] == "uniform"


def test_matches_simpleitk_gdcm_reader_on_oblique_series(tmp_path, ramp):
    """Geometry and voxels agree with ITK's own DICOM series reader (an independent reader)."""
    write_dicom_series(ramp, tmp_path, spacing=(0.8, 0.6, 2.0), origin=(5, -7, 11), direction=OBLIQUE)
    ct = read_ct(tmp_path, reorient=False)  # the series' own grid (read_ct reorients by default)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    ref = reader.Execute()
    assert np.array_equal(ct.hu, sitk.GetArrayFromImage(ref))
    assert ct.spacing == pytest.approx(ref.GetSpacing(), abs=1e-4)
    assert ct.origin == pytest.approx(ref.GetOrigin(), abs=1e-4)
    assert ct.direction == pytest.approx(ref.GetDirection(), abs=1e-6)
    # A voxel lands where ITK says it is.
    assert ct.index_to_lps((3, 4, 5)) == pytest.approx(ref.TransformIndexToPhysicalPoint((5, 4, 3)))


def test_rescale_slope_and_intercept_applied(tmp_path):
    stored = np.arange(2 * 8 * 8, dtype=np.int16).reshape(2, 8, 8)
    write_dicom_series(stored, tmp_path)  # writer stores HU + 1024 with intercept -1024
    for path in sorted(tmp_path.iterdir()):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-1000.5"
        ds.save_as(path)
    ct = read_ct(tmp_path)
    assert ct.hu.dtype == np.float32  # non-integral rescale keeps fractions
    assert np.allclose(ct.hu, (stored + 1024) * 0.5 - 1000.5)


def test_position_jitter_is_tolerated(tmp_path, ramp):
    rng = np.random.default_rng(1)
    positions = [np.array([0.0, 0.0, 1.25 * k]) + rng.uniform(-0.004, 0.004, 3) for k in range(ramp.shape[0])]
    write_dicom_series(ramp, tmp_path, spacing=(0.7, 0.7, 1.25), positions=positions)
    ct = read_ct(tmp_path)
    assert ct.geometry["method"] == "uniform"
    assert ct.read_warnings == []
    assert ct.spacing[2] == pytest.approx(1.25, abs=0.002)
    assert np.array_equal(ct.hu, ramp)


def test_missing_slice_is_detected_and_interpolated(tmp_path, ramp):
    keep = [k for k in range(ramp.shape[0]) if k != 5]
    positions = [np.array([0.0, 0.0, 2.0 * k]) for k in keep]
    write_dicom_series(ramp[keep], tmp_path, spacing=(1, 1, 2.0), positions=positions)
    ct = read_ct(tmp_path)
    assert ct.geometry["method"] == "resampled_z"
    assert any("gaps" in w and "resampled" in w for w in ct.read_warnings)
    assert ct.shape == ramp.shape and ct.spacing[2] == pytest.approx(2.0)
    expected = np.rint((ramp[4].astype(float) + ramp[6]) / 2)
    assert np.array_equal(ct.hu[5], expected.astype(np.int16))
    assert np.array_equal(ct.hu[keep], ramp[keep])
    with pytest.raises(InputError, match="missing slices"):
        read_ct(tmp_path, irregular="refuse")


def test_non_uniform_spacing_resampled_linearly(tmp_path):
    # HU is a linear function of z (mm), so linear interpolation must reproduce it exactly.
    offsets = np.array([0, 1, 2, 3, 4, 6, 8, 10, 12], float)
    hu = np.stack([np.full((6, 6), -800 + 10 * z) for z in offsets]).astype(np.int16)
    write_dicom_series(hu, tmp_path, positions=[np.array([0, 0, z]) for z in offsets])
    ct = read_ct(tmp_path)
    assert ct.shape[0] == 13 and ct.spacing[2] == pytest.approx(1.0)
    assert np.array_equal(ct.hu[:, 0, 0], (-800 + 10 * np.arange(13)).astype(np.int16))
    assert any("not uniform" in w for w in ct.read_warnings)


def test_gantry_tilt_corrected_onto_orthogonal_grid(tmp_path):
    """Slices shifted along y as z grows (tilt): values land at their true physical points."""
    nz, ny, nx = 10, 40, 30
    dz, tilt_shift = 2.0, 0.5  # mm of y shift per slice: about 14 degrees
    def field(x, y, z):  # linear in space: exact under linear interpolation
        return -900 + 4.0 * x + 3.0 * y + 2.0 * z
    hu = np.empty((nz, ny, nx), np.int16)
    for k in range(nz):
        yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
        hu[k] = np.rint(field(xx, yy + tilt_shift * k, dz * k))
    positions = [np.array([0.0, tilt_shift * k, dz * k]) for k in range(nz)]
    write_dicom_series(hu, tmp_path, spacing=(1, 1, dz), positions=positions)
    ct = read_ct(tmp_path)
    assert ct.geometry["method"] == "tilt_corrected"
    assert ct.geometry["tilt_deg"] == pytest.approx(np.degrees(np.arctan(tilt_shift / dz)), abs=0.01)
    assert ct.origin == pytest.approx((0, 0, 0)) and ct.direction == pytest.approx(np.eye(3).ravel())
    k, j, i = 6, 20, 15  # inside the overlap of all slices
    x, y, z = ct.index_to_lps((k, j, i))
    assert ct.hu[k, j, i] == pytest.approx(field(x, y, z), abs=1.0)
    assert ct.hu[9, 0, 0] == -3024  # outside the tilted stack: outside the field of view
    with pytest.raises(InputError, match="gantry tilt"):
        read_ct(tmp_path, irregular="refuse")


def test_series_choice_default_and_by_uid(tmp_path, ramp):
    small = ramp[:4] + 100
    write_dicom_series(ramp, tmp_path / "a", series_description="big", seed=1)
    write_dicom_series(small, tmp_path / "b" / "nested", series_description="small", seed=2)
    write_dicom_series(ramp[:20], tmp_path / "c", series_description="scout MR", modality="MR", seed=3)
    ct = read_ct(tmp_path)
    assert len(ct.series) == 3
    by_desc = {s.description: s for s in ct.series}
    assert ct.acquisition["series_uid"] == by_desc["big"].uid
    assert np.array_equal(ct.hu, ramp)
    assert {s.slices for s in ct.series} == {12, 4}
    assert any("3 series" in w for w in ct.read_warnings)
    chosen = read_ct(tmp_path, series_uid=by_desc["small"].uid)
    assert np.array_equal(chosen.hu, small)
    with pytest.raises(InputError, match="not in the folder"):
        read_ct(tmp_path, series_uid="1.2.3.4")


def test_acquisition_facts_and_identity_kept_only_on_request(tmp_path, ramp):
    write_dicom_series(ramp, tmp_path, kernel="B70f", kvp=100, exposure_mas=35, ctdivol=2.1,
                       slice_thickness_mm=1.0, patient_name="DOE^JANE", patient_id="ID12345")
    ct = read_ct(tmp_path)
    assert ct.acquisition["kernel"] == "B70f"
    assert ct.acquisition["kvp"] == 100 and ct.acquisition["exposure_mas"] == 35
    assert ct.acquisition["ctdivol"] == pytest.approx(2.1)
    assert ct.acquisition["slice_thickness_mm"] == 1.0
    assert ct.identity is None
    assert "DOE" not in repr(ct.acquisition) and "ID12345" not in repr(ct.acquisition)
    kept = read_ct(tmp_path, keep_identity=True)
    assert kept.identity == {"patient_name": "DOE^JANE", "patient_id": "ID12345", "birth_date": "19500101"}


def test_single_dicom_file_is_one_slice_volume(tmp_path):
    hu = ramp_volume((3, 16, 16))
    paths = write_dicom_series(hu, tmp_path, spacing=(0.6, 0.6, 1.5))
    ct = read_ct(paths[1])
    assert ct.shape == (1, 16, 16)
    assert np.array_equal(ct.hu[0], hu[1])
    assert ct.spacing == pytest.approx((0.6, 0.6, 1.5))  # slice thickness as z size
