"""DICOM results in the scene: ``load_dicom_seg`` (a DICOM SEG as a segmentation node) and, for the
module's run, the DICOM source folder of a volume node (when the node still holds exactly the
files' CT) and keeping ``dicom/`` before the run's folder is removed.

MRML layer (``slicer``, ``vtk``; no Qt). 3D Slicer reads DICOM SEG through the QuantitativeReporting
extension (dcmqi), which neither the slicer-core wheel nor a plain Slicer has: :func:`load_dicom_seg`
reads the SEG with highdicom (:func:`~EmphysemaXAILib.io.dicom_seg_read.read_seg_segments`) onto
the grid of the CT volume node it references, one segment per SEG segment, with its label, colour
(RecommendedDisplayCIELabValue) and terminology (category, type, type modifier codes).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import slicer
import vtk

from ..io.dicom_seg_read import read_seg_segments
from .nodes import set_segment_mask

#: LPS = RAS with the first two axes negated.
_LPS = np.diag([-1.0, -1.0, 1.0])


def node_grid(volume_node) -> dict:
    """``shape`` (z, y, x), ``spacing``, ``origin`` (x, y, z mm, LPS) and ``direction`` (9 numbers,
    row-major, LPS) of a volume node's voxel grid (its own IJK-to-RAS; parent transforms aside)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    spacing = np.array(volume_node.GetSpacing(), float)
    direction = (_LPS @ m[:3, :3]) / spacing
    dims = volume_node.GetImageData().GetDimensions()
    return {"shape": (dims[2], dims[1], dims[0]), "spacing": tuple(spacing), "origin": tuple(_LPS @ m[:3, 3]),
            "direction": tuple(direction.ravel())}


def terminology(segment) -> str:
    """Slicer's serialized terminology entry of a read-back SEG segment (its codes as they are)."""
    modifier = segment.modifier or ("", "", "")
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        "DICOM SEG", *segment.category, *segment.type, *modifier, "", "", "", "", "", "", "")


def load_dicom_seg(path, scene, reference_volume_node, name: str | None = None):
    """A vtkMRMLSegmentationNode in ``scene`` with the segments of the DICOM SEG at ``path``, on the
    grid of ``reference_volume_node`` (the CT the SEG references; refused with one line when its
    frames do not lie on that grid) and under the CT's parent transform."""
    grid = node_grid(reference_volume_node)
    segments = read_seg_segments(path, grid["shape"], grid["spacing"], grid["origin"], grid["direction"])
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or Path(path).stem)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    segmentation = node.GetSegmentation()
    for segment in segments:
        segment_id = segmentation.AddEmptySegment(f"segment_{segment.number}", segment.label,
                                                  segment.color or (0.8, 0.8, 0.8))
        segmentation.GetSegment(segment_id).SetTerminology(terminology(segment))
        set_segment_mask(node, segment_id, segment.mask, reference_volume_node)
    node.SetAndObserveTransformNodeID(reference_volume_node.GetTransformNodeID())
    return node


def dicom_source_folder(volume_node, dicom_database, work: Path) -> Path | None:
    """``work/source/``: links (copies where links fail) to the DICOM files of a volume node the
    DICOM browser loaded (attribute ``DICOM.instanceUIDs``) whose voxels and geometry are still
    those of the files (:func:`matches_dicom_files`); None otherwise (the caller then exports the
    node's voxels, and DICOM results reference that derived copy).

    ``GetModifiedSinceRead()`` cannot tell: Slicer 5.10's DICOM scalar volume reader leaves the
    node without a storage node, so it is always True and every run from the DICOM browser used
    to reference an anonymous derived CT (issue 26)."""
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids or dicom_database is None:
        return None
    paths = [dicom_database.fileForInstance(uid) for uid in uids]
    if not all(path and os.path.isfile(path) for path in paths):
        return None
    folder = work / "source"
    folder.mkdir()
    for index, path in enumerate(paths):
        target = folder / f"{index:05d}.dcm"
        try:
            os.symlink(path, target)
        except OSError:  # Windows without the privilege to link
            shutil.copyfile(path, target)
    if not matches_dicom_files(volume_node, folder):
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return folder


def matches_dicom_files(volume_node, folder: Path, tolerance_mm: float = 0.01) -> bool:
    """True when the volume node holds exactly the CT the DICOM files in ``folder`` give: the same
    grid (shape, spacing and origin within ``tolerance_mm``, directions within 1e-4) and the same
    HU in every voxel, both compared on the canonical axial grid (:func:`~..io.orientation.canonical`,
    so the slice order the reader chose does not matter). An edited node (a painted voxel, a
    resampled or cropped volume, a hardened transform) is not the files any more."""
    from ..errors import InputError
    from ..io.orientation import canonical
    from ..io.read import read_ct
    from .volumes import ct_from_volume_node

    try:
        files = read_ct(folder, irregular="refuse")
    except InputError:        # gaps or tilt: Slicer regularises those differently; not "the files"
        return False
    node = canonical(ct_from_volume_node(volume_node))
    if files.shape != node.shape:
        return False
    if (not np.allclose(files.spacing, node.spacing, atol=tolerance_mm)
            or not np.allclose(files.origin, node.origin, atol=tolerance_mm)
            or not np.allclose(files.direction, node.direction, atol=1e-4)):
        return False
    return bool(np.array_equal(np.asarray(files.hu, np.float32), np.asarray(node.hu, np.float32)))


def keep_dicom_results(run, dicom_import=None, keep_dir=None) -> dict | None:
    """Save the run's ``out/dicom`` before its folder is removed: ``dicom_import(folder)`` (the
    module passes Slicer's ``DICOMUtils.importDicom(folder, slicer.dicomDatabase, copyFiles=True)``:
    the files are copied into the DICOM database) when given and it succeeds; else the folder is
    copied to ``keep_dir`` (default: ``<temp>/EmphysemaXAI-DICOM``) under the run's name.
    Returns ``{"imported": bool, "folder": kept copy or None}``, or None when none was written."""
    folder = run.out_dir / "dicom"
    if not run.dicom or not folder.is_dir():
        return None
    if dicom_import is not None and dicom_import(str(folder)):
        return {"imported": True, "folder": None}
    import tempfile

    target = Path(keep_dir or Path(tempfile.gettempdir()) / "EmphysemaXAI-DICOM") / run.work_dir.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, target, dirs_exist_ok=True)
    return {"imported": False, "folder": str(target)}
