"""Write a phantom as ``docs/contracts.md`` describes: the CT, the label maps and ``truth.json``.

``OUT_DIR/ct/`` (DICOM series) or ``OUT_DIR/ct.nrrd`` / ``OUT_DIR/ct.nii.gz``;
``OUT_DIR/labels/{lungs,lobes,emphysema,airways,vessels}.nrrd`` (gzip NRRD on the CT grid);
``OUT_DIR/truth.json``; optionally a preview PNG. Everything is written into a temporary folder
beside ``OUT_DIR`` and renamed at the end, so a failure leaves nothing half-written.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_folder, refuse_existing

FORMATS = ("dicom", "nrrd", "nifti")


def save_label(array: np.ndarray, ct, path: Path) -> None:
    """Write a (z, y, x) label map (or float map) on the grid of ``ct`` as gzip-compressed NRRD.

    When ``ct`` was reoriented after reading (``ct.orientation``), the array is mapped back and
    written on the grid of the file the user gave, so outputs overlay the input in any viewer.
    """
    import SimpleITK as sitk

    geometry = ct.input_geometry_dict()
    array = np.ascontiguousarray(ct.on_input_grid(array))
    # a view of the array (no full-size copy) where SimpleITK offers it (2.1 and later)
    image = getattr(sitk, "GetImageViewFromArray", sitk.GetImageFromArray)(array)
    image.SetSpacing([float(s) for s in geometry["spacing"]])
    image.SetOrigin([float(o) for o in geometry["origin"]])
    image.SetDirection([float(d) for d in geometry["direction"]])
    sitk.WriteImage(image, str(path), useCompression=True)


def write_phantom(phantom, out_dir, fmt: str = "dicom", preview=None, overwrite: bool = False) -> Path:
    """Write ``phantom`` into ``out_dir`` (refused when it exists and is not empty, unless
    ``overwrite``). Returns the folder."""
    import SimpleITK as sitk

    from ..io.dicom_write import write_dicom_series
    from ..volume import OUTSIDE_FOV_HU

    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out_dir).resolve()
    refuse_existing(out, overwrite, allow_empty=True)
    with atomic_folder(out) as work:
        ct, truth = phantom.ct, dict(phantom.truth)
        if fmt == "dicom":
            acq = ct.acquisition
            paths = write_dicom_series(
                ct.hu, work / "ct", ct.spacing, ct.origin, ct.direction, kernel=acq["kernel"],
                kvp=acq["kvp"], exposure_mas=acq["exposure_mas"], ctdivol=acq["ctdivol"],
                series_description=f"EmphysemaXAI phantom seed {truth['params']['seed']}",
                seed=int(truth["params"]["seed"]), extra={"PixelPaddingValue": int(OUTSIDE_FOV_HU + 1024)})
            import pydicom

            truth["series_uid"] = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
        else:
            name = "ct.nrrd" if fmt == "nrrd" else "ct.nii.gz"
            sitk.WriteImage(ct.to_sitk(), str(work / name), useCompression=True)
        (work / "labels").mkdir()
        for label, array in phantom.labels.items():
            save_label(array, ct, work / "labels" / f"{label}.nrrd")
        (work / "truth.json").write_text(json.dumps(truth, indent=2))
        if preview:
            from .preview import save_preview

            save_preview(phantom, work / "preview.png")
    if preview:
        target = Path(preview)
        target = target if target.is_absolute() else Path.cwd() / target
        if target != out / "preview.png":
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(out / "preview.png"), target)
    return out
