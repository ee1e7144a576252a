"""2D HU images, any size: single slices or patches (the embedding table's images route, the
pattern model's ``patterns`` command).

- TIFF (``.tif``, ``.tiff``, read with tifffile): one 2D plane of signed integers or floats,
  taken as HU as stored (unsigned data are refused: their HU offset is unknown).
- DICOM (``.dcm``, ``.dicom``, ``.ima`` or a file with the DICM preamble, read with pydicom):
  one frame, HU = stored value x RescaleSlope + RescaleIntercept, with the slope and intercept
  checked as in a series (:func:`.dicom_series.slice_rescale`: a missing slope is 1; a slope that is
  zero, negative or not finite is refused).

Other files in the folder are skipped (a README, a labels CSV).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .dicom_folder import looks_like_dicom
from .files import DICOM_SUFFIXES, TIFF_SUFFIXES


def is_image_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in TIFF_SUFFIXES or suffix in DICOM_SUFFIXES or (suffix == "" and looks_like_dicom(path))


def image_files(folder) -> list:
    """The TIFF / DICOM files under ``folder`` (recursive), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of images")
    files = sorted((p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and is_image_file(p)),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise InputError(f"{folder}: holds no TIFF or DICOM images (.tif, .tiff, .dcm)")
    return files


def read_slice(path) -> np.ndarray:
    """(H, W) float32 HU of a 2D TIFF or single-frame DICOM image (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _read_tiff(path)
    if path.suffix.lower() in DICOM_SUFFIXES or looks_like_dicom(path):
        return _read_dicom(path)
    raise InputError(f"{path}: unknown image type '{path.suffix}'; give a 16-bit signed TIFF or a DICOM file")


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        array = tifffile.imread(path)
    except Exception as error:
        raise InputError(f"{path}: cannot be read as TIFF ({str(error).strip()[:120]})") from None
    array = np.squeeze(array)
    if array.ndim != 2:
        raise InputError(f"{path}: a TIFF of shape {array.shape}; give one 2D grey-level slice")
    if np.issubdtype(array.dtype, np.unsignedinteger):
        raise InputError(f"{path}: unsigned {array.dtype} TIFF, HU offset unknown; save HU as signed 16-bit")
    return _finite(array.astype(np.float32), path)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom

    from .dicom_series import slice_rescale

    try:
        dataset = pydicom.dcmread(path)
        array = dataset.pixel_array
    except Exception as error:
        raise InputError(f"{path}: cannot be read as DICOM ({str(error).strip()[:120]})") from None
    if array.ndim != 2:
        raise InputError(f"{path}: DICOM pixel data of shape {array.shape}; give a single-frame grey-level image")
    slope, intercept = slice_rescale(path, dataset)
    return _finite(array.astype(np.float32) * np.float32(slope) + np.float32(intercept), path)


def _finite(array: np.ndarray, path: Path) -> np.ndarray:
    if not np.isfinite(array).all():
        raise InputError(f"{path}: holds NaN or infinite pixels; fill them and save again")
    return array
