"""Slice views of an MRML scene rendered to PNG headless, through Slicer's own slice logic.

The slice logic's layer blend (background CT with its window / level, foreground overlay through
its colour table and opacity) is plain VTK imaging, so it renders without OpenGL, inside Slicer
and on the slicer-core wheel alike. (3D views need an OpenGL context: EGL offscreen, next step.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import vtk
from vtk.util.numpy_support import vtk_to_numpy

#: layout name -> index axis the view cuts across in a (z, y, x) axial volume, and RAS axis
VIEWS = {"Red": (0, 2), "Green": (1, 1), "Yellow": (2, 0)}


def render_slice(app_logic, view: str, ras_offset: float, path=None, size: int = 512) -> np.ndarray:
    """Render slice view ``view`` (Red axial, Green coronal, Yellow sagittal) at ``ras_offset``
    mm; returns the (rows, columns, 4) uint8 RGBA image and writes it as PNG when ``path`` is given."""
    logic = app_logic.GetSliceLogicByLayoutName(view)
    node = logic.GetSliceNode()
    node.SetDimensions(size, size, 1)
    logic.FitSliceToAll()
    logic.SetSliceOffset(float(ras_offset))
    blend = logic.GetImageDataConnection()
    blend.GetProducer().Update()
    image = blend.GetProducer().GetOutputDataObject(blend.GetIndex())
    columns, rows, _ = image.GetDimensions()
    rgba = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1)[::-1]
    if path is not None:
        writer = vtk.vtkPNGWriter()
        writer.SetInputConnection(blend)
        writer.SetFileName(str(Path(path)))
        writer.Write()
    return rgba


def ras_offset(ct, zyx, view: str) -> float:
    """RAS coordinate along ``view``'s normal of the voxel centre ``zyx`` of a CTVolume."""
    lps = ct.index_to_lps(zyx)
    ras = np.array([-lps[0], -lps[1], lps[2]])
    return float(ras[VIEWS[view][1]])
