"""The user's scene is theirs: results loaded from disk, re-runs update, the user's segmentation
is kept, results sit under the CT's parent transform, sliders read cached ranges (slicer-core)."""
import csv
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core (the headless extra) is not installed")

import SimpleITK as sitk  # noqa: E402
import slicer.util  # noqa: E402
import vtk  # noqa: E402
from helpers import table_rows, table_value  # noqa: E402

from EmphysemaXAILib.app.case_files import write_case  # noqa: E402
from EmphysemaXAILib.app.case_layers import layers_from_folder  # noqa: E402
from EmphysemaXAILib.errors import InputError  # noqa: E402
from EmphysemaXAILib.mrml import nodes as mrml_nodes  # noqa: E402
from EmphysemaXAILib.mrml.app import bootstrap  # noqa: E402
from EmphysemaXAILib.mrml.load_results import COHORT_TABLE, load_results  # noqa: E402
from EmphysemaXAILib.mrml.module_logic import show_results  # noqa: E402
from EmphysemaXAILib.mrml.nodes import labels_from_segmentation_node, lung_segmentation_node  # noqa: E402
from EmphysemaXAILib.mrml.scene_export import ROLE_ATTRIBUTE, add_case_nodes  # noqa: E402
from EmphysemaXAILib.mrml.views import LAA_LAYER, LUNG_OPACITY_3D, layer_choices, show_layer  # noqa: E402
from EmphysemaXAILib.options import AnalysisOptions  # noqa: E402
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom  # noqa: E402
from EmphysemaXAILib.pipeline import analyze_case  # noqa: E402

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    phantom = generate_phantom(PhantomParams(size="small", seed=21, extent_pct=15, pattern="centrilobular"))
    result = analyze_case(phantom.ct, AnalysisOptions(engine="classical", model="none"))
    return write_case(result, tmp_path_factory.mktemp("rules") / "case", report=False)


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _with_attributions(layers, methods):
    """The folder's layers plus attribution volumes for ``methods`` (made here: the node rules
    do not depend on where the maps come from)."""
    rng = np.random.default_rng(0)
    layers.attributions = {m: (rng.random(layers.shape, dtype=np.float32) * (i + 1)) for i, m in enumerate(methods)}
    layers.summary["explanations"] = {m: {"file": f"attribution_{m}.nrrd", "region_scores": {"whole": 1.0}}
                                      for m in methods}
    return layers


def test_load_results_reads_an_analyze_folder_onto_the_ct_of_its_scene(folder):
    scene, app_logic = bootstrap(fresh=True)
    nodes = load_results(folder, scene, app_logic)
    summary = json.loads((folder / "summary.json").read_text())
    assert slicer.util.arrayFromVolume(nodes["ct"]).shape == tuple(summary["input"]["shape"])
    assert np.array_equal(slicer.util.arrayFromVolume(nodes["laa_map"]), _array(folder / "laa_map.nrrd"))
    assert np.array_equal(labels_from_segmentation_node(nodes["segmentation"], nodes["ct"]),
                          _array(folder / "lung_labels.nrrd"))
    segmentation = nodes["segmentation"].GetSegmentation()
    airways = segmentation.GetSegmentIdBySegmentName("Airways")
    assert airways and np.array_equal(
        slicer.util.arrayFromSegmentBinaryLabelmap(nodes["segmentation"], airways, nodes["ct"]) > 0,
        _array(folder / "airways.nrrd") > 0)
    whole = summary["qct"]["regions"][0]
    assert table_value(nodes["qct_table"], "region", "whole", "laa950_pct") == pytest.approx(whole["laa950_pct"])
    assert table_value(nodes["severity_table"], "item", "QCT class", "value") == summary["qct_severity"]["class"]


def test_a_rerun_on_the_same_ct_updates_the_earlier_nodes_instead_of_adding_a_set(folder):
    scene, app_logic = bootstrap(fresh=True)
    first = load_results(folder, scene, app_logic)
    count = scene.GetNumberOfNodes()
    second = load_results(folder, scene, app_logic, ct_node=first["ct"])
    assert scene.GetNumberOfNodes() == count
    for role in ("segmentation", "laa_map", "qct_table", "severity_table", "qc_table", "laa_rendering"):
        assert second[role].GetID() == first[role].GetID(), role
    # two attribution maps, then a run that asked for one: the other's nodes go
    both = add_case_nodes(scene, first["ct"], _with_attributions(layers_from_folder(folder), ["gradcam", "ig"]),
                          app_logic)
    assert set(both["attributions"]) == {"gradcam", "ig"}
    ig_id = both["attributions"]["ig"].GetID()
    one = add_case_nodes(scene, first["ct"], _with_attributions(layers_from_folder(folder), ["gradcam"]), app_logic)
    assert one["attributions"]["gradcam"].GetID() == both["attributions"]["gradcam"].GetID()
    assert scene.GetNodeByID(ig_id) is None
    volumes = [n.GetName() for n in scene.GetNodesByClass("vtkMRMLScalarVolumeNode")]
    assert [name for name in volumes if name.startswith("Attribution")] == ["Attribution gradcam"]
    colors = [n for n in scene.GetNodesByClass("vtkMRMLColorTableNode") if n.GetAttribute("EmphysemaXAI.colors")]
    assert len(colors) == 2                                      # LAA and attribution, shared


def test_recompute_keeps_the_users_segmentation_and_apply_never_overwrites_it(folder):
    scene, app_logic = bootstrap(fresh=True)
    ct = load_results(folder, scene, app_logic)["ct"]
    labels = _array(folder / "lung_labels.nrrd")
    edited = labels.copy()
    edited[:, :, : labels.shape[2] // 3] = 0                  # the user erased a part of the lungs
    users = lung_segmentation_node(scene, ct, edited, name="My lungs")
    segmentations = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    nodes = add_case_nodes(scene, ct, layers_from_folder(folder), app_logic, segmentation_node=users)
    assert nodes["segmentation"] is users and users.GetAttribute(ROLE_ATTRIBUTE) is None
    # the results now come from the user's lungs: the engine's earlier segmentation went, no new one came
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == segmentations - 1
    applied = add_case_nodes(scene, ct, layers_from_folder(folder), app_logic)      # Apply again: the engine's lungs
    assert applied["segmentation"] is not users
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == segmentations
    edited_ours = add_case_nodes(scene, ct, layers_from_folder(folder), app_logic,
                                 segmentation_node=applied["segmentation"])      # Recompute from our edited one
    assert edited_ours["segmentation"] is applied["segmentation"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == segmentations
    assert np.array_equal(labels_from_segmentation_node(users, ct), edited)           # untouched


def test_results_sit_under_the_cts_parent_transform_and_give_back_the_same_labels(folder):
    scene, app_logic = bootstrap(fresh=True)
    ct = load_results(folder, scene, app_logic)["ct"]
    for role_node in [n for n in (scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes()))
                      if n.GetAttribute(ROLE_ATTRIBUTE)]:
        scene.RemoveNode(role_node)
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 50.0)                               # 50 mm to the left
    shift.SetMatrixTransformToParent(matrix)
    ct.SetAndObserveTransformNodeID(shift.GetID())
    nodes = add_case_nodes(scene, ct, _with_attributions(layers_from_folder(folder), ["gradcam"]), app_logic)
    placed = [nodes["segmentation"], nodes["laa_map"], nodes["attributions"]["gradcam"]]
    assert all(node.GetTransformNodeID() == shift.GetID() for node in placed)
    labels = _array(folder / "lung_labels.nrrd")
    assert np.array_equal(labels_from_segmentation_node(nodes["segmentation"], ct), labels)   # every voxel
    again = add_case_nodes(scene, ct, layers_from_folder(folder), app_logic)    # an update under the transform
    assert again["segmentation"].GetTransformNodeID() == shift.GetID()
    assert np.array_equal(labels_from_segmentation_node(again["segmentation"], ct), labels)


def test_attribution_sliders_read_the_cached_range_not_the_voxels(folder, monkeypatch):
    scene, app_logic = bootstrap(fresh=True)
    ct = load_results(folder, scene, app_logic)["ct"]
    layers = _with_attributions(layers_from_folder(folder), ["gradcam"])
    expected_top = mrml_nodes.attribution_range(layers.attributions["gradcam"])
    nodes = add_case_nodes(scene, ct, layers, app_logic)
    node = nodes["attributions"]["gradcam"]

    def no_pass(values):
        raise AssertionError("a slider tick went over the voxels")

    monkeypatch.setattr(mrml_nodes, "attribution_range", no_pass)
    monkeypatch.setattr(mrml_nodes.slicer.util, "arrayFromVolume", no_pass)
    show_layer(nodes, "gradcam", opacity=0.3, threshold=0.5)
    display = node.GetScalarVolumeDisplayNode()
    assert display.GetLowerThreshold() == pytest.approx(0.5 * expected_top, rel=1e-6)
    assert display.GetWindow() == pytest.approx(expected_top, rel=1e-6)


def test_load_results_of_a_batch_folder_shows_the_cohort_and_one_case(folder, tmp_path):
    batch = tmp_path / "batch"
    shutil.copytree(folder, batch / "cases" / "b")
    with open(batch / "cohort.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["case_id", "source", "status", "error", "laa950_pct"])
        writer.writeheader()
        writer.writerow({"case_id": "a", "source": "a.nrrd", "status": "failed", "error": "unreadable",
                         "laa950_pct": ""})
        writer.writerow({"case_id": "b", "source": "b.nrrd", "status": "ok", "error": "", "laa950_pct": "14.9"})
    scene, app_logic = bootstrap(fresh=True)
    nodes = load_results(batch, scene, app_logic)
    assert nodes["case_id"] == "b" and nodes["cohort_table"].GetName() == COHORT_TABLE
    cohort = table_rows(nodes["cohort_table"])
    assert [row["case_id"] for row in cohort] == ["a", "b"] and cohort[1]["laa950_pct"] == pytest.approx(14.9)
    with pytest.raises(InputError, match="no case 'c'"):
        load_results(batch, scene, app_logic, case_id="c")


def test_load_results_refuses_other_folders_and_a_ct_of_another_grid(folder, tmp_path):
    scene, app_logic = bootstrap(fresh=True)
    with pytest.raises(InputError, match="no summary.json"):
        load_results(tmp_path, scene, app_logic)
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "another CT")
    slicer.util.updateVolumeFromArray(other, np.zeros((3, 4, 5), np.int16))
    with pytest.raises(InputError, match="select the CT they were computed on"):
        load_results(folder, scene, app_logic, ct_node=other)


class LayoutRecorder:
    """Stand-in for the application's layout manager (headless: there is none): records layouts."""

    def __init__(self):
        self.layouts = []

    def setLayout(self, layout):
        self.layouts.append(layout)


def _display_state(scene, nodes) -> dict:
    composites = list(scene.GetNodesByClass("vtkMRMLSliceCompositeNode"))
    assert composites
    names = {None: None, **{n.GetID(): n.GetName() for n in scene.GetNodesByClass("vtkMRMLVolumeNode")}}
    states = {(names[c.GetForegroundVolumeID()], names[c.GetLabelVolumeID()], names[c.GetBackgroundVolumeID()],
               round(c.GetForegroundOpacity(), 3)) for c in composites}
    assert len(states) == 1                                       # every slice view alike
    segmentation = nodes["segmentation"].GetDisplayNode()
    renderings = [r.GetVolumeNode().GetName() for r in scene.GetNodesByClass("vtkMRMLVolumeRenderingDisplayNode")
                  if r.GetVisibility()]
    return {"slices": states.pop(), "renderings": renderings, "lung_opacity_3d": segmentation.GetOpacity3D(),
            "lung_fill_2d": bool(segmentation.GetVisibility2DFill()),
            "lung_outline_2d": bool(segmentation.GetVisibility2DOutline())}


def test_apply_leaves_the_laa_map_over_the_ct_and_translucent_lungs_as_the_help_says(folder):
    """The display state Apply leaves (issue 26: it used to be the first attribution map as
    foreground, the pattern map and the lung fill, opaque lungs in 3D), checked against the
    module's help and the README, which promise the LAA map over the CT."""
    from helpers import PROJECT

    help_text = (PROJECT / "EmphysemaXAI" / "EmphysemaXAI.py").read_text()
    assert "the LAA map \"\n            \"shows over the CT with the lungs outlined (translucent in 3D)" in help_text
    assert "the LAA map over the CT" in (PROJECT / "README.md").read_text()
    from EmphysemaXAILib.mrml.volumes import volume_node_from_ct

    scene, app_logic = bootstrap(fresh=True)
    phantom = generate_phantom(PhantomParams(size="small", seed=21, extent_pct=15, pattern="centrilobular"))
    ct = volume_node_from_ct(scene, phantom.ct, "CT")           # the folder's CT, with no results yet
    nodes = add_case_nodes(scene, ct, _with_attributions(layers_from_folder(folder), ["gradcam", "attention"]),
                           app_logic)
    layout = LayoutRecorder()
    show_results(nodes, layout, app_logic)
    state = _display_state(scene, nodes)
    assert state == {"slices": ("LAA map", None, ct.GetName(), 0.6), "renderings": ["LAA map"],
                     "lung_opacity_3d": pytest.approx(LUNG_OPACITY_3D), "lung_fill_2d": False,
                     "lung_outline_2d": True}
    assert layer_choices(nodes) == [LAA_LAYER, "gradcam", "attention"]
    show_layer(nodes, "attention", opacity=0.3)
    assert _display_state(scene, nodes)["slices"] == ("Attribution attention", None, ct.GetName(), 0.3)
    assert _display_state(scene, nodes)["renderings"] == ["Attribution attention"]
    with pytest.raises(ValueError, match="no 'ig' layer"):
        show_layer(nodes, "ig")
    again = add_case_nodes(scene, ct, _with_attributions(layers_from_folder(folder), ["gradcam"]), app_logic)
    show_results(again, layout, app_logic)                # a re-run: the user's layout stays
    assert len(layout.layouts) == 1 and again["updated"] and not nodes["updated"]
    assert _display_state(scene, again)["slices"][0] == "LAA map"


def test_edits_of_the_result_lungs_are_detected_before_a_run_would_overwrite_them(folder, tmp_path):
    """Apply refills the CT's "Lungs" segmentation: the module must know when the user edited it
    since the run wrote it (issue 26: edits were silently discarded), also after the scene was
    saved and loaded again, and not call an untouched segmentation edited."""
    from EmphysemaXAILib.mrml.module_logic import edited_result_segmentation
    from EmphysemaXAILib.mrml.volumes import volume_node_from_ct

    scene, app_logic = bootstrap(fresh=True)
    phantom = generate_phantom(PhantomParams(size="small", seed=21, extent_pct=15, pattern="centrilobular"))
    ct = volume_node_from_ct(scene, phantom.ct, "CT")
    assert edited_result_segmentation(scene, ct) is None                    # no result yet
    nodes = add_case_nodes(scene, ct, layers_from_folder(folder), app_logic)
    assert edited_result_segmentation(scene, ct) is None                    # as the run wrote it
    segmentation = nodes["segmentation"]
    right = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Right lung")
    voxels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, right, ct)
    z = int(np.flatnonzero(voxels.any(axis=(1, 2)))[len(voxels) // 4])
    voxels[z] = 0                                                            # the user erases one slice
    slicer.util.updateSegmentBinaryLabelmapFromArray(voxels, segmentation, right, ct)
    assert edited_result_segmentation(scene, ct) is segmentation
    path = tmp_path / "scene.mrb"
    assert slicer.util.saveScene(str(path))
    scene2, app_logic2 = bootstrap(fresh=True)
    slicer.util.loadScene(str(path))
    ct2 = scene2.GetFirstNodeByName("CT")
    assert edited_result_segmentation(scene2, ct2) is not None              # still edited after reloading
    again = add_case_nodes(scene2, ct2, layers_from_folder(folder), app_logic2)  # a run replaces it (user asked)
    assert edited_result_segmentation(scene2, ct2) is None
    assert slicer.util.saveScene(str(tmp_path / "again.mrb"))
    scene3, _ = bootstrap(fresh=True)
    slicer.util.loadScene(str(tmp_path / "again.mrb"))
    assert edited_result_segmentation(scene3, scene3.GetFirstNodeByName("CT")) is None   # reloaded, untouched
    assert again["segmentation"].GetAttribute("EmphysemaXAI.writtenDigest")


def test_results_are_filed_under_the_cts_patient_and_study(folder):
    """Subject hierarchy: the results sit beside the CT, in its study (issue 26: they went to
    the scene's top level, away from the patient the DICOM browser filed the CT under)."""
    from EmphysemaXAILib.mrml.volumes import volume_node_from_ct

    scene, app_logic = bootstrap(fresh=True)
    phantom = generate_phantom(PhantomParams(size="small", seed=21, extent_pct=15, pattern="centrilobular"))
    ct = volume_node_from_ct(scene, phantom.ct, "CT")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Anonymous")
    study = hierarchy.CreateStudyItem(patient, "Chest CT study")
    hierarchy.CreateItem(study, ct)          # where the DICOM browser files a series it loads
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct)) == study
    nodes = add_case_nodes(scene, ct, _with_attributions(layers_from_folder(folder), ["gradcam"]), app_logic)
    for node in (nodes["segmentation"], nodes["laa_map"], nodes["qct_table"], nodes["attributions"]["gradcam"]):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study, node.GetName()
    models = {m.GetName() for m in scene.GetNodesByClass("vtkMRMLModelNode")}
    assert not models & {"Right lung", "Left lung", "Airways"}      # no hidden surface copies
