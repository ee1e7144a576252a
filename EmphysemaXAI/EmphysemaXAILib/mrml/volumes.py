"""Volume node <-> :class:`~EmphysemaXAILib.volume.CTVolume`, the one LPS <-> RAS conversion.

CT geometry in the core is ITK's (LPS); MRML works in RAS. RAS = F @ LPS with
F = diag(-1, -1, 1), applied to the origin and to the direction columns. The voxel array keeps
its (z, y, x) order (``slicer.util.arrayFromVolume`` order), so no voxel is moved.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import slicer.util
import vtk

from ..volume import CTVolume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def ras_geometry(ct: CTVolume) -> tuple[np.ndarray, np.ndarray]:
    """(origin_ras (3,), directions_ras 3 x 3 with the index axes as columns) of a CT volume."""
    return LPS_TO_RAS @ np.asarray(ct.origin, float), LPS_TO_RAS @ ct.direction_matrix


def volume_node_from_ct(scene, ct: CTVolume, name: str = "CT", node=None) -> slicer.vtkMRMLScalarVolumeNode:
    """Put a CT volume into a (new or given) ``vtkMRMLScalarVolumeNode`` of ``scene``.

    The node gets the voxel array (copied, same dtype; lent inside :func:`shared_voxels`), spacing
    (x, y, z) mm, and the RAS origin and directions derived from the LPS geometry. Returns the node.
    """
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    origin, directions = ras_geometry(ct)
    node.SetSpacing(*[float(s) for s in ct.spacing])
    node.SetOrigin(*[float(v) for v in origin])
    matrix = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(directions[r, c]))
    node.SetIJKToRASDirectionMatrix(matrix)
    set_voxels(node, ct.hu)
    return node


#: Arrays lent to volume nodes inside :func:`shared_voxels` (None: outside, voxels are copied).
_LENT: list | None = None


@contextmanager
def shared_voxels():
    """Inside this block :func:`set_voxels` lends the arrays to the volume nodes instead of
    copying them (a 512 x 512 x 400 case's CT, overlays and attribution maps: about 800 MB).
    For a scene that is saved and dropped inside the block (the file export): the arrays are
    kept alive until the block ends, and must not be changed meanwhile; nodes that outlive the
    block must not be made in it."""
    global _LENT
    outer, _LENT = _LENT, []
    try:
        yield
    finally:
        _LENT = outer


def set_voxels(node, array: np.ndarray) -> None:
    """Put a (z, y, x) array into a volume node: ``slicer.util.updateVolumeFromArray`` (a copy),
    or inside :func:`shared_voxels` a new image on the array's own memory (no copy)."""
    if _LENT is None or array.ndim != 3:
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
        return
    from vtk.util import numpy_support

    array = np.ascontiguousarray(array)
    image = vtk.vtkImageData()  # never the node's old image: vtk may reuse (write into) its scalars
    image.SetDimensions(*array.shape[::-1])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.reshape(-1), deep=False))
    _LENT.append(array)
    node.SetAndObserveImageData(image)
    node.StorableModified()
    node.InvokeEvent(slicer.vtkMRMLVolumeNode.ImageDataModifiedEvent, node)


def ct_from_volume_node(node) -> CTVolume:
    """A :class:`CTVolume` (LPS geometry, HU array copied) from a scalar volume node."""
    if node is None or node.GetImageData() is None:
        raise ValueError("the volume node has no image data: load or select a CT volume")
    array = np.array(slicer.util.arrayFromVolume(node))
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(matrix)
    directions = np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])
    origin = LPS_TO_RAS @ np.array(node.GetOrigin())
    direction = LPS_TO_RAS @ directions
    if array.dtype != np.int16 and not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.int16) if array.min() >= -32768 and array.max() <= 32767 else array.astype(np.float32)
    return CTVolume(hu=array, spacing=tuple(float(s) for s in node.GetSpacing()),
                    origin=tuple(float(v) for v in origin),
                    direction=tuple(float(v) for v in direction.ravel()), kind="mrml",
                    modality=None, geometry={"method": "volume_node"})
