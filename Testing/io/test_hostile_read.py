"""Hostile input to the CT readers: every bad file is built here from a good one.

The DICOM cases also run with 3D Slicer's package versions (marker slicer_python, conftest.py):
pydicom 2.4 parses and writes the edited headers there.

Each case checks the library (an InputError naming the header field, or the right voxels in
the right order), the command line (`info`: exit 2 and one `emphysema-xai: error:` line, or
exit 0 with the read warning in `qc.warnings`), and that the input files are byte-identical
afterwards. No message may show a numpy repr such as ``np.float64(2.0)``.
"""
import hashlib
import json
import re
import struct
import warnings

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import ramp_volume, run_cli

from EmphysemaXAILib import InputError
from EmphysemaXAILib.io.dicom_series import read_dicom_series
from EmphysemaXAILib.io.dicom_write import write_dicom_series
from EmphysemaXAILib.io.pydicom_compat import save_dicom
from EmphysemaXAILib.io.read import read_image_file

SAGITTAL = (0, 0, -1, 1, 0, 0, 0, -1, 0)  # rows along LPS y, columns along -z, normal -x
CORONAL = (1, 0, 0, 0, 0, 1, 0, -1, 0)  # rows along x, columns along -z, normal +y


# ---------------------------------------------------------------------------------------------
# helpers

def digest(path):
    """{relative name: sha256} of a file or of every file under a folder."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_plain(text):
    assert "np.float" not in text and "np.int" not in text and "array(" not in text, text


def cli_error(path, match):
    """`info PATH`: exit 2, one `emphysema-xai: error:` line containing ``match``, no stdout."""
    before = digest(path)
    result = run_cli("info", path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("emphysema-xai: error:") and match in lines[0], lines[0]
    assert "WARNING" not in result.stderr and result.stdout == ""
    assert_plain(lines[0])
    assert digest(path) == before  # inputs never modified
    return lines[0]


def cli_info(path):
    """`info --json PATH`: exit 0, no raw library output; returns (info dict, stderr)."""
    before = digest(path)
    result = run_cli("info", path, "--json")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert digest(path) == before
    info = json.loads(result.stdout)
    for line in info["qc"]["warnings"]:
        assert_plain(line)
    return info, result.stderr


def edit(path, **tags):
    """Set (value) or delete (None) DICOM keywords in ``path``; pydicom's complaints about
    deliberately invalid values are silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        for keyword, value in tags.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        save_dicom(ds, path)


def shuffled_series(folder, hu, seed=1, **kwargs):
    """Write ``hu`` as a series whose file names run in a random order against z; returns the
    paths in z order."""
    order = np.random.default_rng(seed).permutation(hu.shape[0])
    names = [f"im{int(r):03d}.dcm" for r in order]
    return write_dicom_series(hu, folder, file_names=names, **kwargs)


def library_error(read, path, match):
    with pytest.raises(InputError) as caught:
        read(path)
    assert match in str(caught.value), str(caught.value)
    assert len(str(caught.value).splitlines()) == 1
    assert_plain(str(caught.value))
    return str(caught.value)


# ---------------------------------------------------------------------------------------------
# 1. slices without ImagePositionPatient: never file-name order

@pytest.mark.slicer_python
@pytest.mark.parametrize("lost", [[4], [0], [11], [2, 7]])
def test_slices_without_position_come_back_in_z_order(tmp_path, lost):
    hu = ramp_volume((12, 20, 24))
    paths = shuffled_series(tmp_path, hu, spacing=(0.7, 0.7, 1.25), origin=(-5, 3, -200))
    for k in lost:
        edit(paths[k], ImagePositionPatient=None)
    before = digest(tmp_path)
    ct = read_dicom_series(tmp_path)
    assert np.array_equal(ct.hu, hu)
    assert ct.spacing[2] == pytest.approx(1.25, abs=1e-3)
    assert ct.origin == pytest.approx((-5, 3, -200), abs=1e-3)
    message = " ".join(ct.read_warnings)
    assert f"{len(lost)} of 12 slices lack ImagePositionPatient (0020,0032)" in message
    assert paths[lost[0]].name in message and "InstanceNumber" in message
    assert digest(tmp_path) == before
    info, _ = cli_info(tmp_path)
    assert any("lack ImagePositionPatient" in w for w in info["qc"]["warnings"])


@pytest.mark.slicer_python
def test_instance_numbers_running_against_z_still_give_z_order(tmp_path):
    hu = ramp_volume((10, 16, 16))
    paths = shuffled_series(tmp_path, hu, spacing=(1, 1, 2.0))
    for k, path in enumerate(paths):
        edit(path, InstanceNumber=100 - 3 * k)
    edit(paths[6], ImagePositionPatient=None)
    ct = read_dicom_series(tmp_path)
    assert np.array_equal(ct.hu, hu) and ct.spacing[2] == pytest.approx(2.0)


@pytest.mark.slicer_python
@pytest.mark.parametrize("defect, match", [
    ("no_instance", "InstanceNumber (0020,0013) is missing"),
    ("repeated_instance", "InstanceNumber (0020,0013) repeats"),
    ("shuffled_instance", "does not run with the positions"),
    ("uneven", "not evenly spaced"),
])
def test_slices_without_position_that_cannot_be_ordered_are_refused(tmp_path, defect, match):
    hu = ramp_volume((8, 16, 16))
    positions = None
    if defect == "uneven":  # steps 1 mm then 3 mm: no straight line through InstanceNumber
        positions = [np.array([0.0, 0.0, z]) for z in (0, 1, 2, 3, 6, 9, 12, 15)]
    paths = shuffled_series(tmp_path, hu, positions=positions)
    edit(paths[3], ImagePositionPatient=None)
    if defect == "no_instance":
        edit(paths[5], InstanceNumber=None)
    elif defect == "repeated_instance":
        edit(paths[5], InstanceNumber=2)
    elif defect == "shuffled_instance":
        edit(paths[0], InstanceNumber=7)
        edit(paths[6], InstanceNumber=1)
    message = library_error(read_dicom_series, tmp_path, match)
    assert "1 of 8 slices lack ImagePositionPatient (0020,0032)" in message
    assert paths[3].name in message and "slice order is unknown" in message
    cli_error(tmp_path, match)


@pytest.mark.slicer_python
def test_many_slices_without_position_name_three(tmp_path):
    hu = ramp_volume((8, 16, 16))
    paths = shuffled_series(tmp_path, hu)
    for k in (1, 2, 4, 5, 6):
        edit(paths[k], ImagePositionPatient=None)
    edit(paths[3], InstanceNumber=None)
    message = library_error(read_dicom_series, tmp_path, "5 of 8 slices lack")
    assert sum(p.name in message for p in paths) == 3 and "and 2 more" in message


@pytest.mark.slicer_python
def test_no_position_anywhere_is_refused_head_feet_unknown(tmp_path):
    """InstanceNumber runs head-first on some scanners and feet-first on others: without any
    position the head end is unknown (upper and lower zones could swap), so it is refused."""
    hu = ramp_volume((9, 16, 16))
    paths = shuffled_series(tmp_path, hu, spacing=(1, 1, 2.5))
    for path in paths:
        edit(path, ImagePositionPatient=None)
    message = library_error(read_dicom_series, tmp_path, "all 9 slices lack ImagePositionPatient")
    assert "which end of the stack is the head is unknown" in message
    edit(paths[4], InstanceNumber=None)
    library_error(read_dicom_series, tmp_path, "InstanceNumber (0020,0013) is missing on 1 slices")
    cli_error(tmp_path, "all 9 slices lack ImagePositionPatient (0020,0032)")


# ---------------------------------------------------------------------------------------------
# 2. RescaleSlope / RescaleIntercept

@pytest.mark.slicer_python
@pytest.mark.parametrize("slope", ["0", "-1", "nan", "inf"])
def test_bad_rescale_slope_is_refused(tmp_path, slope):
    paths = write_dicom_series(ramp_volume((4, 12, 12)), tmp_path)
    edit(paths[2], RescaleSlope=slope)
    message = library_error(read_dicom_series, tmp_path, "RescaleSlope (0028,1053)")
    assert paths[2].name in message and f"is {slope}" in message
    cli_error(tmp_path, "RescaleSlope (0028,1053)")


@pytest.mark.slicer_python
def test_missing_slope_is_one_and_bad_intercept_refused(tmp_path):
    hu = ramp_volume((4, 12, 12))
    paths = write_dicom_series(hu, tmp_path)
    for path in paths:
        edit(path, RescaleSlope=None)
    assert np.array_equal(read_dicom_series(tmp_path).hu, hu)
    edit(paths[1], RescaleIntercept="nan")
    library_error(read_dicom_series, tmp_path, "RescaleIntercept (0028,1052) is nan")
    cli_error(tmp_path, "RescaleIntercept (0028,1052)")


# ---------------------------------------------------------------------------------------------
# 3. two stacks of different orientation in one series

@pytest.mark.slicer_python
def test_axial_stack_chosen_over_a_larger_sagittal_one(tmp_path):
    axial = ramp_volume((12, 32, 40))
    write_dicom_series(axial, tmp_path, spacing=(0.8, 0.8, 1.5), seed=4)
    # 20 sagittal slices of the same size and series UID (same seed and description)
    write_dicom_series(ramp_volume((20, 32, 40), seed=9) + 200, tmp_path, spacing=(0.8, 0.8, 1.0),
                       direction=SAGITTAL, seed=4, file_names=[f"a{k:03d}.dcm" for k in range(20)])
    ct = read_dicom_series(tmp_path)
    assert len(ct.series) == 1
    assert np.array_equal(ct.hu, axial)
    assert ct.direction == pytest.approx(np.eye(3).ravel())
    assert "ignored 20 slices of the series with another size or orientation" in ct.read_warnings
    info, _ = cli_info(tmp_path)
    assert info["shape"] == [12, 32, 40]


@pytest.mark.slicer_python
def test_series_without_an_axial_stack_is_refused(tmp_path):
    write_dicom_series(ramp_volume((6, 16, 16)), tmp_path, direction=SAGITTAL, seed=5)
    write_dicom_series(ramp_volume((8, 16, 16)), tmp_path, direction=CORONAL, seed=5,
                       file_names=[f"c{k:03d}.dcm" for k in range(8)])
    message = library_error(read_dicom_series, tmp_path, "none is axial")
    assert "sagittal, 6 slices" in message and "coronal, 8 slices" in message
    assert "--series" in message and "split the series" in message
    cli_error(tmp_path, "none is axial")


# ---------------------------------------------------------------------------------------------
# 4. spacing and orientation

@pytest.mark.slicer_python
@pytest.mark.parametrize("spacing", ["0\\0.7", "0.7\\-0.7", "nan\\0.7", "0.7"])
def test_bad_pixel_spacing_is_refused_at_reading(tmp_path, spacing):
    paths = write_dicom_series(ramp_volume((4, 12, 12)), tmp_path)
    edit(paths[0], PixelSpacing=spacing)
    message = library_error(read_dicom_series, tmp_path, "PixelSpacing (0028,0030)")
    assert paths[0].name in message
    cli_error(tmp_path, "PixelSpacing (0028,0030)")


@pytest.mark.slicer_python
def test_bad_imager_pixel_spacing_is_named(tmp_path):
    paths = write_dicom_series(ramp_volume((3, 12, 12)), tmp_path)
    for path in paths:
        edit(path, PixelSpacing=None, ImagerPixelSpacing="0.7\\0")
    library_error(read_dicom_series, tmp_path, "ImagerPixelSpacing (0018,1164) is 0.7\\0")


@pytest.mark.slicer_python
@pytest.mark.parametrize("iop, match", [
    ("1\\0\\0\\1\\0\\0", "parallel"),
    ("1\\0\\0\\-1\\0\\0", "parallel"),
    ("0\\0\\0\\0\\1\\0", "row direction has zero length"),
    ("1\\0\\0\\0.5\\0.866\\0", "degrees apart instead of perpendicular"),
    ("1\\0\\nan\\0\\1\\0", "six finite numbers"),
    ("1\\0\\0\\0\\1", "six finite numbers"),
])
def test_degenerate_orientation_is_refused(tmp_path, iop, match):
    paths = write_dicom_series(ramp_volume((4, 12, 12)), tmp_path)
    for path in paths:
        edit(path, ImageOrientationPatient=iop)
    message = library_error(read_dicom_series, tmp_path, "ImageOrientationPatient (0020,0037)")
    assert match in message
    cli_error(tmp_path, match)


@pytest.mark.slicer_python
def test_non_positive_slice_thickness_is_ignored_with_a_warning(tmp_path):
    paths = write_dicom_series(ramp_volume((3, 12, 12)), tmp_path, spacing=(1, 1, 2.0))
    edit(paths[1], SliceThickness="0")
    single = read_dicom_series(paths[1])
    assert single.spacing[2] == 1.0
    assert any("SliceThickness (0018,0050) is 0" in w for w in single.read_warnings)
    assert single.acquisition["slice_thickness_mm"] is None
    edit(paths[2], SpacingBetweenSlices="-2", SliceThickness="2.5")  # one slice: thickness from the header
    ct = read_dicom_series(paths[2])
    assert ct.spacing[2] == 2.5
    assert any("SpacingBetweenSlices (0018,0088) is -2" in w for w in ct.read_warnings)


def _volume_file(folder, name):
    image = sitk.GetImageFromArray(ramp_volume((5, 10, 12)))
    image.SetSpacing((0.7, 0.8, 1.5))
    path = folder / name
    sitk.WriteImage(image, str(path), False)
    return path


def _patch_text(path, pattern, replacement):
    data = path.read_bytes()
    patched = re.sub(pattern.encode(), replacement.encode(), data, count=1)
    assert patched != data
    path.write_bytes(patched)


@pytest.mark.parametrize("value", ["0", "-0.8", "nan"])
def test_bad_metaimage_spacing_is_refused(tmp_path, value):
    path = _volume_file(tmp_path, "ct.mha")
    _patch_text(path, r"ElementSpacing = [^\n]*", f"ElementSpacing = 0.7 {value} 1.5")
    library_error(read_image_file, path, "ElementSpacing")
    cli_error(path, "MetaImage field ElementSpacing is '0.7 " + value)


@pytest.mark.parametrize("field, match", [
    ("space directions: (0.7,0,0) (0,0,0) (0,0,1.5)", "zero-length direction"),
    ("space directions: (0.7,0,0) (0.8,0,0) (0,0,1.5)", "parallel axes"),
    ("space directions: (0.7,0,0) (0.4,0.8,0) (0,0,1.5)", "off perpendicular"),
    ("space directions: (0.7,0,0) (0,nan,0) (0,0,1.5)", "not finite"),
    ("spacings: 0.7 -0.8 1.5", "'spacings' is '0.7 -0.8 1.5'"),
    ("spacings: 0.7 0 1.5", "'spacings' is '0.7 0 1.5'"),
])
def test_bad_nrrd_geometry_is_refused(tmp_path, field, match):
    path = _volume_file(tmp_path, "ct.nrrd")
    if field.startswith("spacings"):
        _patch_text(path, r"space: [^\n]*\n", "")
        _patch_text(path, r"space origin: [^\n]*\n", "")
    _patch_text(path, r"space directions: [^\n]*", field)
    library_error(read_image_file, path, match)
    cli_error(path, match)


@pytest.mark.parametrize("value", [0.0, -0.8, float("nan")])
def test_bad_nifti_voxel_size_is_refused(tmp_path, value):
    path = _volume_file(tmp_path, "ct.nii")
    data = bytearray(path.read_bytes())
    data[84:88] = struct.pack("<f", value)  # pixdim[2]
    path.write_bytes(bytes(data))
    library_error(read_image_file, path, "NIfTI pixdim[2] (voxel size along y)")
    cli_error(path, "pixdim[2]")


def test_negative_nifti_scale_is_refused(tmp_path):
    path = _volume_file(tmp_path, "ct.nii.gz")
    plain = tmp_path / "ct.nii"
    sitk.WriteImage(sitk.ReadImage(str(path)), str(plain), False)
    data = bytearray(plain.read_bytes())
    data[112:120] = struct.pack("<2f", -1.0, 0.0)  # scl_slope, scl_inter
    plain.write_bytes(bytes(data))
    library_error(read_image_file, plain, "NIfTI scl_slope is -1")
    cli_error(plain, "scl_slope")


# ---------------------------------------------------------------------------------------------
# 5. colour images

def _colour_capture(path, photometric):
    """Turn a written CT slice into a colour secondary capture with ``photometric`` pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        rows, cols = int(ds.Rows), int(ds.Columns)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PhotometricInterpretation = photometric
        if photometric == "PALETTE COLOR":
            ds.SamplesPerPixel = 1
            lut = np.arange(256, dtype=np.uint16).tobytes()
            for colour in ("Red", "Green", "Blue"):
                setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
                ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
            ds.RedPaletteColorLookupTableData = ds.GreenPaletteColorLookupTableData = \
                ds.BluePaletteColorLookupTableData = lut
            ds.PixelData = np.zeros((rows, cols), np.uint8).tobytes()
        else:
            ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
            ds.PixelData = np.full((rows, cols, 3), 90, np.uint8).tobytes()
        save_dicom(ds, path)


@pytest.mark.slicer_python
@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL", "PALETTE COLOR"])
def test_colour_secondary_capture_is_named_as_such(tmp_path, photometric):
    paths = write_dicom_series(ramp_volume((2, 12, 12)), tmp_path)
    for path in paths:
        _colour_capture(path, photometric)
    message = library_error(read_dicom_series, tmp_path, "a colour image")
    assert f"PhotometricInterpretation {photometric}" in message and "not CT" in message
    assert "could be decoded" not in message
    cli_error(tmp_path, "not CT")


@pytest.mark.slicer_python
def test_colour_captures_beside_or_inside_a_ct_series_are_left_out(tmp_path):
    hu = ramp_volume((6, 12, 12))
    write_dicom_series(hu, tmp_path / "ct", seed=1)
    screenshots = write_dicom_series(ramp_volume((9, 12, 12)), tmp_path / "sc", seed=2,
                                     series_description="screens")
    for path in screenshots:
        _colour_capture(path, "RGB")
    assert np.array_equal(read_dicom_series(tmp_path).hu, hu)  # the bigger colour series is not chosen
    inside = write_dicom_series(ramp_volume((1, 12, 12)), tmp_path / "ct", seed=1,
                                file_names=["capture.dcm"])[0]
    _colour_capture(inside, "RGB")
    ct = read_dicom_series(tmp_path / "ct")
    assert np.array_equal(ct.hu, hu)
    assert any("ignored 1 colour (non-CT) images" in w and "capture.dcm" in w for w in ct.read_warnings)


@pytest.mark.slicer_python
@pytest.mark.parametrize("name", ["shot.png", "shot.tif"])
def test_colour_picture_is_named_as_such(tmp_path, name):
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(np.full((20, 30, 3), 80, np.uint8), isVector=True), str(path))
    library_error(read_image_file, path, "an RGB colour image (3 channels per pixel), not CT")
    cli_error(path, "colour image")


# ---------------------------------------------------------------------------------------------
# 6. sheared NIfTI sform: no raw ITK output, the substitution reported

def _sheared_nifti(folder, qform_code=1):
    path = _volume_file(folder, "sheared.nii")
    data = bytearray(path.read_bytes())
    srow = np.array(struct.unpack("<12f", data[280:328])).reshape(3, 4)
    assert struct.unpack("<2h", data[252:256]) == (1, 1)  # ITK writes qform and sform
    srow[0, 1] = 0.4  # x now depends on j: the axes are no longer perpendicular
    data[280:328] = struct.pack("<12f", *srow.ravel())
    data[252:256] = struct.pack("<2h", qform_code, 1)
    path.write_bytes(bytes(data))
    return path


def test_sheared_nifti_sform_gives_a_warning_not_itk_output(tmp_path, capfd):
    path = _sheared_nifti(tmp_path)
    ct = read_image_file(path)
    out, err = capfd.readouterr()
    assert err == "" and out == ""  # nothing from ITK on the terminal
    assert any("sform" in w and "sheared" in w and "ITK used the qform" in w for w in ct.read_warnings)
    assert ct.spacing == pytest.approx((0.7, 0.8, 1.5))
    info, stderr = cli_info(path)
    assert any("sheared" in w and "qform" in w for w in info["qc"]["warnings"])
    assert "itkNiftiImageIO" not in stderr


def test_sheared_nifti_without_qform_is_refused(tmp_path):
    path = _sheared_nifti(tmp_path, qform_code=0)
    library_error(read_image_file, path, "sform (srow_x / srow_y / srow_z) is sheared")
    cli_error(path, "no qform")


def test_plain_nifti_reads_without_warnings(tmp_path, capfd):
    ct = read_image_file(_volume_file(tmp_path, "ok.nii.gz"))
    assert ct.read_warnings == [] and capfd.readouterr().err == ""
