"""Core results -> MRML nodes and back: lung segmentation, tables, LAA overlay, pattern label map,
volume rendering.

Runs on a real MRML scene (the Slicer application's or :func:`~.app.bootstrap`'s). Geometry: the
label maps are (z, y, x) on the CT grid, so they share the CT volume node's IJK-to-RAS.
"""
from __future__ import annotations

import numpy as np
import slicer
import slicer.util
import vtk

from ..analysis.patterns import PATTERN_COLORS
from .volumes import set_voxels

#: Segment name -> (label value, SNOMED CT code and meaning of the side, colour).
LUNG_SEGMENTS = {"Right lung": (1, "24028007", "Right", (0.50, 0.68, 0.95)),
                 "Left lung": (2, "7771000", "Left", (0.95, 0.70, 0.40))}
#: The airways segment (trachea, main and lobar bronchi kept out of the lungs): label value,
#: SNOMED CT type code and meaning, colour.
AIRWAY_SEGMENT = ("Airways", 3, "89187006", "Airway structure", (0.56, 0.93, 0.56))
#: LAA map colour table: value, name, RGBA (0 transparent).
#: One teal-to-cyan scale, brighter for bigger clusters (the report's too): the pattern map's
#: yellow / orange / red / blue / purple keep their meanings.
LAA_COLORS = ((0, "none", (0.0, 0.0, 0.0, 0.0)), (1, "LAA cluster < 5 mm", (0.0, 0.525, 0.561, 1.0)),
              (2, "LAA cluster 5-10 mm", (0.0, 0.761, 0.78, 1.0)),
              (3, "LAA cluster 10-20 mm", (0.361, 0.949, 0.933, 1.0)),
              (4, "LAA cluster >= 20 mm", (0.69, 1.0, 0.957, 1.0)))
#: 3D opacity of each LAA cluster size: small clusters (mostly the scanner's noise and normal
#: alveolar air on a thin or noisy scan) nearly clear, bullae opaque; at one opacity for all
#: (0.6) a real 5 mm-slice scan rendered as a solid cyan block
LAA_OPACITY_3D = {1: 0.03, 2: 0.2, 3: 0.45, 4: 0.7}


def lung_terminology(code: str, meaning: str, type_code: str = "39607008", type_meaning: str = "Lung") -> str:
    """Slicer's serialized terminology entry (SNOMED CT anatomical structure: ``type`` + laterality
    ``code``; no laterality when ``code`` is empty)."""
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        "Segmentation category and type - 3D Slicer General Anatomy list",
        "123037004", "SCT", "Anatomical Structure", type_code, "SCT", type_meaning,
        code, "SCT" if code else "", meaning, "Anatomic codes - DICOM master list", "", "", "", "", "", "")


def lung_segmentation_node(scene, ct_node, labels: np.ndarray, name: str = "Lungs",
                           airways=None, node=None) -> slicer.vtkMRMLSegmentationNode:
    """A segmentation node with "Right lung" / "Left lung" (terminology, colours, closed surface),
    and an "Airways" segment when ``airways`` (bool (z, y, x) on the CT node's grid) holds any.
    ``node``: an existing segmentation node to fill instead (its segments are replaced). The
    labels are imported in the CT's voxel space: the node is taken out of any parent transform
    meanwhile (the caller places the results under the CT's transform)."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
    else:
        node.SetAndObserveTransformNodeID(None)
        node.GetSegmentation().RemoveAllSegments()
    node.SetReferenceImageGeometryParameterFromVolumeNode(ct_node)
    segmentation = node.GetSegmentation()
    entries = [(segment_name, value, lung_terminology(code, meaning), color, None)
               for segment_name, (value, code, meaning, color) in LUNG_SEGMENTS.items()]
    if airways is not None and airways.any():
        segment_name, value, code, meaning, color = AIRWAY_SEGMENT
        entries.append((segment_name, value, lung_terminology("", "", code, meaning), color, airways))
    for segment_name, value, terminology, color, mask in entries:
        segment_id = segmentation.AddEmptySegment(segment_name.replace(" ", "_"), segment_name, color)
        segment = segmentation.GetSegment(segment_id)
        segment.SetTerminology(terminology)
        segment.SetLabelValue(value)
        mask = labels == value if mask is None else np.asarray(mask, bool)  # one full-size mask at a time
        set_segment_mask(node, segment_id, mask, ct_node)
        del mask
    set_fast_surfaces(segmentation)
    node.CreateClosedSurfaceRepresentation()
    return node


def remove_node(node) -> None:
    """Remove ``node`` from its scene with its display and storage nodes (``RemoveNode`` alone
    leaves them behind)."""
    scene = node.GetScene()
    if scene is None:
        return
    owned = []
    for getter in ("GetNumberOfDisplayNodes", "GetNumberOfStorageNodes"):
        if hasattr(node, getter):
            nth = getattr(node, getter.replace("GetNumberOf", "GetNth")[:-1])
            owned += [nth(i) for i in range(getattr(node, getter)())]
    for child in owned:
        if child is not None and child.GetScene() is scene:
            scene.RemoveNode(child)
    scene.RemoveNode(node)


def set_segment_mask(segmentation_node, segment_id: str, mask: np.ndarray, ct_node) -> None:
    """Set a segment's binary labelmap from a bool (z, y, x) mask on ``ct_node``'s grid, as
    ``slicer.util.updateSegmentBinaryLabelmapFromArray`` does but without its temporary label
    volume node and copies: the mask's memory is handed to the segmentation logic as it is."""
    from vtk.util import numpy_support

    flat = np.ascontiguousarray(mask, dtype=bool).view(np.uint8).ravel()
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*mask.shape[::-1])
    scalars = numpy_support.numpy_to_vtk(flat, deep=False, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    matrix = vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, logic.MODE_REPLACE,
                                            image.GetExtent()):
        raise RuntimeError(f"could not set the labelmap of segment {segment_id}")


#: Closed-surface conversion: SurfaceNets with its own smoothing (Slicer >= 5.6; older versions
#: ignore the parameters and use flying edges): the same smooth lungs in about a third of the
#: time of flying edges + windowed-sinc smoothing on a 512 x 512 x 400 mask.
FAST_SURFACE_PARAMETERS = {"Conversion method": "1", "SurfaceNets smoothing": "1"}


def set_fast_surfaces(segmentation) -> None:
    """Make ``segmentation`` (a vtkSegmentation) build its closed surfaces with
    :data:`FAST_SURFACE_PARAMETERS` (stored with it, so Slicer rebuilds them the same way)."""
    for name, value in FAST_SURFACE_PARAMETERS.items():
        segmentation.SetConversionParameter(name, value)


def labels_from_segmentation_node(segmentation_node, ct_node) -> np.ndarray:
    """(z, y, x) uint8 lung labels on the CT grid from a (possibly user-edited) segmentation:
    segments named "Right lung" / "Left lung" give 1 / 2."""
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__export__")
    try:
        out = np.zeros(slicer.util.arrayFromVolume(ct_node).shape, np.uint8)
        segmentation = segmentation_node.GetSegmentation()
        for segment_name, (value, *_rest) in LUNG_SEGMENTS.items():
            segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
            if not segment_id:
                raise ValueError(f"the segmentation has no segment named {segment_name!r}")
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap, ct_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
            out[slicer.util.arrayFromVolume(labelmap) > 0] = value
        return out
    finally:
        display = labelmap.GetDisplayNode()
        if (display is not None and display.GetColorNode() is not None
                and display.GetColorNode().GetName() != "GenericColors"):
            scene.RemoveNode(display.GetColorNode())
        remove_node(labelmap)


def table_node(scene, name: str, rows: list, units: dict | None = None,
               descriptions: dict | None = None, node=None) -> slicer.vtkMRMLTableNode:
    """A table node from a list of dicts (numbers as double columns, others as strings), with
    units and descriptions as column properties. ``node``: an existing table node to refill."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    else:
        node.RemoveAllColumns()
    table = node.GetTable()
    columns = list(rows[0]) if rows else []
    for column in columns:
        values = [r.get(column) for r in rows]
        numeric = all(v is None or isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values)
        array = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        array.SetName(column)
        for v in values:
            if numeric:
                array.InsertNextValue(float("nan") if v is None else float(v))
            else:
                array.InsertNextValue("" if v is None else str(v))
        table.AddColumn(array)
    for column, unit in (units or {}).items():
        if column in columns:
            node.SetColumnUnitLabel(column, unit)
    for column, text in (descriptions or {}).items():
        if column in columns:
            node.SetColumnDescription(column, text)
    return node


def laa_color_node(scene, name: str = "EmphysemaXAI LAA") -> slicer.vtkMRMLColorTableNode:
    """The module's own colour table for the LAA map (built in code: the same headless and in Slicer)."""
    return _color_table(scene, name, LAA_COLORS)


def pattern_color_node(scene, name: str = "EmphysemaXAI patterns") -> slicer.vtkMRMLColorTableNode:
    """The colour table of the pattern map: 0 outside the lung and 1 normal transparent,
    2-4 centrilobular mild / moderate / severe yellow -> orange -> red, 5 paraseptal blue,
    6 panlobular purple (names as in :data:`~EmphysemaXAILib.analysis.patterns.PATTERN_COLORS`)."""
    return _color_table(scene, name, PATTERN_COLORS)


def _color_table(scene, name: str, colors):
    """A user colour table node of ``colors`` ((value, name, (r, g, b, a)) with values 0..n-1):
    SetTypeToUser before SetNumberOfColors (vtkMRMLColorTableNode only resizes User / File
    tables), SetColor(index, name, r, g, b, a) sets the lookup table entry and its name."""
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(len(colors))
    node.GetLookupTable().SetTableRange(0, len(colors) - 1)
    for value, label, rgba in colors:
        node.SetColor(value, label, *rgba)
    return node


def label_overlay(scene, ct_node, values: np.ndarray, name: str, color_node, app_logic=None,
                  opacity: float = 0.6, node=None) -> slicer.vtkMRMLLabelMapVolumeNode:
    """A label map volume on the CT grid coloured by ``color_node`` (its alpha: transparent
    entries stay transparent), shown in the label layer of every slice view at ``opacity``
    (the LAA map keeps the foreground); the data probe names the label under the mouse.
    ``node``: an existing label map node to update instead."""
    node = node or scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    node.CopyOrientation(ct_node)
    set_voxels(node, np.asarray(values, np.uint8))
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetAndObserveColorNodeID(color_node.GetID())
    if app_logic is not None:
        app_logic.GetSelectionNode().SetActiveLabelVolumeID(node.GetID())
        app_logic.PropagateLabelVolumeSelection(0)
        for composite in scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
            composite.SetLabelOpacity(opacity)
    return node


def overlay_volume(scene, ct_node, values: np.ndarray, name: str, color_node, app_logic=None,
                   opacity: float = 0.6, node=None) -> slicer.vtkMRMLScalarVolumeNode:
    """A scalar volume on the CT grid shown with ``color_node`` as the foreground of every slice
    view. ``node``: an existing scalar volume node to update instead."""
    node = node or scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.CopyOrientation(ct_node)
    set_voxels(node, values)
    display = scalar_display_node(node)
    display.SetAndObserveColorNodeID(color_node.GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0, color_node.GetNumberOfColors() - 1)
    display.SetInterpolate(False)
    display.SetApplyThreshold(True)  # 0 (no LAA) stays transparent in every blend mode
    display.SetLowerThreshold(0.5)
    display.SetUpperThreshold(color_node.GetNumberOfColors() - 0.5)
    if app_logic is not None:
        selection = app_logic.GetSelectionNode()
        selection.SetActiveVolumeID(ct_node.GetID())
        selection.SetSecondaryVolumeID(node.GetID())
        app_logic.PropagateVolumeSelection(0)
        for composite in scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
            composite.SetForegroundOpacity(opacity)
    return node


def scalar_display_node(node) -> slicer.vtkMRMLScalarVolumeDisplayNode:
    """What ``CreateDefaultDisplayNodes`` gives a scalar volume (a display node with the default
    grey colour map), with automatic window / level off from the start: that pass over every
    voxel costs about half a second on a 512 x 512 x 400 volume; the caller sets the window."""
    display = node.GetDisplayNode()
    if display is not None and display.IsA("vtkMRMLScalarVolumeDisplayNode"):  # a re-run: the node's own
        display.SetAutoWindowLevel(False)
        return display
    display = node.GetScene().AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    display.SetAutoWindowLevel(False)
    display.SetDefaultColorMap()
    node.SetAndObserveDisplayNodeID(display.GetID())
    return display


def volume_rendering(overlay_node, color_node, opacities: dict | None = None
                     ) -> slicer.vtkMRMLVolumeRenderingDisplayNode:
    """3D volume rendering of a label-like overlay with transfer functions built from its colours;
    ``opacities``: value -> opacity (default 0.6 for every coloured value)."""
    logic = slicer.modules.volumerendering.logic()
    display = logic.CreateDefaultVolumeRenderingNodes(overlay_node)
    prop_node = display.GetVolumePropertyNode()
    prop_node.SetName(f"{overlay_node.GetName()} rendering")
    opacity, colors = vtk.vtkPiecewiseFunction(), vtk.vtkColorTransferFunction()
    rgba = [0.0] * 4
    for value in range(color_node.GetNumberOfColors()):
        color_node.GetColor(value, rgba)  # value 0 and transparent entries stay out of 3D
        opacity.AddPoint(value, 0.0 if value == 0 or rgba[3] == 0 else (opacities or {}).get(value, 0.6))
        colors.AddRGBPoint(value, *rgba[:3])
    prop_node.GetVolumeProperty().SetScalarOpacity(opacity)
    prop_node.GetVolumeProperty().SetColor(colors)
    prop_node.GetVolumeProperty().SetInterpolationTypeToNearest()
    display.SetVisibility(True)
    return display


ATTRIBUTION_COLORS = 256


def attribution_color_node(scene, name: str = "EmphysemaXAI attribution") -> slicer.vtkMRMLColorTableNode:
    """The module's continuous colour table for attribution maps (dark red -> orange -> yellow
    -> white, 256 entries, built in code)."""
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(ATTRIBUTION_COLORS)
    node.GetLookupTable().SetTableRange(0, ATTRIBUTION_COLORS - 1)
    stops = np.array([[0.0, 0.25, 0.0, 0.05], [0.35, 0.85, 0.1, 0.05], [0.7, 1.0, 0.65, 0.0], [1.0, 1.0, 1.0, 0.8]])
    for index in range(ATTRIBUTION_COLORS):
        t = index / (ATTRIBUTION_COLORS - 1)
        rgb = [float(np.interp(t, stops[:, 0], stops[:, c])) for c in (1, 2, 3)]
        node.SetColor(index, f"{t:.2f}", *rgb, 1.0)
    return node


def attribution_range(values: np.ndarray) -> float:
    """Top of the display range: the 99.5th percentile of the positive attribution (0 if none)."""
    positive = values[values > 0]
    return float(np.percentile(positive, 99.5)) if positive.size else 0.0


#: node attributes caching an attribution volume's display top and maximum (set when its voxels are set)
TOP_ATTRIBUTE, MAX_ATTRIBUTE = "EmphysemaXAI.attributionTop", "EmphysemaXAI.attributionMax"


def cache_attribution_range(node) -> tuple[float, float]:
    """Compute (display top, maximum) of an attribution volume once and keep them on the node
    (attributes), so that display changes (the panel's sliders) cost no pass over the voxels.
    Call it whenever the node's voxels change."""
    values = slicer.util.arrayFromVolume(node)
    top, peak = attribution_range(values) or 1.0, float(values.max()) if values.size else 0.0
    node.SetAttribute(TOP_ATTRIBUTE, repr(top))
    node.SetAttribute(MAX_ATTRIBUTE, repr(peak))
    return top, peak


def attribution_display_range(node) -> tuple[float, float]:
    """(display top, maximum) of an attribution volume: the cached values, computed when missing."""
    top, peak = node.GetAttribute(TOP_ATTRIBUTE), node.GetAttribute(MAX_ATTRIBUTE)
    if top is None or peak is None:
        return cache_attribution_range(node)
    return float(top), float(peak)


def style_attribution(node, color_node, threshold: float = 0.2, app_logic=None, opacity: float | None = None) -> None:
    """Colour ``node`` (an attribution volume) with ``color_node`` from 0 to its display top;
    values below ``threshold`` x top are transparent; optionally make it the slice views'
    foreground at ``opacity``. Reads the node's cached range (:func:`attribution_display_range`):
    no pass over the voxels, so a slider can call it on every tick."""
    top, peak = attribution_display_range(node)
    display = node.GetScalarVolumeDisplayNode()
    display.SetAndObserveColorNodeID(color_node.GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, top)
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(threshold * top)
    display.SetUpperThreshold(peak + 1.0)
    if app_logic is not None and opacity is not None:
        selection = app_logic.GetSelectionNode()
        selection.SetSecondaryVolumeID(node.GetID())
        app_logic.PropagateForegroundVolumeSelection(0)
        for composite in node.GetScene().GetNodesByClass("vtkMRMLSliceCompositeNode"):
            composite.SetForegroundOpacity(opacity)


def attribution_rendering(node, color_node, threshold: float = 0.2,
                          visible: bool = False) -> slicer.vtkMRMLVolumeRenderingDisplayNode:
    """3D volume rendering of an attribution volume: transparent below ``threshold`` x top,
    opacity rising to 0.5 at the top, colours from ``color_node``."""
    logic = slicer.modules.volumerendering.logic()
    display = logic.CreateDefaultVolumeRenderingNodes(node)
    prop_node = display.GetVolumePropertyNode()
    prop_node.SetName(f"{node.GetName()} rendering")
    top, _ = attribution_display_range(node)
    opacity, colors = vtk.vtkPiecewiseFunction(), vtk.vtkColorTransferFunction()
    opacity.AddPoint(0.0, 0.0)
    opacity.AddPoint(threshold * top, 0.0)
    opacity.AddPoint(top, 0.5)
    rgba = [0.0] * 4
    for index in range(0, ATTRIBUTION_COLORS, 32):
        color_node.GetColor(index, rgba)
        colors.AddRGBPoint(top * index / (ATTRIBUTION_COLORS - 1), *rgba[:3])
    prop_node.GetVolumeProperty().SetScalarOpacity(opacity)
    prop_node.GetVolumeProperty().SetColor(colors)
    display.SetVisibility(visible)
    return display
