"""Slice and 3D views of an MRML scene rendered to PNG headless, by Slicer's own logic.

Slice views: the slice logic's layer blend (background CT with its window / level, foreground
overlay through its colour table and opacity) is plain VTK imaging: no OpenGL needed.
3D view: Slicer's 3D displayable managers (segmentation surfaces, volume rendering, models)
drawn into an offscreen render window; with no display, VTK uses EGL (Mesa llvmpipe here), which
``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`` selects before the first window is made.
"""
from __future__ import annotations

import os
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


#: Largest voxel count along any axis of a volume the 3D view renders: bigger volumes are
#: rendered from a strided copy (a 500-pixel view shows no more detail, and volume rendering on a
#: software OpenGL (llvmpipe) costs seconds per 100 M voxels and a full-size texture in memory).
RENDER_MAX_VOXELS_PER_AXIS = 256


def render_stride(shape, max_per_axis: int = RENDER_MAX_VOXELS_PER_AXIS) -> int:
    """The one stride along every axis that brings ``shape``'s largest axis to ``max_per_axis``
    voxels or fewer (1: no coarsening)."""
    return max(1, -(-max(shape) // max_per_axis))


def coarsen_volume_renderings(scene, max_per_axis: int = RENDER_MAX_VOXELS_PER_AXIS) -> list:
    """Replace, in place, the voxels of every volume that a visible volume rendering shows by a
    strided copy (every ``render_stride``-th voxel along each axis, spacing multiplied by it:
    the same extent and position in RAS, nearest-neighbour, so label values stay labels).
    For rendering a scene that has been saved already (the nodes' full data are gone); returns
    the nodes changed."""
    import slicer.util

    changed = []
    for display in scene.GetNodesByClass("vtkMRMLVolumeRenderingDisplayNode"):
        node = display.GetVolumeNode()
        if not display.GetVisibility() or node is None or node.GetImageData() is None or node in changed:
            continue
        array = slicer.util.arrayFromVolume(node)
        stride = render_stride(array.shape, max_per_axis)
        if stride == 1:
            continue
        coarse = np.ascontiguousarray(array[::stride, ::stride, ::stride])
        spacing = [s * stride for s in node.GetSpacing()]
        node.SetAndObserveImageData(vtk.vtkImageData())  # never written into: its voxels may be lent
        slicer.util.updateVolumeFromArray(node, coarse)
        node.SetSpacing(*spacing)  # voxel (0, 0, 0) keeps its centre: origin unchanged
        changed.append(node)
    return changed


def use_cpu_ray_casting(scene) -> list:
    """Show every visible GPU volume rendering of ``scene`` through a CPU ray-cast display node
    instead (same volume property and ROI; the GPU node hidden): with no GPU, OpenGL ray casting
    runs in software (llvmpipe) and is several times slower than VTK's multi-threaded CPU ray
    caster with its empty-space skipping. For rendering a scene that has been saved already;
    returns the CPU display nodes added."""
    added = []
    for display in list(scene.GetNodesByClass("vtkMRMLGPURayCastVolumeRenderingDisplayNode")):
        node = display.GetVolumeNode()
        if not display.GetVisibility() or node is None:
            continue
        cpu = scene.AddNewNodeByClass("vtkMRMLCPURayCastVolumeRenderingDisplayNode")
        cpu.SetAndObserveVolumePropertyNodeID(display.GetVolumePropertyNodeID())
        if display.GetROINodeID():
            cpu.SetAndObserveROINodeID(display.GetROINodeID())
        cpu.SetCroppingEnabled(display.GetCroppingEnabled())
        node.AddAndObserveDisplayNodeID(cpu.GetID())
        display.SetVisibility(False)
        cpu.SetVisibility(True)
        added.append(cpu)
    return added


THREE_D_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager3D", "vtkMRMLVolumeRenderingDisplayableManager",
                    "vtkMRMLModelDisplayableManager")


def render_3d(scene, app_logic, path=None, size: int = 500, elevation: float = -70.0) -> np.ndarray:
    """Render the first 3D view (anterior view, lungs upright) offscreen; returns RGB uint8
    (rows, columns, 3) and writes a PNG when ``path`` is given."""
    import slicer

    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    view = scene.GetFirstNodeByClass("vtkMRMLViewNode")
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(size, size)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.08, 0.08, 0.12)
    window.AddRenderer(renderer)
    interactor = vtk.vtkRenderWindowInteractor()  # displayable managers expect one (never started)
    interactor.SetRenderWindow(window)
    factory = slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(app_logic)
    for manager in THREE_D_MANAGERS:
        if not factory.IsDisplayableManagerRegistered(manager):
            factory.RegisterDisplayableManager(manager)
    group = factory.InstantiateDisplayableManagers(renderer)
    group.SetMRMLDisplayableNode(view)
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    camera.Elevation(elevation)
    camera.OrthogonalizeViewUp()
    camera.Zoom(1.3)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.ShouldRerenderOff()  # rendered just above: render once (volume rendering on llvmpipe is slow)
    grab.Update()
    image = grab.GetOutput()
    columns, rows, _ = image.GetDimensions()
    rgb = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1)[::-1, :, :3].copy()
    if path is not None:
        writer = vtk.vtkPNGWriter()
        writer.SetInputConnection(grab.GetOutputPort())
        writer.SetFileName(str(Path(path)))
        writer.Write()
    group.SetMRMLDisplayableNode(None)
    window.Finalize()
    return rgb
