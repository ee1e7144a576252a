"""DICOM header values as the reader checks them: tag names for messages, tolerant access, acquisition facts.

Values are read without raising: a value pydicom cannot convert comes back as its raw text and
a number that does not parse as NaN, so that the checks of :mod:`.dicom_geometry` and
:mod:`.dicom_series` can refuse it with one line naming the tag (:func:`tag_label`) and the value
as written in the file (:func:`shown_value`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom


def tag_label(keyword: str) -> str:
    """'RescaleSlope (0028,1053)': a keyword with its tag, as messages name header fields."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return keyword if tag is None else f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def header_get(ds, keyword) -> object:
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


def value_items(value) -> list:
    """The items of a DICOM value as a list: [] when absent or empty, one item when single."""
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return []
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return list(value)
    if isinstance(value, str) and "\\" in value:
        return value.split("\\")
    return [value]


def first_item(value) -> object:
    """First item of a multi-valued DICOM element (or the value itself)."""
    items = value_items(value)
    return items[0] if items else None


def as_float(value) -> float:
    """``value`` as a Python float; NaN when it is not a number (so that checks refuse it)."""
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def shown_value(value) -> str:
    """A header value as written in the file (never a numpy or pydicom repr), for messages."""
    items = value_items(value)
    return "\\".join(str(v).strip() for v in items) if items else "empty"


def name_list(paths, at_most: int = 3) -> str:
    """'a.dcm, b.dcm, c.dcm and 4 more': up to ``at_most`` file names for a message."""
    shown = ", ".join(Path(p).name for p in paths[:at_most])
    return shown + (f" and {len(paths) - at_most} more" if len(paths) > at_most else "")


def header_text(ds, keyword) -> str | None:
    value = header_get(ds, keyword)
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip() or None


def raw_number(ds, keyword) -> float | None:
    """First value of a numeric tag as a float: None when absent or empty, NaN when it does
    not parse, possibly infinite (for the checks that must tell these apart)."""
    value = first_item(header_get(ds, keyword))
    return None if value is None else as_float(value)


def header_number(ds, keyword) -> float | None:
    """First value of a numeric tag as a finite float, or None (absent, unparsable, infinite)."""
    value = raw_number(ds, keyword)
    return value if value is not None and np.isfinite(value) else None


def positive_length(ds, keyword) -> float | None:
    """A numeric tag that must be a positive length (mm): its value, or None when absent or
    not positive and finite."""
    value = header_number(ds, keyword)
    return value if value is not None and value > 0 else None


def acquisition_facts(ds) -> dict:
    """Acquisition facts of a DICOM header, keyed as ``docs/contracts.md`` names them."""
    exposure = header_number(ds, "Exposure")
    if exposure is None:
        current, time_ms = header_number(ds, "XRayTubeCurrent"), header_number(ds, "ExposureTime")
        if current is not None and time_ms is not None:
            exposure = current * time_ms / 1000.0
    facts = {
        "kernel": header_text(ds, "ConvolutionKernel"),
        "kvp": header_number(ds, "KVP"),
        "exposure_mas": exposure,
        "ctdivol": header_number(ds, "CTDIvol"),
        "slice_thickness_mm": positive_length(ds, "SliceThickness"),
        "manufacturer": header_text(ds, "Manufacturer"),
        "series_uid": header_text(ds, "SeriesInstanceUID"),
        "study_date": header_text(ds, "StudyDate"),
    }
    return facts


def identity_facts(ds) -> dict:
    return {"patient_name": header_text(ds, "PatientName"), "patient_id": header_text(ds, "PatientID"),
            "birth_date": header_text(ds, "PatientBirthDate")}
