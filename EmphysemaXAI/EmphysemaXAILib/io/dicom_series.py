"""Read a CT series from a DICOM folder or file with pydicom: ``read_dicom_series(path) -> CTVolume``.

The series is found and chosen by :mod:`.dicom_folder`, its slices ordered and put on a regular
grid by :mod:`.dicom_geometry`; this module reads the pixels and turns them into HU.

Hostile headers are refused with one line naming the tag and the file: zero, negative or
non-finite PixelSpacing or RescaleSlope, a non-finite RescaleIntercept, a degenerate
ImageOrientationPatient, colour (RGB / YBR / palette) images.

Memory: the output array is allocated once and filled slice by slice, so reading a series
costs about one output volume plus one slice of temporaries.
"""
from __future__ import annotations

import warnings as _warnings
from pathlib import Path

import numpy as np
import pydicom

from ..errors import InputError
from ..volume import CTVolume
from .dicom_folder import choose_series, read_header, scan_folder, series_info
from .dicom_geometry import (
    axes_or_axial,
    consistent_slices,
    image_orientation,
    order_slices,
    pixel_spacing,
    regular_volume,
)
from .dicom_header import (
    acquisition_facts,
    header_get,
    header_number,
    header_text,
    identity_facts,
    name_list,
    raw_number,
    shown_value,
    tag_label,
)
from .pydicom_compat import decoder_status

#: Starts of the PhotometricInterpretation values of colour images (screenshots, captures).
_COLOUR_PHOTOMETRIC = ("RGB", "ARGB", "CMYK", "HSV", "PALETTE", "YBR")


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
            ds = read_header(path)
        except Exception as error:
            raise InputError(f"{path}: not a readable DICOM file ({type(error).__name__}); "
                             "check the file or give a DICOM folder, NRRD or NIfTI") from None
        if ds is None:
            raise InputError(f"{path}: not a DICOM image; give a DICOM folder, NRRD or NIfTI")
        groups = {header_text(ds, "SeriesInstanceUID") or "unknown": [(path, ds)]}
        skipped = []
    else:
        groups, skipped = scan_folder(path)
    if not groups:
        detail = f" ({len(skipped)} unreadable DICOM-like files)" if skipped else ""
        raise InputError(f"{path}: no DICOM image found{detail}; give a folder holding a CT "
                         "series, or an NRRD / NIfTI / MHA file")
    infos = sorted((series_info(uid, items) for uid, items in groups.items()),
                   key=lambda i: (-i.slices, i.uid))
    # By default a series of colour screenshots is never chosen over a grey-level one.
    grey = [i for i in infos if not all(_colour(ds) for _, ds in groups[i.uid])]
    chosen = choose_series(infos if series_uid is not None else grey or infos, series_uid)
    items = groups[chosen.uid]
    warnings = [f"skipped unreadable file {p.name}: {reason}" for p, reason in skipped]
    if len(infos) > 1:
        warnings.append(f"the folder holds {len(infos)} series; read {chosen.uid} "
                        f"({chosen.slices} slices); choose another with series_uid (--series)")

    items = _grey_slices(items, chosen.uid, warnings)
    items, dropped = consistent_slices(items, chosen.uid)
    if dropped:
        warnings.append(f"ignored {dropped} slices of the series with another size or orientation")
    first_path, first = items[0]
    frames = header_number(first, "NumberOfFrames") or 1
    if frames > 1:
        raise InputError(f"{first_path.name}: multi-frame (enhanced) DICOM is not supported; "
                         "convert the series to single-frame DICOM or NRRD")
    _check_decoder(first_path, first)
    orientation = image_orientation(first_path, first)
    if orientation is None:
        warnings.append(f"{tag_label('ImageOrientationPatient')} missing: axial slices assumed")
    row, col = axes_or_axial(orientation)
    items, positions = order_slices(items, np.cross(row, col), warnings)
    spacing = pixel_spacing(items, warnings)
    rescale = [slice_rescale(p, ds) for p, ds in items]

    rows, cols = int(header_number(first, "Rows") or 0), int(header_number(first, "Columns") or 0)
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

    volume = regular_volume(hu, kept, kept_positions, row, col, spacing, irregular, warnings)
    volume.kind = "dicom"
    volume.modality = header_text(first, "Modality")
    volume.acquisition = acquisition_facts(first)
    volume.series = infos
    padding = header_number(first, "PixelPaddingValue")
    if padding is not None:
        slope, intercept = kept_rescale[0]
        volume.padding_hu = padding * slope + intercept
    volume.read_warnings = warnings
    if keep_identity:
        volume.identity = identity_facts(first)
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
                         "the original CT series (`info` lists the series; choose one with series_uid, --series)")
    warnings.append(f"ignored {len(colour)} colour (non-CT) images of the series "
                    f"({name_list([p for p, _ in colour])})")
    return [(p, ds) for p, ds in items if not _colour(ds)]


def _colour(ds) -> str | None:
    """'PhotometricInterpretation RGB, SamplesPerPixel 3' for a colour image, else None."""
    samples = header_number(ds, "SamplesPerPixel") or 1.0
    photometric = (header_text(ds, "PhotometricInterpretation") or "").upper()
    if samples > 1 or photometric.startswith(_COLOUR_PHOTOMETRIC):
        return f"PhotometricInterpretation {photometric or 'missing'}, SamplesPerPixel {samples:g}"
    return None


def _check_decoder(path: Path, ds) -> None:
    """Raise a one-line error when the pixel data are compressed and no decoder is installed."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        return
    try:
        available, missing = decoder_status(syntax)
    except NotImplementedError:
        raise InputError(f"{path.name}: pixel data use {syntax.name} ({syntax}), which pydicom "
                         "cannot decode; convert the series to uncompressed DICOM "
                         "(e.g. `gdcmconv --raw`) or to NRRD") from None
    if not available:
        needs = "; ".join(missing) or "a decoder plugin"
        raise InputError(f"{path.name}: pixel data use {syntax.name} ({syntax}) and no decoder "
                         f"is installed: install one of [{needs}] (e.g. `pip install pylibjpeg "
                         "pylibjpeg-libjpeg pylibjpeg-openjpeg`) or convert the series to "
                         "uncompressed DICOM")


def slice_rescale(path: Path, ds) -> tuple:
    """(slope, intercept) of one slice: HU = stored value x slope + intercept.

    A missing slope is 1 and a missing intercept 0. A slope that is zero, negative or not a
    finite number, or an intercept that is not finite, is refused (InputError naming the tag
    and the file): guessing would give every voxel the same or inverted densities.
    """
    fix = "fix the header (CT uses slope 1) or re-export the series"
    slope = raw_number(ds, "RescaleSlope")
    if slope is None:
        slope = 1.0
    elif not (np.isfinite(slope) and slope > 0):
        raise InputError(f"{path.name}: {tag_label('RescaleSlope')} is {shown_value(header_get(ds, 'RescaleSlope'))}; "
                         f"HU = stored value x slope + intercept needs a positive finite slope: {fix}")
    intercept = raw_number(ds, "RescaleIntercept")
    if intercept is None:
        intercept = 0.0
    elif not np.isfinite(intercept):
        raise InputError(f"{path.name}: {tag_label('RescaleIntercept')} is "
                         f"{shown_value(header_get(ds, 'RescaleIntercept'))}; it needs a finite number of HU: {fix}")
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
            raise InputError(f"{tag_label('RescaleSlope')} {slope:g} and {tag_label('RescaleIntercept')} "
                             f"{intercept:g} give HU beyond the float range: fix the header")


def _integral(value: float) -> bool:
    """True when a rescale value can be applied in integers (whole and of sensible size)."""
    return float(value).is_integer() and abs(value) < 2 ** 31
