"""What an input path is: its image format by name (the suffix tables), the case id it gives, its SHA-256.

Every reader and command takes its suffix tables from here, so that "which files are CT" has
one answer: :data:`VOLUME_SUFFIXES` (3D volumes SimpleITK reads), :data:`DICOM_SUFFIXES`,
:data:`TIFF_SUFFIXES` and :data:`PLANE_SUFFIXES` (2D images read as one slice). Suffixes are
lower case and compared case-insensitively; ``.nii.gz`` counts as one suffix. DICOM files are
also recognised without a suffix, by their content (:func:`.dicom_folder.looks_like_dicom`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

#: 3D volume files read through SimpleITK, and the ``CTVolume.kind`` each gives.
VOLUME_KINDS = {".nrrd": "nrrd", ".nhdr": "nrrd", ".nii": "nifti", ".nii.gz": "nifti", ".mha": "mha", ".mhd": "mha"}
VOLUME_SUFFIXES = tuple(VOLUME_KINDS)
#: DICOM files named as such (files without a suffix are recognised by their preamble).
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: 2D TIFF images (HU as stored).
TIFF_SUFFIXES = (".tif", ".tiff")
#: 2D images ``read_ct`` takes as a one-slice volume.
PLANE_SUFFIXES = TIFF_SUFFIXES + (".png",)
#: Every suffix of a file ``read_ct`` reads.
IMAGE_SUFFIXES = VOLUME_SUFFIXES + DICOM_SUFFIXES + PLANE_SUFFIXES


def image_suffix(path) -> str:
    """The lower-case suffix of ``path`` (``.nii.gz`` as one suffix; ``""`` when none)."""
    path = Path(path)
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def without_suffix(name: str, suffixes=IMAGE_SUFFIXES) -> str:
    """``name`` without the first of ``suffixes`` it ends with (case-insensitive); unchanged when
    it ends with none of them or is nothing but the suffix."""
    for suffix in suffixes:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def case_id(path) -> str:
    """The case id of an input: a file's name without its image suffix, or a folder's name."""
    path = Path(path)
    return without_suffix(path.name) if path.is_file() else path.name


def relative_case_id(relative: Path, suffix: str = "") -> str:
    """A file-system-safe case id from a path relative to a cohort's root (never from patient
    tags): volume suffix dropped, ``/`` turned into ``__``, characters other than letters,
    digits, ``-``, ``_`` and ``.`` into ``_``; ``root`` for the root itself, never a hidden
    name; ``suffix`` appended (``-2`` ... to make ids unique)."""
    text = without_suffix(Path(relative).as_posix(), VOLUME_SUFFIXES)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in text.replace("/", "__"))
    if safe.strip(".") == "":
        safe = "root"  # ROOT itself: never "." (that would be the cases folder)
    elif safe.startswith("."):
        safe = "_" + safe[1:]  # never a hidden folder (temporary folders are hidden)
    return safe + suffix


def sha256(path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
