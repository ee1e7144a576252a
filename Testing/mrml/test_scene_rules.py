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
from EmphysemaXAILib.mrml.module_logic import show_attribution  # noqa: E402
from EmphysemaXAILib.mrml.nodes import labels_from_segmentation_node, lung_segmentation_node  # noqa: E402
from EmphysemaXAILib.mrml.scene_export import ROLE_ATTRIBUTE, add_case_nodes  # noqa: E402
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
    placed = [nodes["segmentation"], nodes["laa_map"], nodes["attributions"]["gradcam"], *nodes["surfaces"]]
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
    show_attribution(nodes, "gradcam", app_logic, opacity=0.3, threshold=0.5)
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
