"""2D HU images (io/images.py): a single-frame DICOM's rescale is checked as a series' is."""
import warnings

import numpy as np
import pydicom
import pytest

from EmphysemaXAILib.errors import InputError
from EmphysemaXAILib.io.dicom_write import write_dicom_series
from EmphysemaXAILib.io.images import image_files, read_slice

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)


def one_slice(folder, **tags):
    """A 16 x 20 single-frame DICOM of known HU, with ``tags`` set (value) or deleted (None)."""
    hu = (np.arange(16 * 20).reshape(1, 16, 20) - 900).astype(np.int16)
    path = write_dicom_series(hu, folder, file_names=["s.dcm"])[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's complaints about deliberately invalid values
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(path)
    return path, hu[0].astype(np.float32)


def test_a_dicom_slice_is_read_in_hu_and_listed(tmp_path):
    path, hu = one_slice(tmp_path)
    np.testing.assert_array_equal(read_slice(path), hu)
    assert image_files(tmp_path) == [path]


def test_a_missing_slope_is_one(tmp_path):
    path, hu = one_slice(tmp_path, RescaleSlope=None)
    np.testing.assert_array_equal(read_slice(path), hu)


@pytest.mark.parametrize("slope", ["0", "-1", "nan"])
def test_a_slope_of_zero_negative_or_not_finite_is_refused(tmp_path, slope):
    """As io/dicom_series refuses it (a slope of 0 used to be read as 1 here)."""
    path, _ = one_slice(tmp_path, RescaleSlope=slope)
    with pytest.raises(InputError, match=r"RescaleSlope \(0028,1053\) is") as caught:
        read_slice(path)
    assert "s.dcm" in str(caught.value) and len(str(caught.value).splitlines()) == 1
