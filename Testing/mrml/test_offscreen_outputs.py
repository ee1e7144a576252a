"""What writing a case's outputs does to save time and memory: the 3D view's volume renderings
from a strided copy through the CPU ray caster, segment masks handed over without copies, the
headless scene freed once saved."""
import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core (the headless extra) is not installed")

import slicer.util  # noqa: E402
import vtk  # noqa: E402

from EmphysemaXAILib.mrml import app as mrml_app  # noqa: E402
from EmphysemaXAILib.mrml import render  # noqa: E402
from EmphysemaXAILib.mrml.app import bootstrap, release_scene  # noqa: E402
from EmphysemaXAILib.mrml.nodes import laa_color_node, lung_segmentation_node, volume_rendering  # noqa: E402
from EmphysemaXAILib.mrml.render import coarsen_volume_renderings, render_stride, use_cpu_ray_casting  # noqa: E402
from EmphysemaXAILib.mrml.volumes import volume_node_from_ct  # noqa: E402
from EmphysemaXAILib.volume import CTVolume  # noqa: E402


def _ct(shape=(20, 30, 40)):
    hu = np.full(shape, -800, np.int16)
    return CTVolume(hu=hu, spacing=(0.7, 0.8, 1.5), origin=(-10.0, 20.0, -30.0),
                    direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def test_render_stride():
    assert render_stride((400, 512, 512)) == 2
    assert render_stride((200, 256, 256)) == 1
    assert render_stride((10, 513, 20)) == 3
    assert render_stride((400, 512, 512), max_per_axis=128) == 4


def _ras_of_voxel(node, ijk):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array(matrix.MultiplyPoint((*ijk, 1.0))[:3])


def test_coarsened_rendering_keeps_position_labels_and_hidden_volumes():
    scene, _ = bootstrap(fresh=True)
    ct_node = volume_node_from_ct(scene, _ct(), "CT")
    colors = laa_color_node(scene)
    values = np.zeros((20, 30, 40), np.uint8)
    values[4:12, 6:20, 8:30] = 3
    shown = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "shown")
    hidden = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hidden")
    for node in (shown, hidden):
        node.CopyOrientation(ct_node)
        slicer.util.updateVolumeFromArray(node, values)
    volume_rendering(shown, colors)
    volume_rendering(hidden, colors).SetVisibility(False)
    corner = _ras_of_voxel(shown, (0, 0, 0))
    far = _ras_of_voxel(shown, (36, 28, 18))  # a voxel the stride keeps: (x, y, z) all even
    assert coarsen_volume_renderings(scene, max_per_axis=20) == [shown]
    coarse = slicer.util.arrayFromVolume(shown)
    assert coarse.shape == (10, 15, 20) and set(np.unique(coarse)) == {0, 3}
    assert np.array_equal(coarse, values[::2, ::2, ::2])
    assert np.allclose(_ras_of_voxel(shown, (0, 0, 0)), corner)
    assert np.allclose(_ras_of_voxel(shown, (18, 14, 9)), far)
    assert slicer.util.arrayFromVolume(hidden).shape == values.shape  # not rendered: untouched


def test_cpu_ray_casting_replaces_the_visible_gpu_renderings():
    scene, _ = bootstrap(fresh=True)
    ct_node = volume_node_from_ct(scene, _ct(), "CT")
    colors = laa_color_node(scene)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "overlay")
    node.CopyOrientation(ct_node)
    slicer.util.updateVolumeFromArray(node, np.ones((20, 30, 40), np.uint8))
    gpu = volume_rendering(node, colors)
    added = use_cpu_ray_casting(scene)
    assert len(added) == 1 and added[0].IsA("vtkMRMLCPURayCastVolumeRenderingDisplayNode")
    assert added[0].GetVisibility() and not gpu.GetVisibility()
    assert added[0].GetVolumePropertyNodeID() == gpu.GetVolumePropertyNodeID()
    assert added[0].GetVolumeNode() is node


def test_segments_from_masks_without_copies_give_the_labels_back():
    scene, _ = bootstrap(fresh=True)
    ct_node = volume_node_from_ct(scene, _ct(), "CT")
    labels = np.zeros((20, 30, 40), np.uint8)
    labels[3:15, 5:25, 4:18] = 1
    labels[3:15, 5:25, 22:36] = 2
    airways = np.zeros(labels.shape, bool)
    airways[2:10, 14:16, 19:21] = True
    node = lung_segmentation_node(scene, ct_node, labels, airways=airways)
    segmentation = node.GetSegmentation()
    for name, expected in (("Right lung", labels == 1), ("Left lung", labels == 2), ("Airways", airways)):
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, ct_node) > 0, expected)
    assert segmentation.GetConversionParameter("Conversion method") == "1"
    assert node.GetClosedSurfaceInternalRepresentation("Right_lung").GetNumberOfPoints() > 100


def test_release_scene_frees_the_headless_scene_only():
    scene, _ = bootstrap(fresh=True)
    volume_node_from_ct(scene, _ct(), "CT")
    release_scene(object())  # not the bootstrap's scene: nothing happens
    assert scene.GetFirstNodeByName("CT") is not None
    release_scene(scene)
    assert scene.GetFirstNodeByName("CT") is None and not mrml_app._STATE
    fresh, _ = bootstrap()
    assert fresh is not scene and fresh.GetNodesByClass("vtkMRMLSliceNode").GetNumberOfItems() == 3


def test_set_voxels_lends_inside_shared_voxels_and_copies_outside():
    from EmphysemaXAILib.mrml.volumes import set_voxels, shared_voxels

    scene, _ = bootstrap(fresh=True)
    values = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    copied = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "copied")
    set_voxels(copied, values)
    assert not np.shares_memory(slicer.util.arrayFromVolume(copied), values)
    with shared_voxels():
        lent = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "lent")
        set_voxels(lent, values)
        assert np.shares_memory(slicer.util.arrayFromVolume(lent), values)
        assert np.array_equal(slicer.util.arrayFromVolume(lent), values)
        scene.RemoveNode(lent)
    assert np.array_equal(slicer.util.arrayFromVolume(copied), values)


def test_written_case_leaves_the_result_arrays_as_they_were(tmp_path, monkeypatch):
    """The scene export lends the result's arrays to its nodes and coarsens the rendered ones:
    the arrays the report and the NRRDs use afterwards must not change."""
    from EmphysemaXAILib.app.case_files import write_case
    from EmphysemaXAILib.options import AnalysisOptions
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
    from EmphysemaXAILib.phantom.io import write_phantom
    from EmphysemaXAILib.pipeline import analyze_case

    phantom = generate_phantom(PhantomParams(size="small", seed=21, extent_pct=10, pattern="mixed"))
    folder = write_phantom(phantom, tmp_path / "ph", fmt="nrrd")
    result = analyze_case(folder / "ct.nrrd", AnalysisOptions(engine="classical", explain=("gradcam",)))
    arrays = {"ct": result.ct.hu, "labels": result.segmentation.labels, "laa": result.qct.laa_map}
    arrays.update({method: e.volume for method, e in result.explanations.items()})
    coarsen = render.coarsen_volume_renderings  # coarsen this small case too (stride 3)
    monkeypatch.setattr(render, "coarsen_volume_renderings", lambda scene: coarsen(scene, max_per_axis=48))
    before = {name: array.copy() for name, array in arrays.items()}
    out = write_case(result, tmp_path / "out")
    assert all(np.array_equal(arrays[name], before[name]) for name in arrays)
    assert {"scene.mrb", "lungs.seg.nrrd", "report.html", "laa_map.nrrd"} <= {p.name for p in out.iterdir()}
    assert not mrml_app._STATE  # the headless scene was freed once written
