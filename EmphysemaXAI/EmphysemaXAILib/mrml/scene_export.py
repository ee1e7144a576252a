"""A case's results as a Slicer scene: ``export_case_scene(result, out_dir)``.

Writes ``lungs.seg.nrrd`` (the lung segmentation as a Slicer segmentation file) and
``scene.mrb`` (the volume "CT", segmentation "CT lungs" with surfaces, "CT LAA map" overlay with
its colour table and volume rendering, tables "CT QCT", "CT severity" and "CT quality control";
with a pattern model the "CT pattern map" label map with its colour table and volume rendering
and the "CT patterns" table; every result node is named after its CT: :func:`case_node_name`):
open it in Slicer and see the result.
The scene is built in a fresh headless scene, so repeated exports never mix cases.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from ..analysis.patterns import PATTERNS, pattern_rows, pattern_summary
from ..app.report_figures import MIN_SLICES_FOR_CORONAL
from .app import bootstrap, in_slicer_application, release_scene
from .edits import record_written
from .nodes import (
    LAA_OPACITY_3D,
    attribution_color_node,
    attribution_rendering,
    cache_attribution_range,
    laa_color_node,
    label_overlay,
    lung_segmentation_node,
    overlay_volume,
    pattern_color_node,
    remove_node,
    scalar_display_node,
    style_attribution,
    table_node,
    volume_rendering,
)
from .views import default_display
from .volumes import set_voxels, shared_voxels, volume_node_from_ct

QCT_UNITS = {"volume_l": "L", "mass_g": "g", "mean_hu": "HU", "sd_hu": "HU", "mode_hu": "HU", "median_hu": "HU",
             "perc10_hu": "HU", "perc15_hu": "HU", "laa950_pct": "%", "laa925_pct": "%", "laa910_pct": "%",
             "laa856_pct": "%", "haa600_pct": "%", "haa250_pct": "%", "noise_hu": "HU", "robust_extent_pct": "%",
             "laa950_pct_calibrated": "%", "perc15_hu_calibrated": "HU", "mean_hu_calibrated": "HU"}
QCT_DESCRIPTIONS = {"laa950_pct": "lung voxels at or below -950 HU (project convention)",
                    "perc15_hu": "15th percentile of the lung density histogram",
                    "robust_extent_pct": "emphysema extent from the noise-deconvolved histogram",
                    "laa_cluster_d": "slope D of the cumulative LAA cluster-size distribution",
                    "laa950_pct_calibrated": "lung voxels at or below -950 HU after calibration to tracheal "
                                             "(or outside) air and blood (or water); see the Severity table",
                    "perc15_hu_calibrated": "Perc15 after the same calibration",
                    "mean_hu_calibrated": "mean lung density after the same calibration"}


#: node attributes marking the module's result nodes: their role, and the CT node they belong to
ROLE_ATTRIBUTE, CT_ATTRIBUTE = "EmphysemaXAI.role", "EmphysemaXAI.ctNodeID"
#: node attribute holding the name the module gave a result node (a re-run renames it only while
#: the node still has that name: a name the user typed is kept)
NAME_ATTRIBUTE = "EmphysemaXAI.givenName"
#: a result node's name is "<CT node's name> <label>" (e.g. "chest CT lungs", "chest CT QCT"): the
#: CT's own name and nothing more of the patient; an attribution volume is "<CT> attribution <method>"
ROLE_LABELS = {"segmentation": "lungs", "laa_map": "LAA map", "qct_table": "QCT", "severity_table": "severity",
               "qc_table": "quality control", "pattern_map": "pattern map", "pattern_table": "patterns",
               "attribution_table": "attribution by region"}


def build_case_scene(result, scene=None, app_logic=None, ct_node=None) -> dict:
    """Add the case's nodes to ``scene`` (default: a fresh headless scene); returns them by role.

    ``ct_node``: an existing volume node holding the CT (inside Slicer, the user's input), used
    instead of a new one. Every array is placed on the grid of the CT as the user gave it
    (``result.ct.on_input_grid``), whatever canonical grid the analysis ran on.
    """
    from ..app.case_layers import layers_from_result

    if scene is None:
        scene, app_logic = bootstrap(fresh=True)
    if ct_node is None:
        ct_node = volume_node_from_ct(scene, result.ct.as_input(), "CT")
        display = scalar_display_node(ct_node)
        display.SetWindowLevel(1400, -500)
    return add_case_nodes(scene, ct_node, layers_from_result(result), app_logic)


def case_node_name(ct_node, role: str) -> str:
    """The name of ``ct_node``'s result node of ``role`` (:data:`ROLE_LABELS`; ``attribution
    <method>`` for an attribution volume), e.g. "chest CT QCT"."""
    return f"{ct_node.GetName()} {ROLE_LABELS.get(role, role)}"


def result_nodes(scene, ct_node) -> dict:
    """The module's earlier result nodes of ``ct_node`` in ``scene``, by role (attributions and
    their renderings by ``attribution <method>`` / ``attribution rendering <method>``)."""
    found = {}
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.GetAttribute(CT_ATTRIBUTE) == ct_node.GetID() and node.GetAttribute(ROLE_ATTRIBUTE):
            found[node.GetAttribute(ROLE_ATTRIBUTE)] = node
    return found


def add_case_nodes(scene, ct_node, layers, app_logic=None, segmentation_node=None) -> dict:
    """The case's result nodes beside ``ct_node`` (whose grid the layers are on); returns them by role.

    Re-running on the same CT updates the earlier result nodes (found by :func:`result_nodes`)
    instead of adding a new set. ``segmentation_node``: the user's (edited) segmentation the
    lungs came from: it is kept as it is and returned as the case's segmentation. The results
    are placed under the CT's parent transform, so they line up with it wherever it is moved.
    ``layers``: :class:`~EmphysemaXAILib.app.case_layers.CaseLayers`.
    """
    if ct_node.GetImageData() is not None and tuple(ct_node.GetImageData().GetDimensions()[::-1]) != layers.shape:
        raise ValueError(f"the results' grid {layers.shape} is not the CT's "
                         f"{tuple(ct_node.GetImageData().GetDimensions()[::-1])}: select the CT they were computed on")
    earlier = result_nodes(scene, ct_node)
    nodes = {"ct": ct_node}
    summary = layers.summary
    if layers.analysed:
        if segmentation_node is not None:
            nodes["segmentation"] = segmentation_node
        else:
            nodes["segmentation"] = lung_segmentation_node(scene, ct_node, layers.labels,
                                                           case_node_name(ct_node, "segmentation"),
                                                           airways=layers.airways, node=earlier.get("segmentation"))
            record_written(nodes["segmentation"])   # so a later Apply can tell the user's edits (mrml.edits)
            # model nodes copied from the surfaces (versions before issue 26): hidden duplicates that
            # went stale after an edit; the segmentation shows its own surfaces in 3D
            for role in [r for r in earlier if r.startswith("surface ")]:
                remove_node(earlier.pop(role))
        nodes["laa_colors"] = shared_color_node(scene, "laa")
        nodes["laa_map"] = overlay_volume(scene, ct_node, layers.laa_map, case_node_name(ct_node, "laa_map"),
                                          nodes["laa_colors"], app_logic, node=earlier.get("laa_map"))
        nodes["laa_rendering"] = volume_rendering(nodes["laa_map"], nodes["laa_colors"], LAA_OPACITY_3D)
        nodes["qct_table"] = table_node(scene, case_node_name(ct_node, "qct_table"), summary["qct"]["regions"],
                                        QCT_UNITS, QCT_DESCRIPTIONS, node=earlier.get("qct_table"))
        nodes["severity_table"] = table_node(scene, case_node_name(ct_node, "severity_table"), severity_rows(summary),
                                             node=earlier.get("severity_table"))
        if layers.pattern_map is not None:
            add_patterns(layers, scene, ct_node, nodes, earlier, app_logic)
        if layers.attributions:
            add_attributions(layers, scene, ct_node, nodes, earlier)
        default_display(nodes)
    nodes["qc_table"] = table_node(scene, case_node_name(ct_node, "qc_table"), qc_rows(summary),
                                   node=earlier.get("qc_table"))
    _remove_stale(scene, earlier, nodes)
    _mark_and_place(nodes, ct_node, users=segmentation_node)
    _name_after_ct(nodes, ct_node, users=segmentation_node)
    nodes["summary"] = summary  # not a node: the case's summary.json object, for the results text
    nodes["updated"] = bool(earlier)  # not a node: a re-run that updated an earlier result of this CT
    return nodes


def shared_color_node(scene, kind: str):
    """The module's colour table of ``kind`` ("laa", "patterns", "attribution"): the one already
    in the scene, else a new one (several cases and re-runs share it)."""
    makers = {"laa": laa_color_node, "patterns": pattern_color_node, "attribution": attribution_color_node}
    for node in scene.GetNodesByClass("vtkMRMLColorTableNode"):
        if node.GetAttribute("EmphysemaXAI.colors") == kind:
            return node
    node = makers[kind](scene)
    node.SetAttribute("EmphysemaXAI.colors", kind)
    return node


def _flat(nodes: dict) -> dict:
    """Role -> node for every result node (lists and per-method dicts flattened)."""
    flat = {}
    for role, value in nodes.items():
        if role in ("ct", "summary", "updated") or role.endswith("_colors"):
            continue
        if isinstance(value, dict):
            singular = "attribution" if role == "attributions" else "attribution rendering"
            flat.update({f"{singular} {method}": node for method, node in value.items()})
        else:
            flat[role] = value
    return flat


def _remove_stale(scene, earlier: dict, nodes: dict) -> None:
    """Remove earlier result nodes this run has no role for (e.g. a method not asked for again)."""
    kept = {node.GetID() for node in _flat(nodes).values()}
    for node in earlier.values():
        if node.GetID() not in kept and node.GetScene() is scene:
            remove_node(node)


def _mark_and_place(nodes: dict, ct_node, users=None) -> None:
    """Tag every result node with its role and CT, put the transformable ones under the CT's
    parent transform, and file every result in the subject hierarchy beside the CT (under its
    patient and study when the DICOM browser put it there, as SlicerTotalSegmentator does).
    ``users``: a segmentation the user made (not one of ours): left untouched, so a later run
    never overwrites it."""
    import slicer

    transform_id = ct_node.GetTransformNodeID()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ct_node.GetScene())
    ct_item = hierarchy.GetItemByDataNode(ct_node) if hierarchy is not None else 0
    parent = hierarchy.GetItemParent(ct_item) if ct_item else 0      # (item 0 would log a warning)
    for role, node in _flat(nodes).items():
        if users is not None and node is users and node.GetAttribute(ROLE_ATTRIBUTE) is None:
            continue
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        node.SetAttribute(CT_ATTRIBUTE, ct_node.GetID())
        if node.IsA("vtkMRMLTransformableNode"):
            node.SetAndObserveTransformNodeID(transform_id)
        if not parent:
            continue
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:   # headless MRML has no subject hierarchy logic adding an item for every node
            hierarchy.CreateItem(parent, node)


def _name_after_ct(nodes: dict, ct_node, users=None) -> None:
    """Name every result node after its CT (:func:`case_node_name`): a new node, and on a re-run
    a node that still has the name the module gave it (:data:`NAME_ATTRIBUTE`; the CT may have
    been renamed since), but not one the user renamed, nor the user's own segmentation. The
    volume renderings' property nodes follow their volume's name ("<volume> rendering")."""
    flat = _flat(nodes)
    for role, node in flat.items():
        if node.IsA("vtkMRMLVolumeRenderingDisplayNode") or (users is not None and node is users
                                                               and node.GetAttribute(ROLE_ATTRIBUTE) is None):
            continue
        given = node.GetAttribute(NAME_ATTRIBUTE)
        if given is None or given == node.GetName():
            node.SetName(case_node_name(ct_node, role))
            node.SetAttribute(NAME_ATTRIBUTE, node.GetName())
    for node in flat.values():
        if node.IsA("vtkMRMLVolumeRenderingDisplayNode") and node.GetVolumePropertyNode() is not None:
            node.GetVolumePropertyNode().SetName(f"{node.GetVolumeNode().GetName()} rendering")


PATTERN_UNITS = {f"{p}_pct": "%" for p in PATTERNS} | {"emphysema_pct": "%"}
PATTERN_DESCRIPTIONS = {**{f"{p}_pct": f"share of the region's lung labelled {p.replace('_', ' ')} by the pattern model"
                           for p in PATTERNS},
                        "emphysema_pct": "the pattern model's emphysema extent in the region (% of its lung)"}


def add_patterns(layers, scene, ct_node, nodes: dict, earlier: dict, app_logic=None) -> None:
    """The pattern model's label map ("<CT> pattern map", its own colour table, volume rendered;
    shown when chosen: :mod:`.views`) and the "<CT> patterns" table (share of lung per pattern and
    region)."""
    nodes["pattern_colors"] = shared_color_node(scene, "patterns")
    nodes["pattern_map"] = label_overlay(scene, ct_node, layers.pattern_map, case_node_name(ct_node, "pattern_map"),
                                         nodes["pattern_colors"], app_logic, node=earlier.get("pattern_map"))
    nodes["pattern_rendering"] = volume_rendering(nodes["pattern_map"], nodes["pattern_colors"])
    nodes["pattern_table"] = table_node(scene, case_node_name(ct_node, "pattern_table"),
                                        pattern_rows(layers.summary["severity"]), PATTERN_UNITS,
                                        PATTERN_DESCRIPTIONS, node=earlier.get("pattern_table"))


def add_attributions(layers, scene, ct_node, nodes: dict, earlier: dict) -> None:
    """One volume per explanation method ("<CT> attribution <method>", the module's colour table,
    thresholded; its display range cached on the node for the panel's sliders), its volume
    rendering (shown when chosen: :mod:`.views`), and the "<CT> attribution by region" table (share
    of positive attribution per region and method)."""
    nodes["attribution_colors"] = shared_color_node(scene, "attribution")
    nodes["attributions"], nodes["attribution_renderings"] = {}, {}
    for method, volume in layers.attributions.items():
        node = earlier.get(f"attribution {method}") or scene.AddNewNodeByClass(
            "vtkMRMLScalarVolumeNode", case_node_name(ct_node, f"attribution {method}"))
        node.CopyOrientation(ct_node)
        set_voxels(node, np.asarray(volume, np.float32))
        cache_attribution_range(node)
        scalar_display_node(node)  # windowed by style_attribution
        style_attribution(node, nodes["attribution_colors"])
        nodes["attributions"][method] = node
        nodes["attribution_renderings"][method] = attribution_rendering(node, nodes["attribution_colors"])
    nodes["attribution_table"] = table_node(scene, case_node_name(ct_node, "attribution_table"),
                                            attribution_rows(layers.summary),
                                            node=earlier.get("attribution_table"))


def attribution_rows(summary: dict) -> list:
    """Rows (region, one column per method: share of positive attribution) of ``summary``'s explanations."""
    explanations = summary.get("explanations") or {}
    if not explanations:
        return []
    regions = next(iter(explanations.values()))["region_scores"]
    return [{"region": region, **{m: ("" if e["region_scores"].get(region) is None
                                      else f"{e['region_scores'][region]:.3f}") for m, e in explanations.items()}}
            for region in regions]


def qc_rows(summary: dict) -> list:
    """Rows (item, value) of the Quality control table: errors, warnings, then the measures."""
    qc = summary["qc"]
    rows = [{"item": "error", "value": e} for e in qc["errors"]]
    rows += [{"item": "warning", "value": w} for w in qc["warnings"]]
    return rows + [{"item": k, "value": str(v)} for k, v in qc["measures"].items()]


def severity_rows(summary: dict) -> list:
    """Rows (item, value) of the Severity table from a ``summary.json`` object: QCT's class,
    extent, rule and zone grades, then the CNN's class, probabilities, extent per region and
    model (when the model ran)."""
    qct = summary["qct_severity"]
    rows = [{"item": "QCT class", "value": qct["class"]},
            {"item": "QCT extent_pct", "value": f"{qct['extent_pct']:.2f}"},
            {"item": "QCT rule", "value": qct["rule"]}]
    rows += [{"item": f"QCT zone {zone}", "value": grade} for zone, grade in qct["zone_grades"].items()]
    calibration = summary["qct"]["calibration"]
    if calibration is None:
        rows.append({"item": "calibration", "value": "none (no air reference measured or not credible)"})
    else:
        whole = next(r for r in summary["qct"]["regions"] if r["region"] == "whole")
        rows += [{"item": "calibration air_hu", "value": f"{calibration['air_hu']:.1f} ({calibration['air_source']})"},
                 {"item": "calibration reference_hu",
                  "value": f"{calibration['reference_hu']:.1f} ({calibration['reference']}, nominal "
                           f"{calibration['reference_nominal_hu']:g})"},
                 {"item": "calibration slope, intercept",
                  "value": f"{calibration['slope']:.4f}, {calibration['intercept']:.2f}"},
                 {"item": "laa950_pct raw / calibrated",
                  "value": f"{whole['laa950_pct']:.2f} / {whole['laa950_pct_calibrated']:.2f}"},
                 {"item": "perc15_hu raw / calibrated",
                  "value": f"{whole['perc15_hu']} / {whole['perc15_hu_calibrated']:.1f}"}]
    cnn = summary.get("severity")
    if cnn is not None:
        rows += [{"item": "CNN class", "value": cnn["class"]},
                 {"item": "CNN extent_pct", "value": f"{cnn['extent_pct']:.2f}"}]
        rows += [{"item": f"CNN p({name})", "value": f"{p:.3f}"} for name, p in cnn["probabilities"].items()]
        rows += [{"item": f"CNN extent_pct {region}", "value": f"{value:.2f}"}
                 for region, value in cnn["extent_by_region"].items() if value is not None and region != "whole"]
        rows += [{"item": "CNN model", "value": f"{cnn['model']['name']} (sha256 {cnn['model']['sha256'][:12]})"},
                 {"item": "CNN low confidence",
                  "value": "yes: " + "; ".join(cnn["notes"]) if cnn["low_confidence"] else "no"}]
        patterns = pattern_summary(cnn)
        if patterns is not None:
            rows += [{"item": "pattern dominant", "value": patterns["dominant"].replace("_", " ")},
                     {"item": "pattern emphysema share_pct", "value": f"{patterns['emphysema_share_pct']:.2f}"}]
    return rows


def export_case_scene(result, out_dir, render: bool = False) -> dict:
    """Write ``lungs.seg.nrrd`` (when lungs were segmented) and ``scene.mrb`` into ``out_dir``;
    with ``render``, also return ``views``: RGB images of the 3D view (volume-rendered LAA map in
    the semi-transparent lungs) and of the axial / coronal slice views, for the report (the axial
    view only for one- or two-slice inputs)."""
    out = Path(out_dir)
    scene, app_logic = bootstrap(fresh=True)
    # headless, the scene is ours: its nodes use the result's arrays (no copies) and are dropped
    # (release_scene) inside the block, so the report does not hold them either, nor a failure
    with shared_voxels() if not in_slicer_application() else nullcontext():
        try:
            return _export(result, out, scene, app_logic, render)
        finally:
            release_scene(scene)


def _export(result, out: Path, scene, app_logic, render: bool) -> dict:
    from .render import coarsen_volume_renderings, ras_offset, render_3d, render_slice, use_cpu_ray_casting

    nodes = build_case_scene(result, scene, app_logic)
    written = {}
    if "segmentation" in nodes:
        path = out / "lungs.seg.nrrd"
        save_quietly(scene, path, nodes["segmentation"])
        written["segmentation"] = path
    path = out / "scene.mrb"
    save_quietly(scene, path)
    written["scene"] = path
    if render and result.qct is not None:
        laa = result.qct.laa_map
        weight = laa > 0 if laa.any() else result.segmentation.labels > 0
        k = int(np.argmax(weight.sum(axis=(1, 2))))
        j = int(np.argmax(weight.sum(axis=(0, 2))))
        del weight
        axial = render_slice(app_logic, "Red", ras_offset(result.ct, (k, 0, 0), "Red"), None, 480)[..., :3].copy()
        if result.ct.shape[0] < MIN_SLICES_FOR_CORONAL:  # one or two slices: a 3D view or a coronal
            written["views"] = {"axial": axial}       # one is a line or a flat slab
        else:
            coronal = render_slice(app_logic, "Green", ras_offset(result.ct, (0, j, 0), "Green"), None,
                                   480)[..., :3].copy()
            if not in_slicer_application():  # our own scene, saved already: the 3D view renders
                coarsen_volume_renderings(scene)  # a strided copy of the volumes
                use_cpu_ray_casting(scene)        # by VTK's CPU ray caster (no GPU here)
            written["views"] = {"3d": render_3d(scene, app_logic), "axial": axial, "coronal": coronal}
    return written


@contextmanager
def vtk_errors_held():
    """Within the block Slicer's writers print nothing on the terminal (a failing bundle writer
    prints one ``vtkArchive Error`` per block it could not write, then ``vtkMRMLScene ... ERR``):
    the caller reports the failure in one line. Headless only (inside the Slicer application
    they go to its error log): VTK's warning display is turned off and the process's native
    stdout and stderr (VTK's output window writes to stdout, which ``--json`` keeps for its one
    object) point to the null device for the block; all are restored."""
    import sys

    import vtk

    if in_slicer_application():
        yield
        return
    shown = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()
    saved = {}
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        try:
            stream.flush()
            copy = os.dup(fd)
        except (OSError, ValueError, AttributeError):
            continue  # no such stream to hold back (closed, or not a file)
        saved[fd] = copy
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    try:
        yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        vtk.vtkObject.SetGlobalWarningDisplay(shown)


def scene_bytes(scene) -> int:
    """About how many bytes the scene's volumes take uncompressed: the most a bundle needs."""
    total = 0
    for node in scene.GetNodesByClass("vtkMRMLVolumeNode"):
        image = node.GetImageData()
        if image is not None:
            total += int(image.GetActualMemorySize()) * 1024
    return total


def save_quietly(scene, path: Path, node=None) -> None:
    """Write ``node`` (or, without one, the whole scene as a ``.mrb`` bundle) to ``path`` with
    Slicer's IO manager, without Slicer's own log lines (``slicer.util.saveScene`` logs "Failed to
    save scene to file" on the root logger and returns False). A failure raises: an OSError with
    errno ENOSPC (or EDQUOT) when the disk of ``path``, or of the scene's scratch folder the
    bundle is assembled in, is full (fewer bytes free than the scene's volumes take, or a small
    probe file cannot be written: :func:`~EmphysemaXAILib.io.disk_full.disk_full_at`), else a
    RuntimeError with Slicer's message."""
    import errno

    import slicer

    from ..io.disk_full import disk_full_at

    manager = slicer.app.coreIOManager()
    messages = slicer.vtkMRMLMessageCollection()
    properties = {"fileName": str(path)}
    if node is None:
        kind = "SceneFile"
    else:
        kind = manager.fileWriterFileType(node)
        properties["nodeID"] = node.GetID()
    with vtk_errors_held():
        done = manager.saveNodes(kind, properties, messages)
    if done:
        return
    need = scene_bytes(scene) if node is None else 0
    for folder in (path.parent, scene.GetRootDirectory() if node is None else None):
        code = disk_full_at(folder, need) if folder else None
        if code is not None:
            raise OSError(code, os.strerror(code), str(folder if folder != path.parent else path))
    text = " ".join(messages.GetAllMessagesAsString().split()) if messages.GetNumberOfMessages() else ""
    for code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        if os.strerror(code) in text:
            raise OSError(code, os.strerror(code), str(path))
    raise RuntimeError(f"could not write {path}" + (f": {text}" if text else ""))
