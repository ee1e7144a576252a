"""DICOM writing under pydicom 2.4 (3D Slicer's) and pydicom 3: the same file format either way."""
import struct

import numpy as np
import pydicom
import pytest
from helpers import ramp_volume

from EmphysemaXAILib import read_ct
from EmphysemaXAILib.io.dicom_write import write_dicom_series
from EmphysemaXAILib.io.pydicom_compat import PYDICOM_MAJOR, decoder_status, save_dicom

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


def file_meta_elements(data: bytes) -> dict:
    """Group 0002 of a DICOM file parsed by hand (explicit VR little endian): tag -> (VR, value)."""
    assert data[:128] == b"\0" * 128 and data[128:132] == b"DICM"
    offset, elements = 132, {}
    while data[offset:offset + 2] == b"\x02\x00":
        group, element = struct.unpack_from("<HH", data, offset)
        vr = data[offset + 4:offset + 6].decode()
        if vr in ("OB", "OW", "OF", "SQ", "UT", "UN"):
            length = struct.unpack_from("<I", data, offset + 8)[0]
            start = offset + 12
        else:
            length = struct.unpack_from("<H", data, offset + 6)[0]
            start = offset + 8
        elements[(group, element)] = (vr, data[start:start + length])
        offset = start + length
    return elements


def test_written_files_are_explicit_vr_little_endian_part10_files(tmp_path):
    hu = ramp_volume((3, 10, 12))
    paths = write_dicom_series(hu, tmp_path, spacing=(0.7, 0.8, 2.5), seed=4)
    data = paths[0].read_bytes()
    meta = file_meta_elements(data)
    group_length = struct.unpack("<I", meta[(2, 0)][1])[0]
    assert group_length == sum(12 + len(v) if vr in ("OB", "OW", "OF", "SQ", "UT", "UN") else 8 + len(v)
                               for tag, (vr, v) in meta.items() if tag != (2, 0))
    assert meta[(2, 0x10)][1].rstrip(b"\0").decode() == EXPLICIT_VR_LITTLE_ENDIAN
    assert meta[(2, 2)][1].rstrip(b"\0").decode() == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    assert meta[(2, 1)] == ("OB", b"\0\x01")  # FileMetaInformationVersion
    assert (2, 3) in meta and (2, 0x12) in meta  # SOP instance, implementation class
    # the dataset after the meta group is explicit VR: its first element carries a two-letter VR
    body = 132 + sum(12 + len(v) if vr in ("OB", "OW", "OF", "SQ", "UT", "UN") else 8 + len(v)
                     for vr, v in meta.values())
    assert data[body + 4:body + 6].isalpha()
    ds = pydicom.dcmread(paths[0])
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_VR_LITTLE_ENDIAN
    assert (ds.RescaleIntercept, ds.RescaleSlope, ds.PixelRepresentation) == (-1024, 1, 1)
    ct = read_ct(tmp_path)
    assert np.array_equal(ct.hu, hu)
    np.testing.assert_allclose(ct.spacing, (0.7, 0.8, 2.5))


def test_an_edited_header_is_saved_in_the_syntax_of_its_file_meta(tmp_path):
    """save_dicom on a dataset read back (the tests' way of making hostile headers)."""
    path = write_dicom_series(ramp_volume((1, 8, 8)), tmp_path)[0]
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = "edited"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    save_dicom(ds, path)
    data = path.read_bytes()
    meta = file_meta_elements(data)
    assert meta[(2, 0x10)][1].rstrip(b"\0").decode() == "1.2.840.10008.1.2"
    back = pydicom.dcmread(path)
    assert back.SeriesDescription == "edited"
    assert np.array_equal(back.pixel_array, ds.pixel_array)


def test_decoder_status_for_uncompressed_and_unknown_syntaxes():
    assert decoder_status(pydicom.uid.ExplicitVRLittleEndian)[0] is True
    with pytest.raises(NotImplementedError):
        decoder_status(pydicom.uid.UID("1.2.3.4.5.6.7"))
    assert PYDICOM_MAJOR == int(pydicom.__version__.split(".")[0])


def test_every_series_the_project_writes_passes_dciodvfy(tmp_path):
    """The phantom series (ORIGINAL, with CTDIvol and padding), the sample case and a derived
    series with an empty patient module: no Error line from dciodvfy (dicom3tools)."""
    from dicom_validate import dciodvfy_findings

    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
    from EmphysemaXAILib.phantom.io import write_phantom
    from EmphysemaXAILib.phantom.sample import write_sample_series

    phantom = write_phantom(generate_phantom(PhantomParams(size="small", seed=3)), tmp_path / "phantom")
    sample = write_sample_series(tmp_path / "sample", shape=(4, 64, 64))
    derived = write_dicom_series(ramp_volume((2, 8, 8)), tmp_path / "derived", ctdivol=None,
                                 image_type=("DERIVED", "SECONDARY", "AXIAL"),
                                 derivation_description="resampled from NRRD", patient_name="", patient_id="",
                                 patient_birth_date="", study_uid="1.2.3.4", series_uid="1.2.3.4.5",
                                 frame_of_reference_uid="1.2.3.4.6")
    for path in (sorted((phantom / "ct").iterdir())[0], sorted(sample.iterdir())[-1], derived[1]):
        found = dciodvfy_findings(path)
        assert found["errors"] == [], found["output"]
        assert "CTImage" in found["output"]  # the validator recognised the IOD it checked
    ds = pydicom.dcmread(derived[0])
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) == ("1.2.3.4", "1.2.3.4.5", "1.2.3.4.6")
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"] and ds.PatientName == "" and ds.PatientID == ""
    phantom_slice = pydicom.dcmread(sorted((phantom / "ct").iterdir())[0])
    assert phantom_slice.CTDIPhantomTypeCodeSequence[0].CodeValue == "113691"
    assert "Laterality" not in phantom_slice and phantom_slice.PatientPosition == "HFS"
