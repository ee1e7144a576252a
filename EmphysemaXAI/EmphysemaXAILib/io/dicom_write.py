"""Write a HU volume as a DICOM CT series (CT Image Storage, one file per slice) with pydicom.

Used for synthetic data (the sample case, phantoms, tests, benchmarks): no real-person data is
ever written; patient name and ID are fixed synthetic values.
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
                       seed: int = 0, positions=None, file_names=None, extra=None) -> list:
    """Write ``hu`` (z, y, x) as one DICOM file per slice into ``out_dir``.

    Args:
        hu: HU values; rounded to integers and stored with RescaleIntercept -1024, slope 1.
        spacing, origin, direction: ITK geometry (x, y, z mm, LPS; direction row-major).
        positions: optional (z, 3) LPS ImagePositionPatient per slice, overriding the regular
            grid (tests use it for gaps, jitter and gantry tilt).
        file_names: optional file name per slice (default ``slice_0000.dcm`` ...).
        extra: optional dict of DICOM keyword -> value set on every slice.
        seed: makes the generated UIDs reproducible.

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
    study_uid = generate_uid(entropy_srcs=[prefix, "study"])
    series_uid = generate_uid(entropy_srcs=[prefix, "series", series_description])
    frame_uid = generate_uid(entropy_srcs=[prefix, "frame"])
    today = datetime.date(2026, 1, 1).strftime("%Y%m%d")
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
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Manufacturer = "EmphysemaXAI synthetic"
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19500101"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyTime = ds.SeriesTime = "120000"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.ConvolutionKernel = kernel
        ds.KVP = f"{kvp:g}"
        ds.Exposure = f"{exposure_mas:g}"
        if ctdivol is not None:
            ds.CTDIvol = ctdivol
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
