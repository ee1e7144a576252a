"""Find the DICOM series in a folder: scan image headers recursively, group them by series, choose one.

Files are recognised by their content (the DICM preamble, or a header that parses to an image),
never by their name alone; files that look like DICOM but cannot be parsed are listed as skipped
so that the reader can say so.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import InputError
from ..volume import SeriesInfo
from .dicom_header import header_text
from .files import DICOM_SUFFIXES, VOLUME_SUFFIXES

#: Files never worth a warning when they are not DICOM images.
_NOT_IMAGES = {".txt", ".md", ".json", ".xml", ".csv", ".html", ".pdf", ".png", ".jpg",
               ".jpeg", ".gz", ".zip", ".py", ".log", ".ini"} | set(VOLUME_SUFFIXES)
_SKIP_NAMES = {"DICOMDIR", "LICENSE", "README"}


def looks_like_dicom(path: Path) -> bool:
    """True when ``path`` is a readable file with the DICOM preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def read_header(path: Path) -> pydicom.Dataset | None:
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


def scan_folder(folder: Path) -> tuple[dict[str, list[tuple[Path, pydicom.Dataset]]], list[tuple[Path, str]]]:
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
                ds = read_header(path)
            except Exception as error:  # pydicom raises many types on broken files
                if suffix in DICOM_SUFFIXES or suffix == "" or looks_like_dicom(path):
                    skipped.append((path, f"{type(error).__name__}: {error}".splitlines()[0]))
                continue
            if ds is None:
                if suffix not in _NOT_IMAGES and looks_like_dicom(path):
                    skipped.append((path, "DICOM file without image pixels"))
                continue
            series[header_text(ds, "SeriesInstanceUID") or "unknown"].append((path, ds))
    return series, skipped


def series_info(uid, items) -> SeriesInfo:
    ds = items[0][1]
    return SeriesInfo(uid=uid, description=header_text(ds, "SeriesDescription") or "",
                      modality=header_text(ds, "Modality"), slices=len(items),
                      kernel=header_text(ds, "ConvolutionKernel"), files=[p for p, _ in items])


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
