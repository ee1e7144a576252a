"""Which CT images DICOM results reference (``io.dicom_source``): the source slices when they are
exactly the analysis's input grid, else a derived CT series in the source's study."""
import numpy as np
import pydicom
from helpers import ramp_volume

from EmphysemaXAILib.io.dicom_source import identity_attributes, matching_source_headers, write_derived_ct
from EmphysemaXAILib.io.dicom_write import write_dicom_series
from EmphysemaXAILib.io.read import read_ct


def test_source_slices_are_referenced_only_when_they_are_the_grid(tmp_path):
    """A regular series (also one stored with a flipped row axis: the input grid is the file's) is
    referenced as it is; a series with a missing slice (resampled along z) gets a derived CT that
    keeps the source's study and frame of reference."""
    hu = ramp_volume((8, 16, 20))
    flipped = (-1, 0, 0, 0, 1, 0, 0, 0, 1)
    write_dicom_series(hu, tmp_path / "flip", spacing=(0.7, 0.7, 2.0), direction=flipped, seed=1,
                       file_names=[f"{7 - k}.dcm" for k in range(8)])  # stored in reverse file order
    ct = read_ct(tmp_path / "flip")
    assert ct.orientation is not None and not ct.orientation.identity     # analysed on a reoriented grid
    headers = matching_source_headers(ct)
    grid = ct.input_geometry_dict()
    step = np.asarray(grid["direction"]).reshape(3, 3)[:, 2] * grid["spacing"][2]
    assert headers is not None
    found = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    assert np.allclose(found, [np.asarray(grid["origin"]) + step * k for k in range(8)])  # input-grid order
    positions = [(0.0, 0.0, 2.0 * k) for k in (0, 1, 2, 3, 5, 6, 7, 8)]   # slice 4 missing
    write_dicom_series(hu, tmp_path / "gap", spacing=(0.7, 0.7, 2.0), positions=positions, seed=2)
    gap = read_ct(tmp_path / "gap")
    assert gap.geometry["method"] == "resampled_z" and matching_source_headers(gap) is None
    source = pydicom.dcmread(tmp_path / "gap" / "slice_0000.dcm", stop_before_pixels=True)
    derived = write_derived_ct(gap, tmp_path / "derived", source=source, identity=identity_attributes(source, False),
                               source_key=source.SeriesInstanceUID, results_digest="x")
    assert len(derived) == gap.shape[0] == 9
    assert {(d.StudyInstanceUID, d.FrameOfReferenceUID) for d in derived} == \
        {(source.StudyInstanceUID, source.FrameOfReferenceUID)}
    assert derived[0].SeriesInstanceUID != source.SeriesInstanceUID and derived[0].PatientID == ""
