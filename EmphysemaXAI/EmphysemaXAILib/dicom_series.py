"""Read a CT series from a DICOM folder with pydicom: find series, sort slices, check geometry.

Slices are sorted by their position along the slice normal (ImagePositionPatient projected on
the cross product of the ImageOrientationPatient row and column directions), never by file
name or InstanceNumber. The slice spacing comes from those positions, not SliceThickness.
Positions rounded in the header jitter by thousandths of a millimetre; gaps (missing slices),
non-uniform spacing and gantry tilt are detected and resampled onto a regular grid with a
warning (or refused when ``irregular="refuse"``).

Memory: the output array is allocated once and filled slice by slice, so reading a series
costs about one output volume plus one slice of temporaries.
"""
from __future__ import annotations

import os
import warnings as _warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from .errors import InputError
from .volume import OUTSIDE_FOV_HU, CTVolume, SeriesInfo

#: Files never worth a warning when they are not DICOM images.
_NOT_IMAGES = {".txt", ".md", ".json", ".xml", ".csv", ".html", ".pdf", ".png", ".jpg",
               ".jpeg", ".nrrd", ".nii", ".gz", ".mha", ".zip", ".py", ".log", ".ini"}
_SKIP_NAMES = {"DICOMDIR", "LICENSE", "README"}

#: Relative + absolute tolerance on slice spacing (mm): header rounding jitter stays inside.
SPACING_RTOL = 0.01
SPACING_ATOL = 0.02
#: In-plane drift per slice (mm), relative to the slice step, above which a series is tilted.
TILT_TOLERANCE = 1e-3


def _first(value):
    """First item of a multi-valued DICOM element (or the value itself)."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return value[0] if len(value) else None
    return value


def _text(ds, keyword):
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip() or None


def _number(ds, keyword):
    value = _first(ds.get(keyword))
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def acquisition_facts(ds) -> dict:
    """Acquisition facts of a DICOM header, keyed as ``contracts.md`` names them."""
    exposure = _number(ds, "Exposure")
    if exposure is None:
        current, time_ms = _number(ds, "XRayTubeCurrent"), _number(ds, "ExposureTime")
        if current is not None and time_ms is not None:
            exposure = current * time_ms / 1000.0
    facts = {
        "kernel": _text(ds, "ConvolutionKernel"),
        "kvp": _number(ds, "KVP"),
        "exposure_mas": exposure,
        "ctdivol": _number(ds, "CTDIvol"),
        "slice_thickness_mm": _number(ds, "SliceThickness"),
        "manufacturer": _text(ds, "Manufacturer"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
        "study_date": _text(ds, "StudyDate"),
    }
    return facts


def _identity(ds) -> dict:
    return {"patient_name": _text(ds, "PatientName"), "patient_id": _text(ds, "PatientID"),
            "birth_date": _text(ds, "PatientBirthDate")}


def looks_like_dicom(path: Path) -> bool:
    """True when ``path`` is a readable file with the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _read_header(path: Path):
    """Header of an image file, or None when the file is not a DICOM image.

    Raises InvalidDicomError / OSError / other pydicom errors for files that claim to be
    DICOM but cannot be parsed (the caller reports them as corrupt).
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        # DICOM without the 128-byte preamble still exists in the wild: accept it only when
        # it parses to an image header.
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "Rows" not in ds or "SOPInstanceUID" not in ds:
            return None
    if "Rows" not in ds:
        return None  # structured report, presentation state, ...: not an image
    return ds


def scan_folder(folder: Path):
    """Headers of every DICOM image file under ``folder`` (recursive), grouped by series.

    Returns:
        (series, skipped): ``series`` maps SeriesInstanceUID -> list of (path, header);
        ``skipped`` lists (path, reason) of files that looked like DICOM but could not be read.
    """
    series = defaultdict(list)
    skipped = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or name.upper() in _SKIP_NAMES:
                continue
            suffix = path.suffix.lower()
            try:
                ds = _read_header(path)
            except Exception as error:  # pydicom raises many types on broken files
                if suffix in {".dcm", ".ima", ".dicom", ""} or looks_like_dicom(path):
                    skipped.append((path, f"{type(error).__name__}: {error}".splitlines()[0]))
                continue
            if ds is None:
                if suffix not in _NOT_IMAGES and looks_like_dicom(path):
                    skipped.append((path, "DICOM file without image pixels"))
                continue
            series[_text(ds, "SeriesInstanceUID") or "unknown"].append((path, ds))
    return series, skipped


def _series_info(uid, items) -> SeriesInfo:
    ds = items[0][1]
    return SeriesInfo(uid=uid, description=_text(ds, "SeriesDescription") or "",
                      modality=_text(ds, "Modality"), slices=len(items),
                      kernel=_text(ds, "ConvolutionKernel"), files=[p for p, _ in items])


def choose_series(infos: list, uid: str | None) -> SeriesInfo:
    """The series named by ``uid``, else the CT series with the most slices.

    When no series says Modality CT, the largest series of any modality is returned, so that
    quality control can report what it is rather than the reader guessing.
    """
    if uid is not None:
        for info in infos:
            if info.uid == uid:
                return info
        listing = ", ".join(f"{i.uid} ({i.modality}, {i.slices} slices)" for i in infos)
        raise InputError(f"series {uid} is not in the folder; the folder holds: {listing}")
    ct = [i for i in infos if (i.modality or "").upper() == "CT"]
    return max(ct or infos, key=lambda i: i.slices)


def _orientation(ds):
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    return row / np.linalg.norm(row), col / np.linalg.norm(col)


def _position(ds):
    ipp = ds.get("ImagePositionPatient")
    return None if ipp is None or len(ipp) != 3 else np.array(ipp, float)


def _check_decoder(path: Path, ds) -> None:
    """Raise a one-line error when the pixel data are compressed and no decoder is installed."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise InputError(f"{path.name}: pixel data use {syntax.name} ({syntax}), which pydicom "
                         "cannot decode; convert the series to uncompressed DICOM "
                         "(e.g. `gdcmconv --raw`) or to NRRD") from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise InputError(f"{path.name}: pixel data use {syntax.name} ({syntax}) and no decoder "
                         f"is installed: install one of [{needs}] (e.g. `pip install pylibjpeg "
                         "pylibjpeg-libjpeg pylibjpeg-openjpeg`) or convert the series to "
                         "uncompressed DICOM")


def _slice_hu(ds, out: np.ndarray) -> None:
    """Write the HU of one slice into ``out`` (y, x), applying RescaleSlope / Intercept."""
    pixels = ds.pixel_array
    if pixels.shape != out.shape:
        raise ValueError(f"pixel array {pixels.shape} differs from Rows x Columns {out.shape}")
    slope = _number(ds, "RescaleSlope") or 1.0
    intercept = _number(ds, "RescaleIntercept") or 0.0
    if out.dtype == np.int16:
        values = pixels.astype(np.int32)
        if slope != 1.0:
            values *= int(slope)
        values += int(intercept)
        np.clip(values, -32768, 32767, out=values)
        out[...] = values
    else:
        out[...] = pixels * np.float32(slope) + np.float32(intercept)


def _integral(value) -> bool:
    return value is None or float(value).is_integer()


def read_dicom_series(path: Path, series_uid: str | None = None, keep_identity: bool = False,
                      irregular: str = "resample") -> CTVolume:
    """Read one CT series from a DICOM folder (recursive) or one DICOM file.

    Args:
        path: a folder (searched recursively) or a single DICOM file (a one-slice volume).
        series_uid: the SeriesInstanceUID to read; default: the CT series with most slices.
        keep_identity: fill :attr:`CTVolume.identity` with patient name / ID / birth date.
        irregular: ``resample`` (default) puts gaps, non-uniform spacing and gantry tilt on a
            regular grid with a warning; ``refuse`` raises :class:`InputError` instead.

    Returns:
        A :class:`CTVolume` (z, y, x) in HU, int16 when slope and intercept are integral.
        pydicom's own warnings about header oddities are silenced; what matters to the user
        is in ``read_warnings``.
    """
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", UserWarning)
        return _read_dicom_series(Path(path), series_uid, keep_identity, irregular)


def _read_dicom_series(path: Path, series_uid, keep_identity, irregular) -> CTVolume:
    if path.is_file():
        try:
            ds = _read_header(path)
        except Exception as error:
            raise InputError(f"{path}: not a readable DICOM file ({type(error).__name__}); "
                             "check the file or give a DICOM folder, NRRD or NIfTI") from None
        if ds is None:
            raise InputError(f"{path}: not a DICOM image; give a DICOM folder, NRRD or NIfTI")
        groups = {_text(ds, "SeriesInstanceUID") or "unknown": [(path, ds)]}
        skipped = []
    else:
        groups, skipped = scan_folder(path)
    if not groups:
        detail = f" ({len(skipped)} unreadable DICOM-like files)" if skipped else ""
        raise InputError(f"{path}: no DICOM image found{detail}; give a folder holding a CT "
                         "series, or an NRRD / NIfTI / MHA file")
    infos = sorted((_series_info(uid, items) for uid, items in groups.items()),
                   key=lambda i: (-i.slices, i.uid))
    chosen = choose_series(infos, series_uid)
    items = groups[chosen.uid]
    warnings = [f"skipped unreadable file {p.name}: {reason}" for p, reason in skipped]
    if len(infos) > 1:
        warnings.append(f"the folder holds {len(infos)} series; read {chosen.uid} "
                        f"({chosen.slices} slices); choose another with --series")

    items, dropped = _consistent_slices(items)
    if dropped:
        warnings.append(f"ignored {dropped} slices of the series with another size or orientation")
    first = items[0][1]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{items[0][0].name}: multi-frame (enhanced) DICOM is not supported; "
                         "convert the series to single-frame DICOM or NRRD")
    _check_decoder(items[0][0], first)
    row, col = _orientation(first)
    normal = np.cross(row, col)
    # Sort by position along the slice normal (files without a position keep file order).
    positions = [_position(ds) for _, ds in items]
    if all(p is not None for p in positions):
        order = np.argsort([float(p @ normal) for p in positions], kind="stable")
        items = [items[i] for i in order]

    rows, cols = int(first.Rows), int(first.Columns)
    integral = all(_integral(_number(ds, "RescaleSlope")) and _integral(_number(ds, "RescaleIntercept"))
                   for _, ds in items)
    dtype = np.int16 if integral else np.float32
    hu = np.empty((len(items), rows, cols), dtype=dtype)
    kept = []
    for file_path, ds in items:
        try:
            full = pydicom.dcmread(file_path)
            _slice_hu(full, hu[len(kept)])
        except Exception as error:
            warnings.append(f"skipped corrupt file {file_path.name}: "
                            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            continue
        kept.append((file_path, ds))
    if not kept:
        raise InputError(f"{path}: none of the {len(items)} slices of series {chosen.uid} could "
                         "be decoded; check the files")
    hu = hu[: len(kept)]

    volume = _geometry(hu, kept, row, col, irregular, warnings)
    volume.kind = "dicom"
    volume.modality = _text(first, "Modality")
    volume.acquisition = acquisition_facts(first)
    volume.series = infos
    padding = _number(first, "PixelPaddingValue")
    if padding is not None:
        volume.padding_hu = padding * (_number(first, "RescaleSlope") or 1.0) + (
            _number(first, "RescaleIntercept") or 0.0)
    volume.read_warnings = warnings
    if keep_identity:
        volume.identity = _identity(first)
    return volume


def _consistent_slices(items):
    """Keep the largest group of slices sharing size and orientation; return (items, dropped)."""
    groups = defaultdict(list)
    for item in items:
        ds = item[1]
        iop = tuple(np.round(np.array(ds.get("ImageOrientationPatient") or [1, 0, 0, 0, 1, 0], float), 3))
        groups[(int(ds.Rows), int(ds.Columns), iop)].append(item)
    best = max(groups.values(), key=len)
    return best, len(items) - len(best)


def _pixel_spacing(ds):
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is None or len(spacing) != 2:
        return 1.0, 1.0, False
    return float(spacing[1]), float(spacing[0]), True  # (x = column spacing, y = row spacing)


def _geometry(hu, items, row, col, irregular, warnings) -> CTVolume:
    """Build the CTVolume, resampling along z (gaps, non-uniform) or correcting tilt."""
    first = items[0][1]
    sx, sy, has_spacing = _pixel_spacing(first)
    if not has_spacing:
        warnings.append("PixelSpacing missing: 1 mm assumed in-plane")
    normal = np.cross(row, col)
    direction = np.column_stack([row, col, normal])
    positions = [_position(ds) for _, ds in items]
    thickness = _number(first, "SpacingBetweenSlices") or _number(first, "SliceThickness")
    origin = positions[0] if positions[0] is not None else np.zeros(3)

    def volume(array, dz, geometry):
        return CTVolume(hu=array, spacing=(sx, sy, float(dz)), origin=tuple(float(v) for v in origin),
                        direction=tuple(float(v) for v in direction.ravel()), geometry=geometry)

    if len(items) == 1 or any(p is None for p in positions):
        if len(items) > 1:
            warnings.append("ImagePositionPatient missing: slices kept in file order, spacing "
                            "from SliceThickness")
        return volume(hu, thickness or 1.0, {"method": "single_slice" if len(items) == 1 else "no_positions"})

    p = np.array(positions)
    along = p @ normal
    steps = np.diff(along)
    if np.any(steps < SPACING_ATOL):
        raise InputError(f"{int(np.sum(steps < SPACING_ATOL)) + 1} slices share a position "
                         "(several acquisitions or echoes in one series?): choose one with "
                         "--series or split the series")
    total = along[-1] - along[0]
    # The regular step: the small end of the steps (gaps and thicker segments are larger).
    step = float(np.quantile(steps, 0.1))
    tol = max(SPACING_ATOL, SPACING_RTOL * step)
    uniform = bool(np.all(np.abs(steps - step) <= tol))
    drift = (p[-1] - p[0]) / (len(p) - 1) - normal * (total / (len(p) - 1))
    tilted = float(np.linalg.norm(drift)) > max(TILT_TOLERANCE * step, 0.005)
    geometry = {"method": "uniform", "steps_mm": [round(float(s), 4) for s in (steps.min(), np.median(steps), steps.max())]}

    if uniform and not tilted:
        return volume(hu, total / (len(p) - 1), geometry)
    if irregular == "refuse":
        what = "gantry tilt" if tilted else "non-uniform slice spacing or missing slices"
        raise InputError(f"series has {what} (steps {steps.min():.3f}-{steps.max():.3f} mm); "
                         "rerun with irregular slices allowed, or resample the series first")
    if tilted and not uniform:
        raise InputError("series has both gantry tilt and irregular slice spacing: resample it "
                         "to a regular grid (e.g. in 3D Slicer) before analysis")
    if tilted:
        angle = float(np.degrees(np.arctan2(np.linalg.norm(drift), total / (len(p) - 1))))
        warnings.append(f"gantry tilt of {angle:.2f} degrees corrected by resampling onto an "
                        "orthogonal grid (linear interpolation)")
        geometry.update(method="tilt_corrected", tilt_deg=round(angle, 3))
        return _correct_tilt(volume(hu, total / (len(p) - 1), geometry), p)

    gaps = int(np.sum(steps > step + tol))
    warnings.append(f"slice spacing not uniform ({steps.min():.3f}-{steps.max():.3f} mm, "
                    f"{gaps} gaps wider than {step:.3f} mm): resampled along z to {step:.3f} mm "
                    "by linear interpolation")
    geometry.update(method="resampled_z")
    return volume(_resample_z(hu, along - along[0], step), step, geometry)


def _resample_z(hu: np.ndarray, offsets: np.ndarray, step: float) -> np.ndarray:
    """Linear interpolation along z from slices at ``offsets`` (mm) onto a regular ``step`` grid."""
    count = int(round(offsets[-1] / step)) + 1
    out = np.empty((count,) + hu.shape[1:], dtype=hu.dtype)
    for k in range(count):
        z = min(k * step, offsets[-1])
        upper = int(np.searchsorted(offsets, z, side="left"))
        if upper == 0 or abs(offsets[upper] - z) < 1e-6:
            out[k] = hu[upper]
            continue
        lower = upper - 1
        w = (z - offsets[lower]) / (offsets[upper] - offsets[lower])
        mixed = hu[lower].astype(np.float32) * (1 - w) + hu[upper].astype(np.float32) * w
        out[k] = np.rint(mixed) if out.dtype == np.int16 else mixed
    return out


def _correct_tilt(vol: CTVolume, positions: np.ndarray) -> CTVolume:
    """Resample a gantry-tilted stack onto the orthogonal grid of its first slice.

    The stored slices sit at ``positions`` (LPS, mm): index (i, j, k) is at
    ``P0 + A @ (i, j, k)`` with ``A = [sx*row, sy*col, step]``. The output grid uses
    ``B = [sx*row, sy*col, dz*normal]`` with the same origin. SimpleITK resamples through the
    affine map from output points to where the same index lies in the unsheared input image.
    """
    import SimpleITK as sitk

    sx, sy, dz = vol.spacing
    D = vol.direction_matrix
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    A = np.column_stack([sx * D[:, 0], sy * D[:, 1], step])
    B = np.column_stack([sx * D[:, 0], sy * D[:, 1], dz * D[:, 2]])
    image = vol.to_sitk()  # unsheared: geometry B, the voxel values of the tilted stack
    transform = sitk.AffineTransform(3)
    transform.SetMatrix((B @ np.linalg.inv(A)).ravel().tolist())
    transform.SetCenter([float(v) for v in vol.origin])
    out = sitk.Resample(image, image, transform, sitk.sitkLinear, float(OUTSIDE_FOV_HU),
                        sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(out)
    vol.hu = np.rint(array).astype(np.int16) if vol.hu.dtype == np.int16 else array
    return vol
