"""Results on disk into a scene: the Slicer module's "Load results" and the end of its analysis.

``load_case_folder`` reads an ``analyze`` output folder (or one case of a ``batch`` run) back
onto the CT it was computed on, through the same node builder as a run in memory
(:func:`~.scene_export.add_case_nodes`: earlier results of that CT are updated, results sit
under the CT's parent transform). ``load_results`` also takes a whole ``batch`` output folder:
it shows ``cohort.csv`` as a table and loads one case. MRML layer: main thread only.

The CT: the node given (its grid must be the results' grid), else the one inside the case's
``scene.mrb`` (``Data/CT.nrrd``, read from the bundle without loading the scene).
"""
from __future__ import annotations

import csv
import tempfile
import zipfile
from pathlib import Path

from ..app.case_layers import layers_from_folder
from ..errors import InputError
from .nodes import table_node
from .scene_export import add_case_nodes

#: the cohort table's name in the scene
COHORT_TABLE = "EmphysemaXAI cohort"


def is_batch_folder(folder) -> bool:
    """True for a ``batch`` output folder (``cohort.csv`` and ``cases/``)."""
    folder = Path(folder)
    return (folder / "cohort.csv").is_file() and (folder / "cases").is_dir()


def cohort_rows(folder) -> list[dict]:
    """The rows of a batch folder's ``cohort.csv`` (strings, as written)."""
    with open(Path(folder) / "cohort.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def load_results(folder, scene, app_logic=None, ct_node=None, case_id: str | None = None) -> dict:
    """Load an ``analyze`` folder, or a ``batch`` folder's cohort table and one case (``case_id``,
    default the first case whose status is ok), into ``scene``. Returns the nodes by role
    (``cohort_table`` and ``case_id`` for a batch folder; see :func:`load_case_folder`)."""
    folder = Path(folder)
    if not is_batch_folder(folder):
        return load_case_folder(folder, scene, app_logic, ct_node)
    rows = cohort_rows(folder)
    ok = [row["case_id"] for row in rows if row.get("status") == "ok"]
    if case_id is None:
        if not ok:
            raise InputError(f"{folder}: no case of this batch was analysed (see cohort.csv's status and error)")
        case_id = ok[0]
    elif case_id not in {row["case_id"] for row in rows}:
        raise InputError(f"{folder}: no case {case_id!r} in cohort.csv; cases: {', '.join(r['case_id'] for r in rows)}")
    existing = [n for n in scene.GetNodesByClass("vtkMRMLTableNode") if n.GetName() == COHORT_TABLE]
    nodes = load_case_folder(folder / "cases" / case_id, scene, app_logic, ct_node)
    nodes["cohort_table"] = table_node(scene, COHORT_TABLE, [_typed(row) for row in rows],
                                       node=existing[0] if existing else None)
    nodes["case_id"] = case_id
    return nodes


def load_case_folder(folder, scene, app_logic=None, ct_node=None, segmentation_node=None) -> dict:
    """The results of one analysed case folder as nodes beside ``ct_node`` (see the module
    docstring for where the CT comes from); returns them by role, as
    :func:`~.scene_export.build_case_scene` does. ``segmentation_node``: the segmentation the
    lungs came from (Recompute), kept instead of a new one.

    Raises:
        InputError: not an output folder, files missing or inconsistent, no CT to put them on,
            or a CT whose grid is not the results' grid.
    """
    folder = Path(folder)
    layers = layers_from_folder(folder)
    if ct_node is None:
        ct_node = ct_from_scene_bundle(folder / "scene.mrb", scene, name=f"CT {folder.name}")
    dimensions = tuple(ct_node.GetImageData().GetDimensions()[::-1]) if ct_node.GetImageData() else None
    if dimensions != layers.shape:
        raise InputError(f"{folder}: the results are on a {layers.shape} grid, the CT {ct_node.GetName()!r} is "
                         f"{dimensions}; select the CT they were computed on")
    try:
        return add_case_nodes(scene, ct_node, layers, app_logic, segmentation_node=segmentation_node)
    except ValueError as error:
        raise InputError(f"{folder}: {error}") from None


def ct_from_scene_bundle(bundle: Path, scene, name: str = "CT"):
    """The CT volume node read from a case's ``scene.mrb`` (its ``Data/CT.nrrd``, extracted to a
    temporary file), added to ``scene``."""
    import slicer.util

    from ..io.read import read_ct
    from .volumes import volume_node_from_ct

    if not bundle.is_file():
        raise InputError(f"{bundle.parent}: no CT to show the results on; select the CT they were computed on "
                         "(Chest CT), or run with a scene (scene.mrb) so the folder carries it")
    with zipfile.ZipFile(bundle) as archive, tempfile.TemporaryDirectory() as scratch:
        members = [m for m in archive.namelist() if m.endswith("/Data/CT.nrrd")]
        if not members:
            raise InputError(f"{bundle}: the scene has no CT volume (Data/CT.nrrd); select the CT instead")
        ct = read_ct(archive.extract(members[0], scratch), reorient=False)
    node = volume_node_from_ct(scene, ct, name)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(1400, -500)
    if hasattr(slicer, "app") and hasattr(slicer.app, "layoutManager"):
        slicer.util.setSliceViewerLayers(background=node, fit=True)
    return node


def _typed(row: dict) -> dict:
    """A cohort row with numbers as numbers (so the table's columns sort numerically)."""
    out = {}
    for key, value in row.items():
        if key in ("case_id", "source", "status", "error"):
            out[key] = value
            continue
        try:
            out[key] = float(value) if value != "" else None
        except ValueError:
            out[key] = value
    return out
