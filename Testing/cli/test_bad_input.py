"""Bad input: one-line errors naming the problem, exit code 2 at the command line, no traceback,
nothing written, inputs untouched. Every bad file is made here."""
import hashlib
import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import ramp_volume, run_cli
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1

from EmphysemaXAILib import InputError, read_ct
from EmphysemaXAILib.io.dicom_write import write_dicom_series
from EmphysemaXAILib.io.pydicom_compat import decoder_status, save_dicom


def assert_cli_error(path, *extra, match):
    result = run_cli("info", path, *extra)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("emphysema-xai: error:") and match in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


def folder_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_ct(tmp_path / "nope")
    assert_cli_error(tmp_path / "nope", match="no such file or folder")


def test_empty_folder(tmp_path):
    assert_cli_error(tmp_path, match="no DICOM image found")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "data.bin").write_bytes(b"\x00\x01" * 500)
    assert_cli_error(tmp_path, match="no DICOM image found")


@pytest.mark.slicer_python
def test_non_ct_modality_is_reported_not_read_as_ct(tmp_path):
    write_dicom_series(ramp_volume(), tmp_path / "mr", modality="MR")
    result = run_cli("info", tmp_path / "mr", "--json")
    assert result.returncode == 0  # info reports, never excludes
    info = json.loads(result.stdout)
    assert info["modality"] == "MR"
    assert any("modality is MR, not CT" in e for e in info["qc"]["errors"])


@pytest.mark.slicer_python
def test_one_corrupt_file_among_good_ones_is_skipped_with_its_name(tmp_path):
    hu = ramp_volume((10, 24, 24))
    paths = write_dicom_series(hu, tmp_path, spacing=(1, 1, 2))
    broken = paths[4]
    broken.write_bytes(broken.read_bytes()[:-300])  # truncated pixel data
    garbage = tmp_path / "slice_9999.dcm"
    garbage.write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)  # header that does not parse
    before = folder_digest(tmp_path)
    ct = read_ct(tmp_path)
    names = " ".join(ct.read_warnings)
    assert "slice_0004.dcm" in names and "slice_9999.dcm" in names
    assert ct.shape == hu.shape  # the gap left by the corrupt slice is interpolated
    assert np.array_equal(ct.hu[:4], hu[:4]) and np.array_equal(ct.hu[5:], hu[5:])
    assert folder_digest(tmp_path) == before  # inputs never modified
    result = run_cli("info", tmp_path, "--json")
    assert result.returncode == 0
    warnings = json.loads(result.stdout)["qc"]["warnings"]
    assert any("slice_0004.dcm" in w for w in warnings)


@pytest.mark.slicer_python
def test_compressed_transfer_syntax_without_decoder_names_syntax_and_package(tmp_path):
    """Lossless JPEG (process 14, SV1): decoded only by pylibjpeg-libjpeg or GDCM, which neither
    test environment has (JPEG-LS is decoded here since highdicom brought pyjpegls)."""
    paths = write_dicom_series(ramp_volume((3, 16, 16)), tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\x00" * 60])
        ds["PixelData"].VR = "OB"
        save_dicom(ds, path)
    assert not decoder_status(JPEGLosslessSV1)[0]  # else this test would not reach the missing-decoder path
    line = assert_cli_error(tmp_path, match="JPEG Lossless")
    assert "pylibjpeg" in line and "no decoder" in line


def test_unreadable_nifti(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 20)
    assert_cli_error(path, match="cannot be read as an image")


def test_truncated_nifti(tmp_path):
    path = tmp_path / "cut.nii"
    sitk.WriteImage(sitk.GetImageFromArray(ramp_volume((6, 20, 20))), str(path))
    path.write_bytes(path.read_bytes()[:-2000])
    assert_cli_error(path, match="truncated NIfTI")


def test_nifti_with_nan(tmp_path):
    array = ramp_volume((4, 10, 10)).astype(np.float32)
    array[2, 3, 3] = np.nan
    path = tmp_path / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(InputError, match="1 voxels are NaN"):
        read_ct(path)
    assert_cli_error(path, match="NaN")


def test_unknown_file_type(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_text("hello")
    assert_cli_error(path, match="unknown file type")


def test_unknown_series_uid(tmp_path):
    write_dicom_series(ramp_volume(), tmp_path)
    assert_cli_error(tmp_path, "--series", "9.9.9", match="series 9.9.9 is not in the folder")


def test_internal_error_gives_one_line_and_a_log(tmp_path, monkeypatch):
    from EmphysemaXAILib import cli

    def boom(args):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(cli.COMMANDS["info"], "run", boom)
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["info", str(tmp_path)])
    assert code == 1
    line = err.getvalue().strip()
    assert len(line.splitlines()) == 1 and "simulated failure" in line and "traceback in" in line
    log = line.split("traceback in ")[1].split(";")[0]
    assert "RuntimeError: simulated failure" in open(log).read()
