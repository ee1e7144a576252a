"""What the slice views and the 3D view show of a case's result nodes: one layer at a time.

A *layer* is the LAA map (:data:`LAA_LAYER`, the default: what the module's help and the README
promise after Apply), the pattern map (:data:`PATTERN_LAYER`) or one explanation method's
attribution volume (its method name, e.g. ``gradcam``). :func:`show_layer` puts that layer in
every slice view, over the CT (the LAA map and attributions as the foreground layer, the pattern
map as the label layer, the other of the two layers emptied), at ``opacity``, and switches its
volume rendering on in 3D and every other result rendering off. :func:`default_display` is the
state a fresh result gets (the scene the command line saves, the module after Apply): the LAA
layer, and the lungs translucent in 3D (opacity :data:`LUNG_OPACITY_3D`, so the renderings
inside them are visible) and drawn as outlines, not fills, in the slice views (the LAA colours
are read against the CT, not against the segment colour). MRML only (no Qt): tested headless.
"""
from __future__ import annotations

import slicer

LAA_LAYER = "LAA map"
PATTERN_LAYER = "Pattern map"
LUNG_OPACITY_3D = 0.25
DEFAULT_OPACITY = 0.6


def layer_choices(nodes: dict) -> list[str]:
    """The layers ``nodes`` (the result nodes by role) can show, the default first."""
    choices = [LAA_LAYER] if "laa_map" in nodes else []
    if "pattern_map" in nodes:
        choices.append(PATTERN_LAYER)
    return choices + list(nodes.get("attributions", {}))


def _renderings(nodes: dict) -> dict[str, slicer.vtkMRMLVolumeRenderingDisplayNode]:
    found = {LAA_LAYER: nodes.get("laa_rendering"), PATTERN_LAYER: nodes.get("pattern_rendering"),
             **nodes.get("attribution_renderings", {})}
    return {name: node for name, node in found.items() if node is not None}


def show_layer(nodes: dict, layer: str = LAA_LAYER, opacity: float = DEFAULT_OPACITY,
               threshold: float | None = None) -> None:
    """Show ``layer`` (module docstring) of the result nodes ``nodes`` in every slice view at
    ``opacity`` (0..1) and its rendering alone in 3D. For an attribution, ``threshold`` (a
    fraction of the map's display top; None: as it is) makes the values below it transparent.
    Raises ValueError for a layer these results do not have."""
    from .nodes import style_attribution

    attributions = nodes.get("attributions", {})
    if layer not in layer_choices(nodes):
        raise ValueError(f"these results have no {layer!r} layer; choose from {', '.join(layer_choices(nodes))}")
    foreground = label = None
    if layer == LAA_LAYER:
        foreground = nodes["laa_map"]
    elif layer == PATTERN_LAYER:
        label = nodes["pattern_map"]
    else:
        foreground = attributions[layer]
        if threshold is not None:
            style_attribution(foreground, nodes["attribution_colors"], threshold=threshold)
    ct = nodes["ct"]
    for composite in ct.GetScene().GetNodesByClass(slicer.vtkMRMLSliceCompositeNode.__name__):
        composite.SetBackgroundVolumeID(ct.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetLabelVolumeID(label.GetID() if label is not None else None)
        composite.SetForegroundOpacity(opacity)
        composite.SetLabelOpacity(opacity)
    for name, rendering in _renderings(nodes).items():
        rendering.SetVisibility(name == layer)


def default_display(nodes: dict) -> None:
    """A fresh result's look (module docstring): the LAA layer at :data:`DEFAULT_OPACITY`, the
    lungs translucent in 3D and outlined in the slice views."""
    segmentation = nodes.get("segmentation")
    if segmentation is not None and segmentation.GetDisplayNode() is not None:
        display = segmentation.GetDisplayNode()
        display.SetOpacity3D(LUNG_OPACITY_3D)
        display.SetVisibility2DFill(False)
        display.SetVisibility2DOutline(True)
    if layer_choices(nodes):
        show_layer(nodes, layer_choices(nodes)[0])
