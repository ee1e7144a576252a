"""The module's Apply / Recompute headless: inputs exported from the scene, the analysis in a
child process, its results loaded back beside the CT (slicer-core)."""
import json
import sys
import time

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core (the headless extra) is not installed")

import SimpleITK as sitk  # noqa: E402
import slicer.util  # noqa: E402
import vtk  # noqa: E402
from helpers import table_value, wait_for_run  # noqa: E402

from EmphysemaXAILib.mrml.app import bootstrap  # noqa: E402
from EmphysemaXAILib.mrml.module_logic import (  # noqa: E402
    cancel_analysis,
    export_inputs,
    finish_analysis,
    launch_analysis,
)
from EmphysemaXAILib.mrml.nodes import labels_from_segmentation_node  # noqa: E402
from EmphysemaXAILib.mrml.volumes import volume_node_from_ct  # noqa: E402
from EmphysemaXAILib.options import AnalysisOptions  # noqa: E402
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom  # noqa: E402
from EmphysemaXAILib.pipeline import analyze_case  # noqa: E402

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)

FAST = AnalysisOptions(engine="classical", model="none")


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParams(size="small", seed=8, extent_pct=18, pattern="panlobular", noise_hu=0))


def test_apply_then_recompute_run_in_a_child_process_and_update_the_scene_under_the_cts_transform(phantom, tmp_path):
    scene, app_logic = bootstrap(fresh=True)
    ct = volume_node_from_ct(scene, phantom.ct, "user CT")
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(1, 3, -50.0)
    shift.SetMatrixTransformToParent(matrix)
    ct.SetAndObserveTransformNodeID(shift.GetID())
    before = scene.GetNumberOfNodes()

    run = launch_analysis(ct, None, FAST, python=sys.executable, temp_parent=tmp_path)
    assert run.process.running and (run.work_dir / "ct.nrrd").exists()     # the node's voxels, exported
    wait_for_run(run)
    fractions = [line.fraction for line in run.process.lines if line.fraction is not None]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    nodes = finish_analysis(run, scene, app_logic)
    assert not run.work_dir.exists()                                        # the run's folder is gone
    in_process = analyze_case(phantom.ct, FAST).qct.region("whole")["laa950_pct"]     # the same case, here
    assert table_value(nodes["qct_table"], "region", "whole", "laa950_pct") == pytest.approx(in_process, rel=1e-4)
    assert in_process == pytest.approx(phantom.truth["extent_pct"], abs=1.0)
    assert nodes["laa_map"].GetTransformNodeID() == shift.GetID()
    assert nodes["segmentation"].GetTransformNodeID() == shift.GetID()
    labels = labels_from_segmentation_node(nodes["segmentation"], ct)
    assert np.array_equal(labels > 0, phantom.labels["lungs"] > 0) or (
        np.logical_and(labels > 0, phantom.labels["lungs"] > 0).sum() / max((phantom.labels["lungs"] > 0).sum(), 1)
        > 0.95)
    count = scene.GetNumberOfNodes()
    assert count > before

    # the user erases the lower half of the right lung in the result segmentation, then Recompute
    segmentation = nodes["segmentation"]
    edited = labels.copy()
    edited[: edited.shape[0] // 2][edited[: edited.shape[0] // 2] == 1] = 0
    segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Right lung")
    slicer.util.updateSegmentBinaryLabelmapFromArray((edited == 1).astype(np.uint8), segmentation, segment_id, ct)
    assert np.array_equal(labels_from_segmentation_node(segmentation, ct), edited)   # as the user sees it
    # the re-run adds no node (counted after the edit: slicer.util.updateSegmentBinaryLabelmapFromArray
    # itself leaves a labelmap display node behind on each call)
    count = scene.GetNumberOfNodes()
    run = launch_analysis(ct, segmentation, FAST, python=sys.executable, temp_parent=tmp_path)
    wait_for_run(run)
    again = finish_analysis(run, scene, app_logic)
    assert again["segmentation"] is segmentation                            # updated results, same segmentation
    assert again["qct_table"].GetID() == nodes["qct_table"].GetID()
    expected = analyze_case(phantom.ct, FAST, lung_mask=edited).qct.region("right")      # the edited lungs, here
    assert table_value(again["qct_table"], "region", "right", "volume_l") == pytest.approx(expected["volume_l"],
                                                                                           rel=1e-6)
    assert expected["volume_l"] < 0.7 * analyze_case(phantom.ct, FAST).qct.region("right")["volume_l"]
    labmap = slicer.util.arrayFromVolume(again["laa_map"])
    assert not labmap[: edited.shape[0] // 2][edited[: edited.shape[0] // 2] == 0].any()   # nothing where erased
    assert scene.GetNumberOfNodes() <= count


def test_a_volume_read_from_a_file_is_analysed_from_that_file_with_acquisition_facts_passed(phantom, tmp_path):
    scene, _ = bootstrap(fresh=True)
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(phantom.ct.to_sitk(), str(path))
    node = slicer.util.loadVolume(str(path))
    files = export_inputs(node, None, None, tmp_path)
    assert files["input"] == path and files["lung_mask"] is None and files["acquisition"] is None
    slicer.util.arrayFromVolume(node)[0, 0, 0] = 100
    slicer.util.arrayFromVolumeModified(node)                                # edited in Slicer: exported instead
    files = export_inputs(node, None, None, tmp_path)
    assert files["input"] == tmp_path / "ct.nrrd" and sitk.ReadImage(str(files["input"])).GetSize()


def test_a_failed_run_raises_its_one_line_reason_and_cancel_cleans_up(phantom, tmp_path):
    scene, app_logic = bootstrap(fresh=True)
    ct = volume_node_from_ct(scene, phantom.ct, "CT")
    run = launch_analysis(ct, None, AnalysisOptions(engine="classical", model=str(tmp_path / "no-model")),
                          python=sys.executable, temp_parent=tmp_path)
    wait_for_run(run)
    with pytest.raises(RuntimeError, match="no-model"):
        finish_analysis(run, scene, app_logic)
    assert not run.work_dir.exists()
    run = launch_analysis(ct, None, FAST, python=sys.executable, temp_parent=tmp_path)
    started = time.monotonic()
    cancel_analysis(run)
    assert time.monotonic() - started < 2.0 and not run.process.running and not run.work_dir.exists()
    assert json.dumps(run.process.returncode) != "0"


LAUNCHER_SHIM = """#!{python}
# like Slicer's PythonSlicer (a CTK AppLauncher): the real interpreter runs as this process's
# child, and SIGTERM ends the launcher without being forwarded to it
import subprocess, sys
sys.exit(subprocess.call([{python!r}, *sys.argv[1:]]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the launcher shim is a POSIX script")
def test_cancel_through_a_launcher_leaves_no_interpreter_running(phantom, tmp_path):
    """Cancel from the module (cancel_analysis: stop, then remove the run's folder) with the
    analysis behind a launcher: the interpreter must be gone within 2 s of Cancel (before issue 26
    the launcher was terminated and the stop file removed before the interpreter saw it)."""
    from EmphysemaXAILib.io.signals import pid_alive, pid_file_of

    shim = tmp_path / "PythonSlicer"
    shim.write_text(LAUNCHER_SHIM.format(python=sys.executable))
    shim.chmod(0o755)
    scene, _ = bootstrap(fresh=True)
    ct = volume_node_from_ct(scene, phantom.ct, "CT")
    for attempt in range(2):
        run = launch_analysis(ct, None, FAST, python=str(shim), temp_parent=tmp_path)
        pid_file = pid_file_of(run.work_dir / "stop")
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert run.process.running and time.monotonic() < deadline, [line.text for line in run.process.poll()]
            time.sleep(0.02)
        interpreter = int(pid_file.read_text())
        assert interpreter != run.process._process.pid          # the launcher's child, not the launcher
        time.sleep(0.5 * attempt)                               # cancel at start-up and while it imports / reads
        started = time.monotonic()
        cancel_analysis(run)
        assert time.monotonic() - started < 2.0
        assert not pid_alive(interpreter) and not run.process.running and not run.work_dir.exists()


def test_process_directory_runs_the_batch_in_its_own_process_and_leaves_the_users_scene_alone(phantom, tmp_path):
    from EmphysemaXAILib.mrml.module_logic import process_directory

    scene, _ = bootstrap()
    user = volume_node_from_ct(scene, phantom.ct, "the user's CT")
    layout = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
    modified = scene.GetMTime()
    root = tmp_path / "cohort"
    root.mkdir()
    sitk.WriteImage(phantom.ct.to_sitk(), str(root / "a.nrrd"))
    (root / "b.nrrd").write_bytes(b"not an image")
    lines = []
    rows = process_directory(root, tmp_path / "out", FAST, scene=True, report=False, python=sys.executable,
                             log=lines.append)
    assert [(r["case_id"], r["status"]) for r in rows] == [("a", "ok"), ("b", "failed")]
    here = analyze_case(phantom.ct, FAST).qct.region("whole")["laa950_pct"]
    assert float(rows[0]["laa950_pct"]) == pytest.approx(here, rel=1e-4)
    assert (tmp_path / "out" / "cases" / "a" / "scene.mrb").exists()        # each case's own scene, in the child
    assert [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())] == layout
    assert scene.GetMTime() == modified and user.GetScene() is scene
    assert any("a" in line for line in lines)


def test_console_batch_writes_what_slicer_can_and_stops_before_starting_when_a_choice_cannot_run():
    """processDirectory as typed from the README in a fresh Slicer (issue 26: every case failed at
    scene export in PythonSlicer, and the default report needed matplotlib, which Slicer lacks)."""
    from EmphysemaXAILib.mrml.module_logic import batch_outputs

    slicer_python = lambda name: name not in ("matplotlib", "tqdm", "torch", "lungmask", "distributed")  # noqa: E731
    scene, report, notes = batch_outputs(FAST, in_application=True, installed=slicer_python)
    assert (scene, report) == (False, False) and len(notes) == 2
    assert "loadResults" in notes[0] and "matplotlib is not installed" in notes[1]
    assert batch_outputs(FAST, in_application=False, installed=lambda name: True)[:2] == (True, True)
    assert batch_outputs(FAST, scene=True, report=False, in_application=True, installed=slicer_python) == \
        (True, False, [])                                          # explicit choices are kept
    with pytest.raises(RuntimeError, match="cannot start: distributed"):
        batch_outputs(FAST, workers=2, in_application=True, installed=slicer_python)
    with pytest.raises(RuntimeError, match="cannot start: torch"):
        batch_outputs(AnalysisOptions(engine="lungmask", model="none"), in_application=True, installed=slicer_python)


def test_a_polled_console_batch_can_be_cancelled_and_keeps_its_finished_cases(phantom, tmp_path):
    from EmphysemaXAILib.mrml.module_logic import process_directory

    root = tmp_path / "cohort"
    root.mkdir()
    names = ("a", "b", "c", "d", "e")
    for name in names:
        sitk.WriteImage(phantom.ct.to_sitk(), str(root / f"{name}.nrrd"))
    polls = []

    def finished():
        cases = tmp_path / "out" / "cases"
        return [p.name for p in cases.iterdir() if (p / "summary.json").exists()] if cases.is_dir() else []

    def poll(lines):                               # the module's dialog: Cancel once the first case is done
        polls.append(time.monotonic())
        return bool(finished()) or len(polls) > 3000

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="cancelled; finished cases are kept"):
        process_directory(root, tmp_path / "out", FAST, scene=False, report=False, python=sys.executable,
                          poll=poll, log=lambda text: None)
    assert len(polls) >= 0.5 * (polls[-1] - started) / 0.1        # polled about ten times a second
    done = finished()
    assert 1 <= len(done) < len(names)
    assert all(json.loads((tmp_path / "out" / "cases" / name / "summary.json").read_text()) for name in done)
