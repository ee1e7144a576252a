"""The MRML layer on the real Slicer core (headless): segmentation, tables, overlay, scene.mrb."""
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("slicer", reason="slicer-core (the headless extra) is not installed")

import slicer.util  # noqa: E402
import vtk  # noqa: E402

from EmphysemaXAILib.analysis.qct import measure_qct  # noqa: E402
from EmphysemaXAILib.app.case_files import write_case  # noqa: E402
from EmphysemaXAILib.mrml.app import bootstrap  # noqa: E402
from EmphysemaXAILib.mrml.nodes import LUNG_SEGMENTS, labels_from_segmentation_node  # noqa: E402
from EmphysemaXAILib.mrml.scene_export import build_case_scene  # noqa: E402
from EmphysemaXAILib.options import AnalysisOptions  # noqa: E402
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom  # noqa: E402
from EmphysemaXAILib.phantom.io import write_phantom  # noqa: E402
from EmphysemaXAILib.pipeline import analyze_case  # noqa: E402


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    phantom = generate_phantom(PhantomParams(size="small", seed=14, extent_pct=12, pattern="mixed"))
    folder = write_phantom(phantom, tmp_path_factory.mktemp("p") / "ph", fmt="nrrd")
    return analyze_case(folder / "ct.nrrd", AnalysisOptions(engine="classical"))


def test_bootstrap_is_idempotent_and_publishes_the_slicer_objects():
    scene, app_logic = bootstrap()
    assert bootstrap() == (scene, app_logic)
    assert slicer.mrmlScene is scene and slicer.app.mrmlScene() is scene
    assert slicer.modules.segmentations.logic() is not None
    fresh, _ = bootstrap(fresh=True)
    assert fresh is not scene and slicer.mrmlScene is fresh


def test_case_nodes_geometry_segments_and_tables(case):
    scene, app_logic = bootstrap(fresh=True)
    nodes = build_case_scene(case, scene, app_logic)
    ct_node = nodes["ct"]
    matrix = vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(matrix)
    lps = case.ct.index_to_lps((10, 20, 30))
    assert matrix.MultiplyPoint((30, 20, 10, 1))[:3] == pytest.approx([-lps[0], -lps[1], lps[2]], abs=1e-6)
    segmentation = nodes["segmentation"].GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    # the classical engine's airways (trachea, main and lobar bronchi) are their own segment
    assert case.segmentation.airways is not None and case.segmentation.airways.any()
    assert names == list(LUNG_SEGMENTS) + ["Airways"]
    assert "SCT^89187006^Airway structure" in segmentation.GetNthSegment(2).GetTerminology()
    airway_id = segmentation.GetSegmentIdBySegmentName("Airways")
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(nodes["segmentation"], airway_id, ct_node) > 0,
                          case.segmentation.airways)
    assert "SCT^39607008^Lung" in segmentation.GetNthSegment(0).GetTerminology()
    assert "SCT^24028007^Right" in segmentation.GetNthSegment(0).GetTerminology()
    assert nodes["segmentation"].GetClosedSurfaceInternalRepresentation("Right_lung").GetNumberOfPoints() > 100
    # the segmentation gives back exactly the labels it was made from
    assert np.array_equal(labels_from_segmentation_node(nodes["segmentation"], ct_node), case.segmentation.labels)
    table = slicer.util.dataframeFromTable(nodes["qct_table"])
    expected = case.qct.dataframe()
    assert list(table["region"]) == list(expected["region"])
    assert np.allclose(table["laa950_pct"].astype(float), expected["laa950_pct"].astype(float))
    assert nodes["qct_table"].GetColumnUnitLabel("perc15_hu") == "HU"
    laa_display = nodes["laa_map"].GetDisplayNode()
    assert laa_display.GetColorNodeID() == nodes["laa_colors"].GetID()
    assert np.array_equal(slicer.util.arrayFromVolume(nodes["laa_map"]), case.qct.laa_map)
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == nodes["laa_map"].GetID()
    assert composite.GetBackgroundVolumeID() == ct_node.GetID()
    assert nodes["laa_rendering"].IsA("vtkMRMLVolumeRenderingDisplayNode")
    assert laa_display.GetApplyThreshold() and laa_display.GetLowerThreshold() == 0.5
    segmentation = nodes["segmentation"].GetSegmentation()
    surfaces = {segmentation.GetNthSegment(i).GetName():
                nodes["segmentation"].GetClosedSurfaceInternalRepresentation(segmentation.GetNthSegmentID(i))
                .GetNumberOfPoints() for i in range(segmentation.GetNumberOfSegments())}
    assert set(surfaces) == {"Right lung", "Left lung", "Airways"} and min(surfaces.values()) > 100
    models = {m.GetName() for m in scene.GetNodesByClass("vtkMRMLModelNode")}
    assert not models & set(surfaces)                          # no hidden copies that go stale after edits


def test_recompute_qct_from_an_edited_segmentation(case):
    scene, app_logic = bootstrap(fresh=True)
    nodes = build_case_scene(case, scene, app_logic)
    labels = labels_from_segmentation_node(nodes["segmentation"], nodes["ct"])
    edited = labels.copy()
    top = np.flatnonzero((labels == 1).any(axis=(1, 2)))[-10:]
    edited[top] = np.where(edited[top] == 1, 0, edited[top])  # the user erases the right apex
    slicer.util.updateSegmentBinaryLabelmapFromArray((edited == 1).astype(np.uint8), nodes["segmentation"],
                                                     "Right_lung", nodes["ct"])
    again = labels_from_segmentation_node(nodes["segmentation"], nodes["ct"])
    assert np.array_equal(again, edited)
    before = case.qct.region("right")["voxels"]
    after = measure_qct(case.ct, again).region("right")["voxels"]
    assert after == before - int(((labels == 1) & (edited == 0)).sum())


def test_analyze_writes_a_scene_that_reloads_whole(case, tmp_path):
    out = write_case(case, tmp_path / "out")
    names = sorted(p.name for p in out.iterdir())
    # the shipped model is a pattern model
    assert names == ["airways.nrrd", "laa_map.nrrd", "lung_labels.nrrd", "lungs.seg.nrrd", "pattern_map.nrrd",
                     "patterns.csv", "qct.csv", "report.html", "scene.mrb", "summary.json"]
    scene, _ = bootstrap(fresh=True)
    slicer.util.loadScene(str(out / "scene.mrb"))
    volumes = {n.GetName(): n for n in scene.GetNodesByClass("vtkMRMLScalarVolumeNode")}
    assert set(volumes) == {"CT", "LAA map", "Pattern map"}
    assert np.array_equal(slicer.util.arrayFromVolume(volumes["CT"]), case.ct.hu)
    assert np.array_equal(slicer.util.arrayFromVolume(volumes["LAA map"]), case.qct.laa_map)
    assert volumes["LAA map"].GetDisplayNode().GetColorNode().GetName() == "EmphysemaXAI LAA"
    tables = {n.GetName(): n for n in scene.GetNodesByClass("vtkMRMLTableNode")}
    assert set(tables) == {"QCT", "Severity", "Quality control", "Patterns"}
    csv = pd.read_csv(out / "qct.csv")
    reloaded = slicer.util.dataframeFromTable(tables["QCT"])
    assert np.allclose(reloaded["mean_hu"].astype(float), csv["mean_hu"])
    segmentation = scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    assert np.array_equal(labels_from_segmentation_node(segmentation, volumes["CT"]), case.segmentation.labels)
    assert scene.GetFirstNodeByClass("vtkMRMLVolumeRenderingDisplayNode") is not None
    assert not {n.GetName() for n in scene.GetNodesByClass("vtkMRMLModelNode")} & {"Right lung", "Left lung"}
    html = (out / "report.html").read_text()
    assert "Rendered by Slicer: 3D view, axial slice view, coronal slice view." in html
    # + Slicer's views, the CNN's map, the pattern map
    assert "Slicer views" in html and html.count("data:image/png;base64,") == 6
    assert "CNN severity" in html
    # the segmentation file alone loads as a segmentation too
    seg_node = slicer.util.loadSegmentation(str(out / "lungs.seg.nrrd"))
    assert seg_node.GetSegmentation().GetNumberOfSegments() == 3  # right, left lung, airways


def test_slice_views_render_headless_with_the_overlay_colours(case, tmp_path):
    from EmphysemaXAILib.mrml.render import ras_offset, render_slice

    scene, app_logic = bootstrap(fresh=True)
    build_case_scene(case, scene, app_logic)
    laa = case.qct.laa_map
    k = int(np.argmax((laa > 0).sum(axis=(1, 2))))
    image = render_slice(app_logic, "Red", ras_offset(case.ct, (k, 0, 0), "Red"), tmp_path / "axial.png", 300)
    assert (tmp_path / "axial.png").stat().st_size > 5000
    rgb = image[..., :3].astype(int)
    assert image.shape == (300, 300, 4) and rgb.std() > 20  # not blank
    # the CT is grey; the LAA overlay (60 % over it) is the only saturated colour in the view
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    assert coloured.sum() > 500
    empty = np.flatnonzero(~(laa > 0).any(axis=(1, 2)))[-1]  # a slice above the lungs: no LAA
    above = render_slice(app_logic, "Red", ras_offset(case.ct, (empty, 0, 0), "Red"), None, 300)[..., :3].astype(int)
    assert ((above.max(axis=2) - above.min(axis=2)) > 60).sum() == 0


def test_slicer_module_path_volume_node_in_results_in_the_same_scene(case):
    """What the module's logic does: CT from the user's volume node, results added beside it."""
    from EmphysemaXAILib.mrml.volumes import ct_from_volume_node, volume_node_from_ct

    scene, app_logic = bootstrap(fresh=True)
    user_node = volume_node_from_ct(scene, case.ct, "chest CT")
    ct = ct_from_volume_node(user_node)
    result = analyze_case(ct, AnalysisOptions(engine="classical"))
    assert result.input_path == "(in memory)"
    assert result.qct.region("whole")["laa950_pct"] == case.qct.region("whole")["laa950_pct"]
    nodes = build_case_scene(result, scene, app_logic, ct_node=user_node)
    assert nodes["ct"] is user_node
    assert scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 3  # user CT, LAA and pattern maps
    edited = labels_from_segmentation_node(nodes["segmentation"], user_node)
    again = analyze_case(ct, lung_mask=edited)  # "Recompute from edited segmentation"
    assert again.segmentation.engine_used == "file"
    assert again.qct.region("whole")["voxels"] == case.qct.region("whole")["voxels"]


def test_3d_view_renders_offscreen_with_the_laa_clusters(case, tmp_path):
    from EmphysemaXAILib.mrml.render import render_3d

    scene, app_logic = bootstrap(fresh=True)
    nodes = build_case_scene(case, scene, app_logic)
    nodes["segmentation"].GetDisplayNode().SetOpacity3D(0.25)
    image = render_3d(scene, app_logic, tmp_path / "view3d.png", size=300)
    assert image.shape == (300, 300, 3) and (tmp_path / "view3d.png").stat().st_size > 5000
    rgb = image.astype(int)
    saturated = (rgb.max(axis=2) - rgb.min(axis=2)) > 80  # volume-rendered LAA / pattern colours
    assert saturated.sum() > 2000
    nodes["laa_rendering"].SetVisibility(False)
    nodes["pattern_rendering"].SetVisibility(False)
    without = render_3d(scene, app_logic, None, size=300).astype(int)
    assert ((without.max(axis=2) - without.min(axis=2)) > 80).sum() < 0.2 * saturated.sum()


def test_slicer_module_path_with_a_coronally_stored_volume_node(case):
    """A user's volume node stored coronally: the analysis runs on the canonical grid, the
    result nodes lie on the user's node grid (the segmentation and LAA map overlay the CT
    voxel for voxel), and a recompute from that segmentation gives the same numbers."""
    import SimpleITK as sitk

    from EmphysemaXAILib.mrml.volumes import ct_from_volume_node, volume_node_from_ct
    from EmphysemaXAILib.volume import CTVolume

    image = sitk.Flip(sitk.PermuteAxes(case.ct.to_sitk(), [0, 2, 1]), [False, True, False])
    coronal = CTVolume(hu=sitk.GetArrayFromImage(image), spacing=image.GetSpacing(), origin=image.GetOrigin(),
                       direction=image.GetDirection())
    scene, app_logic = bootstrap(fresh=True)
    user_node = volume_node_from_ct(scene, coronal, "coronal chest CT")
    result = analyze_case(ct_from_volume_node(user_node), AnalysisOptions(engine="classical", model="none"))
    assert result.ct.orientation is not None and not result.ct.orientation.identity
    for region in ("whole", "upper", "lower", "right_lower"):
        assert result.qct.region(region)["laa950_pct"] == pytest.approx(case.qct.region(region)["laa950_pct"], abs=0.01)
    nodes = build_case_scene(result, scene, app_logic, ct_node=user_node)
    on_user_grid = labels_from_segmentation_node(nodes["segmentation"], user_node)
    assert on_user_grid.shape == coronal.shape
    expected = sitk.GetArrayFromImage(sitk.Flip(sitk.PermuteAxes(
        sitk.GetImageFromArray(case.segmentation.labels), [0, 2, 1]), [False, True, False]))
    assert np.array_equal(on_user_grid, expected)
    laa = slicer.util.arrayFromVolume(nodes["laa_map"])
    cut = result.qct.laa_map_threshold["raw_hu"]  # -950 HU calibrated, in the scan's raw HU
    assert laa.shape == coronal.shape and np.array_equal(laa > 0, (coronal.hu <= cut) & (expected > 0))
    again = analyze_case(ct_from_volume_node(user_node), AnalysisOptions(model="none"), lung_mask=on_user_grid)
    assert again.qct.region("whole")["voxels"] == case.qct.region("whole")["voxels"]
