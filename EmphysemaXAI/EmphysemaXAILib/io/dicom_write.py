"""Write a HU volume as a DICOM CT series (CT Image Storage, one file per slice) with pydicom.

Used for synthetic data (the sample case, phantoms, tests, benchmarks), where patient name and ID
are fixed synthetic values, and for the derived CT series that DICOM results reference when the
input was not DICOM (the caller then gives the patient and study attributes and UIDs).

Every file passes ``dciodvfy`` (dicom3tools) without errors: the Type 2 attributes of the
Patient, General Study, General Series, Frame of Reference and CT Image modules are present
(empty when unknown, as the standard allows), and CTDIvol comes with its phantom type.
"""
from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from .pydicom_compat import save_dicom

#: Stored value = HU - RESCALE_INTERCEPT (signed 16-bit), as most scanners store CT.
RESCALE_INTERCEPT = -1024


def write_dicom_series(hu: np.ndarray, out_dir, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                       direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), *, kernel: str = "STANDARD",
                       kvp: float = 120.0, exposure_mas: float = 100.0, ctdivol: float | None = 8.0,
                       slice_thickness_mm: float | None = None, modality: str = "CT",
                       series_description: str = "EmphysemaXAI synthetic CT",
                       patient_name: str = "SYNTHETIC^PHANTOM", patient_id: str = "SYNTH0001",
                       seed: int = 0, positions=None, file_names=None, extra=None,
                       study_uid: str | None = None, series_uid: str | None = None,
                       frame_of_reference_uid: str | None = None, image_type=None,
                       derivation_description: str | None = None, patient_sex: str = "",
                       patient_birth_date: str = "19500101", study_id: str = "", accession_number: str = "",
                       referring_physician: str = "", series_number: int = 1,
                       content_date: str | None = None) -> list:
    """Write ``hu`` (z, y, x) as one DICOM file per slice into ``out_dir``.

    Args:
        hu: HU values; rounded to integers and stored with RescaleIntercept -1024, slope 1.
        spacing, origin, direction: ITK geometry (x, y, z mm, LPS; direction row-major).
        positions: optional (z, 3) LPS ImagePositionPatient per slice, overriding the regular
            grid (tests use it for gaps, jitter and gantry tilt).
        file_names: optional file name per slice (default ``slice_0000.dcm`` ...).
        extra: optional dict of DICOM keyword -> value set on every slice.
        seed: makes the generated UIDs reproducible.
        study_uid, series_uid, frame_of_reference_uid: given UIDs (default: generated from ``seed``).
        image_type: ImageType values (default ORIGINAL \\ PRIMARY \\ AXIAL; a derived series
            passes DERIVED \\ SECONDARY \\ AXIAL, with ``derivation_description``).
        patient_sex, patient_birth_date, study_id, accession_number, referring_physician: the Type 2
            attributes of the Patient and General Study modules ("" writes them empty).
        content_date: StudyDate / SeriesDate / ContentDate (YYYYMMDD; default a fixed synthetic date).

    Returns:
        The list of written paths, in slice order.
    """
    hu = np.asarray(hu)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    D = np.asarray(direction, float).reshape(3, 3)
    spacing = np.asarray(spacing, float)
    origin = np.asarray(origin, float)
    if positions is None:
        positions = [origin + D[:, 2] * spacing[2] * k for k in range(hu.shape[0])]
    prefix = f"1.2.826.0.1.3680043.8.498.{seed % 10**6}."
    study_uid = study_uid or generate_uid(entropy_srcs=[prefix, "study"])
    series_uid = series_uid or generate_uid(entropy_srcs=[prefix, "series", series_description])
    frame_uid = frame_of_reference_uid or generate_uid(entropy_srcs=[prefix, "frame"])
    today = content_date or datetime.date(2026, 1, 1).strftime("%Y%m%d")
    stored = np.clip(np.rint(hu.astype(np.float64)) - RESCALE_INTERCEPT, -32768, 32767).astype(np.int16)
    paths = []
    for k in range(hu.shape[0]):
        sop_uid = generate_uid(entropy_srcs=[prefix, series_uid, str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        name = file_names[k] if file_names else f"slice_{k:04d}.dcm"
        ds = FileDataset(str(out_dir / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        ds.ImageType = list(image_type or ("ORIGINAL", "PRIMARY", "AXIAL"))
        if derivation_description:
            ds.DerivationDescription = derivation_description
        ds.Manufacturer = "EmphysemaXAI synthetic"
        ds.SeriesDescription = series_description
        # Patient (Type 2: present, empty when unknown)
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = patient_birth_date
        ds.PatientSex = patient_sex
        # General Study
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.ReferringPhysicianName = referring_physician
        ds.StudyID = study_id
        ds.AccessionNumber = accession_number
        # General Series: Laterality (2C) is for paired body parts and stays absent for the
        # chest; PatientPosition is required for CT: head first supine, the usual chest CT position
        ds.SeriesNumber = series_number
        ds.PatientPosition = "HFS"
        ds.BodyPartExamined = "CHEST"
        # Frame of Reference: no external landmark is known
        ds.PositionReferenceIndicator = ""
        # CT Image
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.ConvolutionKernel = kernel
        ds.KVP = f"{kvp:g}"
        ds.Exposure = f"{exposure_mas:g}"
        if ctdivol is not None:
            ds.CTDIvol = ctdivol
            ds.CTDIPhantomTypeCodeSequence = [_ctdi_phantom()]
        ds.SliceThickness = f"{slice_thickness_mm or spacing[2]:.4g}"
        ds.ImagePositionPatient = [f"{v:.6g}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in np.concatenate([D[:, 0], D[:, 1]])]
        ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[0]:.6g}"]
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = str(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        ds.PixelData = stored[k].tobytes()
        save_dicom(ds, out_dir / name)  # explicit VR little endian, file meta, preamble
        paths.append(out_dir / name)
    return paths


def _ctdi_phantom():
    """CTDIPhantomTypeCodeSequence item: the 32 cm body phantom (DCM 113691, "IEC Body Dosimetry
    Phantom"), the phantom chest CT's CTDIvol is stated for."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator = "113691", "DCM"
    item.CodeMeaning = "IEC Body Dosimetry Phantom"
    return item
