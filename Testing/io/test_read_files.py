"""NRRD, NIfTI, MHA and 2D images through SimpleITK: voxels and LPS geometry kept."""
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import ramp_volume

from EmphysemaXAILib import read_ct

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)

DIRECTION = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # a permutation: not identity


@pytest.mark.parametrize("name", ["ct.nrrd", "ct.nii.gz", "ct.nii", "ct.mha"])
def test_volume_files_keep_voxels_and_geometry(tmp_path, name):
    hu = ramp_volume((7, 20, 24))
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.7, 0.8, 1.5))
    image.SetOrigin((-100.0, 20.0, -300.0))
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(tmp_path / name))
    ct = read_ct(tmp_path / name, reorient=False)  # the grid as stored
    assert ct.hu.dtype == np.int16 and np.array_equal(ct.hu, hu)
    assert ct.spacing == pytest.approx((0.7, 0.8, 1.5))
    assert ct.origin == pytest.approx((-100.0, 20.0, -300.0), abs=1e-4)
    assert ct.direction == pytest.approx(DIRECTION, abs=1e-6)
    assert ct.kind == {"nrrd": "nrrd", "gz": "nifti", "nii": "nifti", "mha": "mha"}[name.rsplit(".", 1)[1]]
    # index -> LPS point agrees with ITK
    assert ct.index_to_lps((2, 3, 4)) == pytest.approx(image.TransformIndexToPhysicalPoint((4, 3, 2)))
    # by default on the canonical axial grid: identity direction, every voxel at the same place
    canonical = read_ct(tmp_path / name)
    assert canonical.direction == pytest.approx(np.eye(3).ravel(), abs=1e-6)
    assert canonical.input_geometry_dict()["direction"] == pytest.approx(DIRECTION, abs=1e-6)
    k, j, i = 2, 3, 4  # a canonical voxel and the stored voxel at the same LPS point hold the same HU
    stored_index = image.TransformPhysicalPointToIndex(tuple(canonical.index_to_lps((k, j, i))))
    assert canonical.hu[k, j, i] == hu[stored_index[::-1]]


def test_float_volume_with_fractions_stays_float(tmp_path):
    array = (ramp_volume((3, 8, 8)) + 0.25).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "f.nrrd"))
    ct = read_ct(tmp_path / "f.nrrd")
    assert ct.hu.dtype == np.float32 and np.allclose(ct.hu, array)


def test_signed_16bit_tiff_is_a_one_slice_volume(tmp_path):
    hu = ramp_volume((1, 30, 40))[0]
    assert hu.min() < 0
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.6, 0.6))
    sitk.WriteImage(image, str(tmp_path / "slice.tif"))
    ct = read_ct(tmp_path / "slice.tif")
    assert ct.shape == (1, 30, 40) and ct.kind == "image2d"
    assert np.array_equal(ct.hu[0], hu)
    assert any("2D image" in w for w in ct.read_warnings)


def test_vector_image_refused(tmp_path):
    from EmphysemaXAILib import InputError

    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="3 components per voxel"):
        read_ct(tmp_path / "rgb.nrrd")
