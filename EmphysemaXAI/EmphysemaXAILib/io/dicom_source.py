"""The CT images DICOM results refer to: the source slices, or a derived CT series written for them.

DICOM SEG frames and SR references must point at CT images whose slices are exactly the grid the
masks lie on. The masks are written on the *input grid* (the grid of the file the user gave, as
every NRRD output is, :meth:`~EmphysemaXAILib.volume.CTVolume.on_input_grid`). So:

- a DICOM input whose input grid is exactly its source slices (every file of the series kept,
  slices uniformly spaced, no gantry-tilt correction or resampling along z, each file's
  ImagePositionPatient / ImageOrientationPatient / Rows / Columns on the grid, checked here
  file by file) is referenced as it is: :func:`matching_source_headers` returns its headers;
- anything else (NRRD / NIfTI / MHA, a volume in memory, a DICOM series that was resampled,
  tilt-corrected or had slices skipped) gets a **derived CT series** written from the analysed HU
  on the input grid (:func:`write_derived_ct`: ImageType DERIVED \\ SECONDARY \\ AXIAL). For a
  DICOM input it keeps the source's StudyInstanceUID and FrameOfReferenceUID (same patient
  coordinates), so a PACS files it with the source study.

Identity (:func:`identity_attributes`): by default every object we write carries the Type 2
patient attributes (PatientName, PatientID, PatientBirthDate, PatientSex) and the study's
AccessionNumber, ReferringPhysicianName and StudyID *empty*; StudyInstanceUID, StudyDate and
StudyTime are kept (the study is how a viewer groups the objects; the date is in summary.json
already). With ``keep_identity`` those attributes are copied from the source's first slice.
The source headers handed to highdicom are *reference copies* (:func:`reference_header`): a
whitelist of geometry / UID attributes plus the identity just described, so nothing else of the
source (addresses, other IDs, private tags) can reach an output. Input files are only read.

UIDs are deterministic (:func:`result_uid`): pydicom ``generate_uid(entropy_srcs=...)`` over the
source's SeriesInstanceUID (or a digest of the HU voxels and geometry for non-DICOM input), the
object's role and a digest of the analysis results, so re-running the same analysis gives the
same UIDs, and a different result never reuses them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

#: Patient and study attributes that identify a person or an order: empty unless keep_identity.
IDENTITY_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                     "AccessionNumber", "ReferringPhysicianName", "StudyID")
#: Attributes of a source slice the derived objects need (geometry, UIDs, pixel description).
REFERENCE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                      "FrameOfReferenceUID", "Modality", "StudyDate", "StudyTime", "SeriesNumber",
                      "InstanceNumber", "Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
                      "ImageOrientationPatient", "SliceThickness", "SamplesPerPixel",
                      "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
                      "PixelRepresentation", "PositionReferenceIndicator")
#: Position tolerance (mm) between a source slice and the input grid's slice.
POSITION_TOLERANCE_MM = 0.01
DERIVED_CT_DIR = "ct"


def identity_attributes(source: Dataset | None, keep_identity: bool) -> dict:
    """Keyword -> value of :data:`IDENTITY_KEYWORDS` for every derived object of a case: the
    source's values with ``keep_identity`` (missing ones empty), else all empty strings."""
    out = dict.fromkeys(IDENTITY_KEYWORDS, "")
    if keep_identity and source is not None:
        for keyword in IDENTITY_KEYWORDS:
            value = source.get(keyword)
            out[keyword] = "" if value is None else str(value)
    return out


def reference_header(ds: Dataset, identity: dict) -> Dataset:
    """A copy of a source slice's header holding only :data:`REFERENCE_KEYWORDS` and the given
    identity attributes (what highdicom copies into SEG / SR); the source stays untouched."""
    out = Dataset()
    for keyword in REFERENCE_KEYWORDS:
        if keyword in ds:
            out[keyword] = ds[keyword]
    for keyword, value in identity.items():
        setattr(out, keyword, value)
    out.StudyDate = ds.get("StudyDate", "")
    out.StudyTime = ds.get("StudyTime", "")
    return out


def matching_source_headers(ct) -> list[Dataset] | None:
    """The source slices' headers (stop before pixels) in input-grid slice order when they are
    exactly the input grid (see the module docstring), else None. ``ct``: the analysed
    :class:`~EmphysemaXAILib.volume.CTVolume` (``kind == "dicom"`` with its ``series`` list)."""
    if ct.kind != "dicom" or ct.geometry.get("method") not in ("uniform", "single_slice"):
        return None
    uid = (ct.acquisition or {}).get("series_uid")
    info = next((s for s in ct.series if s.uid == uid), None)
    grid = ct.input_geometry_dict()
    shape = grid["shape"]
    if info is None or len(info.files) != shape[0]:
        return None
    headers = [pydicom.dcmread(str(p), stop_before_pixels=True) for p in info.files]
    direction = np.asarray(grid["direction"], float).reshape(3, 3)
    spacing, origin = np.asarray(grid["spacing"], float), np.asarray(grid["origin"], float)
    try:
        headers.sort(key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], direction[:, 2])))
        for k, ds in enumerate(headers):
            expected = origin + direction[:, 2] * spacing[2] * k
            orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
            rows, columns = int(ds.Rows), int(ds.Columns)
            if ((rows, columns) != (shape[1], shape[2])
                    or np.abs(np.array([float(v) for v in ds.ImagePositionPatient]) - expected).max()
                    > POSITION_TOLERANCE_MM
                    or np.abs(orientation - np.concatenate([direction[:, 0], direction[:, 1]])).max() > 1e-4
                    or "FrameOfReferenceUID" not in ds or ds.SeriesInstanceUID != uid):
                return None
    except (AttributeError, ValueError, TypeError):  # a slice without geometry: not referenced as is
        return None
    return headers


def first_source_header(ct) -> Dataset | None:
    """The header (stop before pixels) of the first file of the analysed DICOM series, for its
    patient, study and frame of reference; None for other inputs."""
    if ct.kind != "dicom":
        return None
    uid = (ct.acquisition or {}).get("series_uid")
    info = next((s for s in ct.series if s.uid == uid), None)
    if info is None or not info.files:
        return None
    return pydicom.dcmread(str(info.files[0]), stop_before_pixels=True)


def content_digest(*parts) -> str:
    """SHA-256 (hex) of arrays (their bytes, dtype and shape) and texts, for UID entropy."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(str(part).encode())
    return digest.hexdigest()


def result_uid(source_key: str, role: str, results_digest: str) -> str:
    """A UID that depends only on the source (its series UID or HU digest), the object's role
    ("seg", "sr", "ct-series" ...) and the analysis results' digest."""
    return generate_uid(entropy_srcs=[source_key, role, results_digest])


def write_derived_ct(ct, folder, *, source: Dataset | None, identity: dict, source_key: str,
                     results_digest: str) -> list[Dataset]:
    """Write the analysed HU on the input grid as a derived CT series into ``folder`` and return
    the written headers (slice order). ``source``: a source slice (DICOM input) whose study and
    frame of reference the series joins; None for other inputs (new deterministic UIDs)."""
    from .dicom_write import write_dicom_series

    volume = ct.as_input()
    facts = ct.acquisition or {}
    study_uid = source.StudyInstanceUID if source is not None else result_uid(source_key, "study", "")
    frame_uid = (source.FrameOfReferenceUID if source is not None and "FrameOfReferenceUID" in source
                 else result_uid(source_key, "frame-of-reference", ""))
    study_date = str(source.get("StudyDate", "") or "") if source is not None else ""
    extra = {"Manufacturer": "EmphysemaXAI", "KVP": f"{facts['kvp']:g}" if facts.get("kvp") else ""}
    if source is not None:
        extra["StudyTime"] = str(source.get("StudyTime", "") or "")
    if not facts.get("exposure_mas"):
        extra["Exposure"] = None
    paths = write_dicom_series(
        volume.hu, Path(folder), spacing=volume.spacing, origin=volume.origin, direction=volume.direction,
        kernel=str(facts.get("kernel") or ""), kvp=float(facts.get("kvp") or 0), ctdivol=facts.get("ctdivol"),
        exposure_mas=float(facts.get("exposure_mas") or 0),
        slice_thickness_mm=facts.get("slice_thickness_mm"), series_description="EmphysemaXAI analysed CT (derived)",
        patient_name=identity["PatientName"], patient_id=identity["PatientID"],
        patient_birth_date=identity["PatientBirthDate"], patient_sex=identity["PatientSex"],
        study_id=identity["StudyID"], accession_number=identity["AccessionNumber"],
        referring_physician=identity["ReferringPhysicianName"], study_uid=study_uid,
        series_uid=result_uid(source_key, "ct-series", results_digest), frame_of_reference_uid=frame_uid,
        image_type=("DERIVED", "SECONDARY", "AXIAL"), series_number=900, content_date=study_date or None,
        derivation_description="HU volume EmphysemaXAI analysed, on the grid of its input "
                               f"({ct.kind}; {ct.geometry.get('method', 'as read')})",
        extra=extra)
    return [pydicom.dcmread(str(p), stop_before_pixels=True) for p in paths]
