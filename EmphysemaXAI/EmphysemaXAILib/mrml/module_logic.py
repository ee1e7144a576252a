"""What the Slicer module's logic does with the scene, without Qt: inputs from nodes, the sample
phantom, and how results are shown (layout, slice-view layers, attribution styling).

MRML layer: imports ``slicer`` (the application's, or the slicer-core wheel headless), never
``qt`` / ``ctk``. The module file (``EmphysemaXAI.py``) keeps only thin delegates to these.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import slicer

    from ..volume import CTVolume


def load_phantom(scene, seed: int = 0) -> slicer.vtkMRMLScalarVolumeNode:
    """A generated medium phantom (12 % mixed emphysema) as a volume node in ``scene``, shown in
    the slice views when the application is there."""
    import slicer

    from ..phantom import demo_params, generate_phantom
    from .volumes import volume_node_from_ct

    phantom = generate_phantom(demo_params(seed))
    node = volume_node_from_ct(scene, phantom.ct, "EmphysemaXAI phantom")
    node.CreateDefaultDisplayNodes()
    if hasattr(slicer, "app"):
        slicer.util.setSliceViewerLayers(background=node, fit=True)
    return node


def dicom_acquisition(volume_node, dicom_database) -> dict | None:
    """Acquisition facts (kernel, kVp, mAs, ...) of a volume loaded through Slicer's DICOM
    browser, read from its first instance's file; None for other volumes."""
    uids = (volume_node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids or dicom_database is None:
        return None
    path = dicom_database.fileForInstance(uids[0])
    if not path or not os.path.exists(path):
        return None
    import pydicom

    from ..io.dicom_header import acquisition_facts

    return acquisition_facts(pydicom.dcmread(path, stop_before_pixels=True))


def case_inputs(volume_node, segmentation_node=None, dicom_database=None) -> tuple[CTVolume, np.ndarray | None]:
    """(CTVolume, lung labels (z, y, x) uint8 on the CT as given, or None) from the input nodes;
    DICOM acquisition facts come from the files the DICOM browser loaded. GUI thread only."""
    from .nodes import labels_from_segmentation_node
    from .volumes import ct_from_volume_node

    if not volume_node:
        raise ValueError("Input volume is invalid: select a chest CT volume")
    ct = ct_from_volume_node(volume_node)
    ct.modality = "CT"
    facts = dicom_acquisition(volume_node, dicom_database)
    if facts:
        ct.acquisition = facts
    mask = labels_from_segmentation_node(segmentation_node, volume_node) if segmentation_node else None
    return ct, mask


def show_results(nodes: dict, layout_manager, app_logic) -> None:
    """The QCT table in a four-up + table layout, the LAA overlay as foreground and the pattern
    map as label layer of the slice views."""
    import slicer

    if "qct_table" in nodes:
        layout_manager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        app_logic.GetSelectionNode().SetActiveTableID(nodes["qct_table"].GetID())
        app_logic.PropagateTableSelection()
    if "laa_map" in nodes:
        slicer.util.setSliceViewerLayers(foreground=nodes["laa_map"], foregroundOpacity=0.6)
    if "pattern_map" in nodes:  # the pattern model's labels above the LAA map
        slicer.util.setSliceViewerLayers(label=nodes["pattern_map"], labelOpacity=0.6)


def show_attribution(nodes: dict, method: str, app_logic, opacity: float = 0.6, threshold: float = 0.2) -> None:
    """One method's attribution in the slice views (values under ``threshold`` x its display top
    transparent) and its 3D rendering on, the other methods' renderings off."""
    from .nodes import style_attribution

    for name, rendering in nodes.get("attribution_renderings", {}).items():
        rendering.SetVisibility(name == method)
    style_attribution(nodes["attributions"][method], nodes["attribution_colors"], threshold=threshold,
                      app_logic=app_logic, opacity=opacity)
