"""Read chest CT from any supported source: ``read_ct(path) -> CTVolume``.

Sources: a DICOM folder (recursive, several series allowed) or a single DICOM file (via
:mod:`.dicom_series`); NRRD, NIfTI and MHA/MHD files through SimpleITK; a 2D image (16-bit
signed TIFF holding HU, PNG ...) becomes a one-slice volume. Geometry is kept as ITK gives it
(LPS); the array is (z, y, x). Patient identity never leaves the reader unless asked for.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import CTVolume
from .dicom_folder import looks_like_dicom
from .dicom_series import read_dicom_series
from .files import DICOM_SUFFIXES, PLANE_SUFFIXES, VOLUME_KINDS, image_suffix
from .image_headers import check_grid, check_metaimage_header, check_nifti, check_nrrd_header, native_output_silenced


def read_ct(path, series_uid: str | None = None, keep_identity: bool = False,
            irregular: str = "resample", reorient: bool = True) -> CTVolume:
    """Read a CT volume in HU.

    Args:
        path: DICOM folder or file, NRRD / NIfTI / MHA file, or a 2D TIFF / PNG image.
        series_uid: for DICOM folders, the series to read (default: CT series with most slices).
        keep_identity: keep patient name / ID / birth date (DICOM only) in ``identity``.
        irregular: ``resample`` or ``refuse`` for DICOM gaps, non-uniform spacing and tilt.
        reorient: bring the volume onto the canonical axial grid (:mod:`.orientation`; its
            ``orientation`` maps results back onto the file's grid). False: the grid as stored.

    Returns:
        :class:`CTVolume` with ``hu`` (z, y, x), spacing / origin (x, y, z) mm and direction, LPS,
        on the canonical axial grid unless ``reorient=False``.

    Raises:
        InputError: the path does not exist or cannot be read as CT (one-line message).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; check the path")
    from .orientation import canonical

    def done(volume: CTVolume) -> CTVolume:
        return canonical(volume) if reorient else volume

    if path.is_dir():
        return done(read_dicom_series(path, series_uid, keep_identity, irregular))
    suffix = image_suffix(path)
    if suffix in VOLUME_KINDS or suffix in PLANE_SUFFIXES:
        return done(read_image_file(path))
    if suffix in DICOM_SUFFIXES or looks_like_dicom(path):
        return done(read_dicom_series(path, series_uid, keep_identity, irregular))
    raise InputError(f"{path}: unknown file type '{suffix}'; give a DICOM folder, a DICOM file, "
                     "NRRD, NIfTI (.nii / .nii.gz), MHA or a 16-bit TIFF")


def read_image_file(path: Path) -> CTVolume:
    """Read an NRRD / NIfTI / MHA volume or a 2D image through SimpleITK.

    Integral data that fit are stored as int16, everything else as float32. A 2D image gets a
    1 mm slice thickness (recorded in ``read_warnings``). Refused with one line naming the
    header field: NaN or infinite voxels, zero / negative / non-finite voxel sizes, degenerate
    or sheared axes, colour or vector images. Spacing (x, y, z) mm, origin and direction are
    LPS as ITK reports them. The native library's own messages never reach the terminal; what
    ITK silently substituted (a NIfTI qform for a sheared sform ...) is in ``read_warnings``.
    """
    import SimpleITK as sitk

    suffix = image_suffix(path)
    warnings = []
    if suffix in (".nii", ".nii.gz"):
        warnings += check_nifti(path, gzipped=suffix == ".nii.gz")
    elif suffix in (".nrrd", ".nhdr"):
        check_nrrd_header(path)
    elif suffix in (".mha", ".mhd"):
        check_metaimage_header(path)
    try:
        with native_output_silenced():
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1][:160] if str(error).strip() else ""
        raise InputError(f"{path}: cannot be read as an image ({detail}); check that the file is "
                         "complete and of the type its name says") from None
    components = image.GetNumberOfComponentsPerPixel()
    if components != 1:
        if image.GetDimension() == 2 or suffix in PLANE_SUFFIXES:
            what = {2: "a grey + alpha", 3: "an RGB colour", 4: "an RGBA colour"}.get(components, "a colour")
            raise InputError(f"{path}: {what} image ({components} channels per pixel), not CT: a "
                             "screenshot or photograph holds no Hounsfield units; give the CT "
                             "itself (DICOM, NRRD, NIfTI, or a 16-bit grey-level TIFF in HU)")
        raise InputError(f"{path}: has {components} components per voxel (a colour or vector image, "
                         "not CT); a CT volume has one (HU): convert it to a scalar volume")
    if image.GetDimension() == 2:
        if image.GetPixelID() == sitk.sitkUInt8:
            warnings.append("8-bit grey-level image: its values 0-255 are read as HU, which a "
                            "screenshot does not hold; give the CT itself when you have it")
        image = sitk.JoinSeries(image)  # (x, y) -> (x, y, 1), z spacing 1 mm
        warnings.append("2D image: read as one slice, slice thickness unknown (1 mm assumed)")
        kind = "image2d"
    elif image.GetDimension() == 3:
        kind = VOLUME_KINDS.get(suffix, "image")
    else:
        raise InputError(f"{path}: a {image.GetDimension()}D image; give a 3D CT volume "
                         "(or one 2D slice)")
    check_grid(path, image)
    array = sitk.GetArrayFromImage(image)
    array = _as_hu_array(array, path)
    return CTVolume(hu=array, spacing=tuple(float(s) for s in image.GetSpacing()),
                    origin=tuple(float(o) for o in image.GetOrigin()),
                    direction=tuple(float(d) for d in image.GetDirection()), kind=kind,
                    read_warnings=warnings, geometry={"method": "file"})


def _as_hu_array(array: np.ndarray, path: Path) -> np.ndarray:
    """int16 when integral and in range, else float32; refuse NaN / infinity."""
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            raise InputError(f"{path}: {bad} voxels are NaN or infinite; fill or mask them "
                             "(e.g. with -1024 HU outside the field of view) and save again")
        lo, hi = float(array.min()), float(array.max())
        if lo >= -32768 and hi <= 32767 and np.array_equal(array, np.rint(array)):
            return array.astype(np.int16)
        return array.astype(np.float32, copy=False)
    if array.dtype == np.int16:
        return array
    lo, hi = int(array.min()), int(array.max())
    if lo >= -32768 and hi <= 32767:
        return array.astype(np.int16)
    return array.astype(np.float32)
