"""Read a CT series from a DICOM folder with pydicom: find series, sort slices, check geometry.

Slices are sorted by their position along the slice normal (ImagePositionPatient projected on
the cross product of the ImageOrientationPatient row and column directions), never by file
name. When some slices lack a position, InstanceNumber orders them (if it is present, unique
and runs with the positions that are there) and their positions are interpolated from the
others; otherwise the series is refused. The slice spacing comes from the positions, not
SliceThickness. Positions rounded in the header jitter by thousandths of a millimetre; gaps
(missing slices), non-uniform spacing and gantry tilt are detected and resampled onto a regular
grid with a warning (or refused when ``irregular="refuse"``).

Hostile headers are refused with one line naming the tag and the file: zero, negative or
non-finite PixelSpacing or RescaleSlope, a non-finite RescaleIntercept, a degenerate
ImageOrientationPatient, colour (RGB / YBR / palette) images. A series mixing stacks of several
orientations is read through its axial stack, or refused when it has none.

All positions and directions are in the patient's LPS frame, in millimetres, as DICOM writes them.

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

from ..errors import InputError
from ..volume import OUTSIDE_FOV_HU, CTVolume, SeriesInfo

#: Files never worth a warning when they are not DICOM images.
_NOT_IMAGES = {".txt", ".md", ".json", ".xml", ".csv", ".html", ".pdf", ".png", ".jpg",
               ".jpeg", ".nrrd", ".nii", ".gz", ".mha", ".zip", ".py", ".log", ".ini"}
_SKIP_NAMES = {"DICOMDIR", "LICENSE", "README"}

#: Relative + absolute tolerance on slice spacing (mm): header rounding jitter stays inside.
SPACING_RTOL = 0.01
SPACING_ATOL = 0.02
#: In-plane drift per slice (mm), relative to the slice step, above which a series is tilted.
TILT_TOLERANCE = 1e-3
#: Row and column directions further than this (degrees) from perpendicular are refused;
#: closer ones are made exactly perpendicular.
PERPENDICULAR_TOLERANCE_DEG = 1.0
#: A stack is axial when its slice normal is within this angle (degrees) of the patient z axis.
AXIAL_LIMIT_DEG = 45.0
#: Starts of the PhotometricInterpretation values of colour images (screenshots, captures).
_COLOUR_PHOTOMETRIC = ("RGB", "ARGB", "CMYK", "HSV", "PALETTE", "YBR")


def _tag(keyword: str) -> str:
    """'RescaleSlope (0028,1053)': a keyword with its tag, as messages name header fields."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _get(ds, keyword):
    """The value of ``keyword`` (None when absent); a value pydicom cannot convert comes back
    as its raw text instead of raising, so that the checks can name it."""
    try:
        return ds.get(keyword)
    except Exception:  # pydicom raises many types on values it cannot convert
        try:
            raw = ds.get_item(keyword).value
        except Exception:
            return None
        return raw.decode("latin-1", "replace").strip("\x00 ") if isinstance(raw, bytes) else raw


def _values(value) -> list:
    """The items of a DICOM value as a list: [] when absent or empty, one item when single."""
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return []
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return list(value)
    if isinstance(value, str) and "\\" in value:
        return value.split("\\")
    return [value]


def _first(value):
    """First item of a multi-valued DICOM element (or the value itself)."""
    items = _values(value)
    return items[0] if items else None


def _to_float(value) -> float:
    """``value`` as a Python float; NaN when it is not a number (so that checks refuse it)."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def _shown(value) -> str:
    """A header value as written in the file (never a numpy or pydicom repr), for messages."""
    items = _values(value)
    return "\\".join(str(v).strip() for v in items) if items else "empty"


def _names(paths, at_most: int = 3) -> str:
    """'a.dcm, b.dcm, c.dcm and 4 more': up to ``at_most`` file names for a message."""
    shown = ", ".join(Path(p).name for p in paths[:at_most])
    return shown + (f" and {len(paths) - at_most} more" if len(paths) > at_most else "")


def _text(ds, keyword):
    value = _get(ds, keyword)
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip() or None


def _raw_number(ds, keyword):
    """First value of a numeric tag as a float: None when absent or empty, NaN when it does
    not parse, possibly infinite (for the checks that must tell these apart)."""
    value = _first(_get(ds, keyword))
    return None if value is None else _to_float(value)


def _number(ds, keyword):
    """First value of a numeric tag as a finite float, or None (absent, unparsable, infinite)."""
    value = _raw_number(ds, keyword)
    return value if value is not None and np.isfinite(value) else None


def _positive(ds, keyword):
    """A numeric tag that must be a positive length (mm): its value, or None when absent or
    not positive and finite."""
    value = _number(ds, keyword)
    return value if value is not None and value > 0 else None


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
        "slice_thickness_mm": _positive(ds, "SliceThickness"),
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


def _orientation(path: Path, ds):
    """(row, column) unit direction vectors (LPS) from ImageOrientationPatient, or None when
    the tag is absent.

    Refuses (InputError naming the tag and the file) values that do not define a slice plane:
    not six finite numbers, a zero-length row or column direction, or directions further than
    :data:`PERPENDICULAR_TOLERANCE_DEG` from perpendicular (parallel ones included). Closer
    ones are made exactly perpendicular (the column direction is corrected).
    """
    value = _get(ds, "ImageOrientationPatient")
    items = _values(value)
    if not items:
        return None
    numbers = np.array([_to_float(v) for v in items])
    where = f"{path.name}: {_tag('ImageOrientationPatient')} is {_shown(value)}"
    fix = "fix the header or re-export the series"
    if numbers.size != 6 or not np.all(np.isfinite(numbers)):
        raise InputError(f"{where}; it needs six finite numbers (row and column directions): {fix}")
    row, col = numbers[:3], numbers[3:]
    row_length, col_length = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if min(row_length, col_length) < 1e-6:
        which = "row" if row_length < 1e-6 else "column"
        raise InputError(f"{where}: its {which} direction has zero length, so the slice plane is "
                         f"undefined: {fix}")
    row, col = row / row_length, col / col_length
    cosine = float(row @ col)
    if abs(cosine) > np.sin(np.radians(PERPENDICULAR_TOLERANCE_DEG)):
        angle = float(np.degrees(np.arccos(min(1.0, abs(cosine)))))
        what = "parallel" if angle < 0.01 else f"{angle:.2f} degrees apart instead of perpendicular"
        raise InputError(f"{where}: the row and column directions are {what}, so the slice plane "
                         f"is undefined: {fix}")
    if abs(cosine) > 1e-4:  # header rounding: make the grid orthogonal
        col = col - cosine * row
        col = col / np.linalg.norm(col)
    return row, col


def _axes(orientation):
    """(row, column) of an orientation, the axial default (LPS x, y) when it is unknown."""
    return orientation if orientation is not None else (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))


def _plane(normal) -> str:
    """'axial', 'coronal', 'sagittal' or 'oblique (20 degrees from axial)' for a slice normal."""
    axis = int(np.argmax(np.abs(normal)))
    name = ("sagittal", "coronal", "axial")[axis]
    angle = float(np.degrees(np.arccos(min(1.0, abs(float(normal[axis]))))))
    return name if angle <= 10 else f"oblique ({angle:.0f} degrees from {name})"


def _position(ds):
    """ImagePositionPatient (LPS, mm) as an array, or None when absent or not 3 finite numbers."""
    numbers = [_to_float(v) for v in _values(_get(ds, "ImagePositionPatient"))]
    if len(numbers) != 3 or not all(np.isfinite(numbers)):
        return None
    return np.array(numbers)


def _colour(ds) -> str | None:
    """'PhotometricInterpretation RGB, SamplesPerPixel 3' for a colour image, else None."""
    samples = _number(ds, "SamplesPerPixel") or 1.0
    photometric = (_text(ds, "PhotometricInterpretation") or "").upper()
    if samples > 1 or photometric.startswith(_COLOUR_PHOTOMETRIC):
        return f"PhotometricInterpretation {photometric or 'missing'}, SamplesPerPixel {samples:g}"
    return None


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


def _rescale(path: Path, ds) -> tuple:
    """(slope, intercept) of one slice: HU = stored value x slope + intercept.

    A missing slope is 1 and a missing intercept 0. A slope that is zero, negative or not a
    finite number, or an intercept that is not finite, is refused (InputError naming the tag
    and the file): guessing would give every voxel the same or inverted densities.
    """
    fix = "fix the header (CT uses slope 1) or re-export the series"
    slope = _raw_number(ds, "RescaleSlope")
    if slope is None:
        slope = 1.0
    elif not (np.isfinite(slope) and slope > 0):
        raise InputError(f"{path.name}: {_tag('RescaleSlope')} is {_shown(_get(ds, 'RescaleSlope'))}; "
                         f"HU = stored value x slope + intercept needs a positive finite slope: {fix}")
    intercept = _raw_number(ds, "RescaleIntercept")
    if intercept is None:
        intercept = 0.0
    elif not np.isfinite(intercept):
        raise InputError(f"{path.name}: {_tag('RescaleIntercept')} is "
                         f"{_shown(_get(ds, 'RescaleIntercept'))}; it needs a finite number of HU: {fix}")
    return float(slope), float(intercept)


def _slice_hu(ds, out: np.ndarray, slope: float, intercept: float) -> None:
    """Write the HU of one slice into ``out`` (y, x): stored value x slope + intercept
    (integral slope and intercept when ``out`` is int16, clipped to its range)."""
    pixels = ds.pixel_array
    if pixels.shape != out.shape:
        raise ValueError(f"pixel array {pixels.shape} differs from Rows x Columns {out.shape}")
    if out.dtype == np.int16:
        values = pixels.astype(np.int64)
        if slope != 1.0:
            values *= int(slope)
        values += int(intercept)
        np.clip(values, -32768, 32767, out=values)
        out[...] = values
    else:
        out[...] = pixels * np.float32(slope) + np.float32(intercept)
        if not np.all(np.isfinite(out)):
            raise InputError(f"{_tag('RescaleSlope')} {slope:g} and {_tag('RescaleIntercept')} "
                             f"{intercept:g} give HU beyond the float range: fix the header")


def _integral(value: float) -> bool:
    """True when a rescale value can be applied in integers (whole and of sensible size)."""
    return float(value).is_integer() and abs(value) < 2 ** 31


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
    # By default a series of colour screenshots is never chosen over a grey-level one.
    grey = [i for i in infos if not all(_colour(ds) for _, ds in groups[i.uid])]
    chosen = choose_series(infos if series_uid is not None else grey or infos, series_uid)
    items = groups[chosen.uid]
    warnings = [f"skipped unreadable file {p.name}: {reason}" for p, reason in skipped]
    if len(infos) > 1:
        warnings.append(f"the folder holds {len(infos)} series; read {chosen.uid} "
                        f"({chosen.slices} slices); choose another with --series")

    items = _grey_slices(items, chosen.uid, warnings)
    items, dropped = _consistent_slices(items, chosen.uid)
    if dropped:
        warnings.append(f"ignored {dropped} slices of the series with another size or orientation")
    first_path, first = items[0]
    frames = _number(first, "NumberOfFrames") or 1
    if frames > 1:
        raise InputError(f"{first_path.name}: multi-frame (enhanced) DICOM is not supported; "
                         "convert the series to single-frame DICOM or NRRD")
    _check_decoder(first_path, first)
    orientation = _orientation(first_path, first)
    if orientation is None:
        warnings.append(f"{_tag('ImageOrientationPatient')} missing: axial slices assumed")
    row, col = _axes(orientation)
    items, positions = _order_slices(items, np.cross(row, col), warnings)
    spacing = _pixel_spacing(items, warnings)
    rescale = [_rescale(p, ds) for p, ds in items]

    rows, cols = int(_number(first, "Rows") or 0), int(_number(first, "Columns") or 0)
    integral = all(_integral(slope) and _integral(intercept) for slope, intercept in rescale)
    dtype = np.int16 if integral else np.float32
    hu = np.empty((len(items), rows, cols), dtype=dtype)
    kept, kept_positions, kept_rescale = [], [], []
    for (file_path, ds), position, (slope, intercept) in zip(items, positions, rescale):
        try:
            full = pydicom.dcmread(file_path)
            _slice_hu(full, hu[len(kept)], slope, intercept)
        except InputError as error:
            raise InputError(f"{file_path.name}: {error}") from None
        except Exception as error:
            warnings.append(f"skipped corrupt file {file_path.name}: "
                            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
            continue
        kept.append((file_path, ds))
        kept_positions.append(position)
        kept_rescale.append((slope, intercept))
    if not kept:
        raise InputError(f"{path}: none of the {len(items)} slices of series {chosen.uid} could "
                         "be decoded; check the files")
    hu = hu[: len(kept)]

    volume = _geometry(hu, kept, kept_positions, row, col, spacing, irregular, warnings)
    volume.kind = "dicom"
    volume.modality = _text(first, "Modality")
    volume.acquisition = acquisition_facts(first)
    volume.series = infos
    padding = _number(first, "PixelPaddingValue")
    if padding is not None:
        slope, intercept = kept_rescale[0]
        volume.padding_hu = padding * slope + intercept
    volume.read_warnings = warnings
    if keep_identity:
        volume.identity = _identity(first)
    return volume


def _grey_slices(items, uid, warnings):
    """The grey-level slices of a series; colour images (screenshots, secondary captures:
    RGB, YBR or palette colour, several samples per pixel) are left out with a warning, and a
    series of colour images only is refused (they hold no Hounsfield units)."""
    colour = [(p, ds) for p, ds in items if _colour(ds)]
    if not colour:
        return items
    if len(colour) == len(items):
        path, ds = colour[0]
        raise InputError(f"{path.name}: a colour image ({_colour(ds)}), not CT: series {uid} holds "
                         "screenshots or secondary captures, which carry no Hounsfield units; give "
                         "the original CT series (`info` lists the series; choose one with --series)")
    warnings.append(f"ignored {len(colour)} colour (non-CT) images of the series "
                    f"({_names([p for p, _ in colour])})")
    return [(p, ds) for p, ds in items if not _colour(ds)]


def _consistent_slices(items, uid):
    """The slices of one stack, sharing size (Rows x Columns) and orientation; returns
    (items, number of slices dropped).

    Orientations are equal when their ImageOrientationPatient directions agree within 1e-3.
    When the series mixes orientations (for example axial and sagittal slices under one
    SeriesInstanceUID), the stack whose slice normal is closest to the patient z axis is kept
    (the largest one if several sizes share it); when no stack is within
    :data:`AXIAL_LIMIT_DEG` of axial, the series is refused naming the orientations found.
    With one orientation and several sizes, the largest group is kept.
    """
    groups = []  # dicts: size (rows, columns), axes (row and column directions, 6 numbers), items
    for path, ds in items:
        size = (int(_number(ds, "Rows") or 0), int(_number(ds, "Columns") or 0))
        orientation = _orientation(path, ds)
        axes = np.concatenate(_axes(orientation))
        for group in groups:
            if group["size"] == size and np.max(np.abs(group["axes"] - axes)) <= 1e-3:
                group["items"].append((path, ds))
                break
        else:
            groups.append({"size": size, "axes": axes, "items": [(path, ds)]})
    if len(groups) == 1:
        return items, 0
    for group in groups:
        group["normal"] = np.cross(group["axes"][:3], group["axes"][3:])
        group["axial"] = abs(float(group["normal"][2]))
    best = max(group["axial"] for group in groups)
    several = any(np.max(np.abs(g["axes"] - groups[0]["axes"])) > 1e-3 for g in groups)
    if several and best < np.cos(np.radians(AXIAL_LIMIT_DEG)):
        found = "; ".join(f"{_plane(g['normal'])}, {len(g['items'])} slices of "
                          f"{g['size'][1]} x {g['size'][0]}" for g in groups)
        raise InputError(f"series {uid} mixes stacks of different orientation ({found}) and none "
                         "is axial: choose another series with --series, or split the series into "
                         "one stack per orientation (e.g. by ImageOrientationPatient) and give one")
    chosen = max((g for g in groups if g["axial"] >= best - 1e-6), key=lambda g: len(g["items"]))
    return chosen["items"], len(items) - len(chosen["items"])


def _order_slices(items, normal, warnings):
    """Sort the slices along the slice ``normal`` (LPS unit vector); return (items, positions).

    ``positions`` are the LPS points (mm) of the slices' first voxels. With every
    ImagePositionPatient present, the order is by position along the normal (file names and
    InstanceNumber play no part). When some are missing, InstanceNumber must be present and
    unique on every slice and run with the positions present: the slices are then ordered by
    it and the missing positions come from a straight-line fit of position on InstanceNumber
    (refused when the fit misses a present position by more than a twentieth of a slice step,
    at least 0.04 mm). With fewer than two positions present the head / feet direction is
    unknown, and so is everything else: InputError naming up to 3 of the slices without one.
    """
    positions = [_position(ds) for _, ds in items]
    missing = [i for i, position in enumerate(positions) if position is None]
    if len(items) == 1:
        return items, positions
    if not missing:
        order = np.argsort([float(position @ normal) for position in positions], kind="stable")
        return [items[i] for i in order], [positions[i] for i in order]

    count = f"all {len(items)} slices" if len(missing) == len(items) else \
        f"{len(missing)} of {len(items)} slices"
    lacking = f"{count} lack {_tag('ImagePositionPatient')} ({_names([items[i][0] for i in missing])})"

    def refuse(reason):
        raise InputError(f"{lacking} and {reason}, so the slice order is unknown: re-export the "
                         "series with positions, or remove the slices without one")

    instance = [_number(ds, "InstanceNumber") for _, ds in items]
    if any(n is None for n in instance):
        refuse(f"{_tag('InstanceNumber')} is missing on {sum(n is None for n in instance)} slices")
    if len(set(instance)) < len(instance):
        refuse(f"{_tag('InstanceNumber')} repeats")
    order = np.argsort(instance, kind="stable")
    items = [items[i] for i in order]
    positions = [positions[i] for i in order]
    numbers = np.array([instance[i] for i in order])
    present = [i for i, position in enumerate(positions) if position is not None]
    if len(present) < 2:
        # InstanceNumber gives an order but not which end is the head (scanners number both
        # ways): upper and lower zones could be swapped without a word. Refuse.
        refuse("fewer than two slices have one, so which end of the stack is the head is "
               "unknown (InstanceNumber runs head-first on some scanners, feet-first on others)")

    known = np.array([positions[i] for i in present])
    steps = np.diff(known @ normal)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        refuse("InstanceNumber does not run with the positions of the other slices")
    design = np.column_stack([np.ones(len(present)), numbers[present]])
    fit, *_ = np.linalg.lstsq(design, known, rcond=None)  # rows: position at 0, step per number
    residual = float(np.max(np.linalg.norm(known - design @ fit, axis=1)))
    step = abs(float(fit[1] @ normal))
    if residual > max(2 * SPACING_ATOL, 0.05 * step):
        refuse("the other slices are not evenly spaced in InstanceNumber (a straight-line fit "
               f"of position on InstanceNumber misses one by {residual:.2f} mm), so the missing "
               "positions cannot be interpolated")
    for i in range(len(items)):
        if positions[i] is None:
            positions[i] = fit[0] + fit[1] * numbers[i]
    warnings.append(f"{lacking}: ordered by InstanceNumber, their positions interpolated from "
                    f"the other slices (straight-line fit, largest residual {residual:.3f} mm)")
    order = np.argsort([float(position @ normal) for position in positions], kind="stable")
    return [items[i] for i in order], [positions[i] for i in order]


def _pixel_spacing(items, warnings) -> tuple:
    """In-plane voxel size (x = column spacing, y = row spacing) in mm, from PixelSpacing
    (ImagerPixelSpacing when it is absent) of the first slice.

    Every slice's value is checked: not two positive finite numbers is refused (InputError
    naming the tag and the file). Missing on the first slice: 1 mm with a warning.
    """
    result = None
    for path, ds in items:
        keyword = next((k for k in ("PixelSpacing", "ImagerPixelSpacing") if _values(_get(ds, k))), None)
        if keyword is None:
            continue
        value = _get(ds, keyword)
        numbers = [_to_float(v) for v in _values(value)]
        if len(numbers) != 2 or not all(np.isfinite(numbers)) or min(numbers) <= 0:
            raise InputError(f"{path.name}: {_tag(keyword)} is {_shown(value)}; it needs two positive "
                             "pixel sizes in mm (row spacing\\column spacing): fix the header or "
                             "re-export the series")
        if result is None and path == items[0][0]:
            result = (numbers[1], numbers[0])
    if result is None:
        warnings.append("PixelSpacing missing: 1 mm assumed in-plane")
        return 1.0, 1.0
    return result


def _header_step(ds, warnings):
    """Slice spacing (mm) from SpacingBetweenSlices, else SliceThickness, for series without
    positions; a zero, negative or non-finite value is ignored with a warning. Returns
    (mm or None, the tag used)."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _raw_number(ds, keyword)
        if value is None:
            continue
        if np.isfinite(value) and value > 0:
            return value, keyword
        warnings.append(f"{_tag(keyword)} is {_shown(_get(ds, keyword))}: not a positive length, "
                        "ignored")
    return None, None


def _geometry(hu, items, positions, row, col, spacing, irregular, warnings) -> CTVolume:
    """Build the CTVolume, resampling along z (gaps, non-uniform) or correcting tilt.

    ``positions``: LPS (mm) of each slice of ``hu`` in order (all None when unknown);
    ``row``, ``col``: LPS unit directions of the x and y index axes; ``spacing``: (x, y) mm.
    """
    sx, sy = spacing
    normal = np.cross(row, col)
    direction = np.column_stack([row, col, normal])
    origin = positions[0] if positions[0] is not None else np.zeros(3)

    def volume(array, dz, geometry):
        return CTVolume(hu=array, spacing=(float(sx), float(sy), float(dz)),
                        origin=tuple(float(v) for v in origin),
                        direction=tuple(float(v) for v in direction.ravel()), geometry=geometry)

    if len(items) == 1:  # (a stack without positions was refused by _order_slices)
        step, _ = _header_step(items[0][1], warnings)
        if step is None:
            warnings.append("one slice of unknown thickness: 1 mm assumed")
        return volume(hu, step or 1.0, {"method": "single_slice"})

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
