"""What the Slicer module's logic does with the scene, without Qt: inputs from nodes, the sample
phantom, and how results are shown (layout, slice-view layers, attribution styling).

MRML layer: imports ``slicer`` (the application's, or the slicer-core wheel headless), never
``qt`` / ``ctk``. The module file (``EmphysemaXAI.py``) keeps only thin delegates to these.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..app.analysis_process import AnalysisProcess, analysis_command, child_environment, new_work_dir
from .dicom_results import dicom_source_folder, keep_dicom_results

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


def edited_result_segmentation(scene, ct_node):
    """``ct_node``'s result segmentation (the one a run wrote, found by its role) when the user
    edited it since (:mod:`.edits`), else None: Apply asks before it would overwrite it."""
    from .edits import edited_since_written
    from .scene_export import result_nodes

    node = result_nodes(scene, ct_node).get("segmentation")
    return node if node is not None and edited_since_written(node) else None


def show_results(nodes: dict, layout_manager, app_logic) -> None:
    """A finished result in the views: the QCT table in a four-up + table layout (the layout is
    changed for a CT's first result only: a re-run keeps the layout the user chose). The slice
    and 3D views already show :func:`.views.default_display`: the nodes were made by
    :func:`~.scene_export.add_case_nodes`, which ends with it."""
    import slicer

    if "qct_table" in nodes:
        if not nodes.get("updated"):
            layout_manager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        app_logic.GetSelectionNode().SetActiveTableID(nodes["qct_table"].GetID())
        app_logic.PropagateTableSelection()


# -- the analysis as a child process (the module's Apply / Recompute)


@dataclass
class AnalysisRun:
    """One analysis launched from the scene: its child process, its private folder (exported
    inputs, options, the outputs in ``work_dir / "out"``) and the nodes it belongs to."""

    process: AnalysisProcess
    work_dir: Path
    volume_node: object
    segmentation_node: object = None       # the segmentation the lungs came from (Recompute, or the user's)
    dicom: bool = False                    # --dicom-out: DICOM SEG + SR in out/dicom
    dicom_results: dict | None = None      # after finish_analysis: where they went (keep_dicom_results)

    @property
    def out_dir(self) -> Path:
        return self.work_dir / "out"


def export_inputs(volume_node, segmentation_node, dicom_database, work: Path) -> dict:
    """The files the child process reads, on the volume node's voxel grid: ``input`` (the file
    the node was read from when it is unmodified and a volume file the reader takes; else the
    node's voxels written to ``work/ct.nrrd``), ``lung_mask`` (the segmentation's lungs, or
    None) and ``acquisition`` (a JSON of the acquisition facts of the DICOM files behind a
    volume the DICOM browser loaded, or None). GUI thread only (reads MRML)."""
    import SimpleITK as sitk

    from ..io.files import VOLUME_SUFFIXES, image_suffix
    from ..phantom.io import save_label
    from .nodes import labels_from_segmentation_node
    from .volumes import ct_from_volume_node

    if not volume_node or volume_node.GetImageData() is None:
        raise ValueError("Input volume is invalid: select a chest CT volume")
    storage = volume_node.GetStorageNode()
    source = Path(storage.GetFileName()) if storage is not None and storage.GetFileName() else None
    ct = None
    if (source is not None and source.is_file() and image_suffix(source) in VOLUME_SUFFIXES
            and not volume_node.GetModifiedSinceRead()):
        files = {"input": source}
    else:
        ct = ct_from_volume_node(volume_node)
        files = {"input": work / "ct.nrrd"}
        sitk.WriteImage(ct.to_sitk(), str(files["input"]), useCompression=False)  # a scratch copy: speed first
    files["lung_mask"] = None
    if segmentation_node is not None:
        ct = ct or ct_from_volume_node(volume_node)
        files["lung_mask"] = work / "lung_mask.nrrd"
        save_label(labels_from_segmentation_node(segmentation_node, volume_node), ct, files["lung_mask"])
    facts = dicom_acquisition(volume_node, dicom_database)
    files["acquisition"] = None
    if facts:
        files["acquisition"] = work / "acquisition.json"
        files["acquisition"].write_text(json.dumps(facts, default=str), encoding="utf-8")
    return files


def launch_analysis(volume_node, segmentation_node, options, dicom_database=None, *, python=None, popen=None,
                    temp_parent=None, dicom: bool = False) -> AnalysisRun:
    """Export the inputs and start ``analyze`` in a child process (Slicer's own Python:
    ``PythonSlicer`` in the application, ``sys.executable`` headless); returns at once.
    ``segmentation_node``: lungs to use instead of the engine (the user's, or the edited result).
    ``dicom``: also DICOM SEG + SR (``--dicom-out``); for a volume the DICOM browser loaded (and
    unmodified) the child then reads the DICOM files themselves (:func:`dicom_source_folder`), so
    the SEG and SR reference the source series instead of a derived copy.
    Poll ``run.process``; then :func:`finish_analysis` on the GUI thread."""
    work = new_work_dir(temp_parent)
    try:
        files = export_inputs(volume_node, segmentation_node, dicom_database, work)
        source = dicom_source_folder(volume_node, dicom_database, work) if dicom else None
        command = analysis_command(python or analysis_python(), source or files["input"], work / "out", options,
                                   work, lung_mask=files["lung_mask"], acquisition=files["acquisition"], report=False,
                                   dicom=dicom)
        process = AnalysisProcess(command, stop_file=work / "stop", popen=popen or slicer_popen()).start()
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return AnalysisRun(process, work, volume_node, segmentation_node, dicom=dicom)


def finish_analysis(run: AnalysisRun, scene, app_logic=None, dicom_import=None, dicom_keep_dir=None) -> dict:
    """The finished run's results as nodes beside its CT (earlier results of that CT updated,
    under the CT's transform; the segmentation the lungs came from kept); removes the run's
    folder, after its DICOM results were imported or kept (:func:`keep_dicom_results`, recorded in
    ``run.dicom_results``). Raises RuntimeError with the child's one-line reason when the run failed."""
    from .load_results import load_case_folder

    try:
        if run.process.returncode != 0:
            raise RuntimeError(run.process.error_message())
        nodes = load_case_folder(run.out_dir, scene, app_logic, ct_node=run.volume_node,
                                 segmentation_node=run.segmentation_node)
        run.dicom_results = keep_dicom_results(run, dicom_import, dicom_keep_dir)
        return nodes
    finally:
        shutil.rmtree(run.work_dir, ignore_errors=True)


def cancel_analysis(run: AnalysisRun) -> None:
    """Stop the run's process (within 2 s) and remove its folder."""
    try:
        run.process.cancel()
    finally:
        shutil.rmtree(run.work_dir, ignore_errors=True)


def analysis_python() -> str:
    """Slicer's own Python for the child process: ``PythonSlicer`` in the application (found on
    PATH, as ``slicer.util._executePythonModule`` finds it), this interpreter headless."""
    import sys

    from .app import in_slicer_application

    if in_slicer_application():
        found = shutil.which("PythonSlicer")
        if not found:
            raise RuntimeError("PythonSlicer was not found on PATH: run the analysis from the command line instead")
        return found
    return sys.executable


def slicer_popen():
    """How to start the child: ``slicer.util.launchConsoleProcess`` in the application (Slicer's
    environment, no console window), else None (the launcher's default, ``subprocess.Popen``)."""
    from .app import in_slicer_application

    if not in_slicer_application():
        return None
    import slicer.util

    extra = {key: value for key, value in child_environment().items() if key in ("PYTHONPATH", "PYTHONUNBUFFERED")}
    return lambda command: slicer.util.launchConsoleProcess(command, useStartupEnvironment=False,
                                                            updateEnvironment=extra)


def batch_outputs(options, *, workers: int = 1, scene=None, report=None, in_application=None,
                  installed=None) -> tuple[bool, bool, list[str]]:
    """(scene, report, notes) for a cohort run from the Slicer module's logic, checked before it
    starts. ``scene`` None: built where it can be (headless), not in the Slicer application,
    whose ``PythonSlicer`` child lacks the loadable-module logics the scene builder needs (the
    cases load on demand with ``loadResults``); ``report`` None: written when matplotlib is
    installed (Slicer does not ship it), else skipped. ``notes`` says what was left out. Raises
    RuntimeError (one line) when something the options explicitly ask for is missing."""
    from ..packages import describe_needs, is_installed, missing_for
    from .app import in_slicer_application

    installed = installed or is_installed
    in_application = in_slicer_application() if in_application is None else in_application
    notes = []
    if scene is None:
        scene = not in_application
        if not scene:
            notes.append("scene.mrb not written per case (PythonSlicer cannot build it); load a case with "
                         "loadResults(folder, caseId=...)")
    if report is None:
        report = installed("matplotlib")
        if not report:
            notes.append("report.html not written per case: matplotlib is not installed (the module's "
                         "dependency installer adds it)")
    blocking = [need for need in missing_for(options, report=report, batch=True, dask=workers > 1,
                                             installed=installed) if need.required]
    if blocking:
        raise RuntimeError("the batch cannot start: " + describe_needs(blocking).replace("\n", "; "))
    return scene, report, notes


def process_directory(folder, out, options=None, *, workers: int = 1, scene=None, report=None,
                      resume: bool = False, log=None, python=None, popen=None, poll=None) -> list[dict]:
    """``batch`` of every case under ``folder`` into ``out`` in a child process (each case's
    scene is built there, never in the caller's scene); blocks, each line of its output to
    ``log`` (default: ``logging.info``). ``scene`` / ``report`` None: as :func:`batch_outputs`
    decides (what is left out goes to ``log`` first). ``poll(lines)`` is called about ten times
    a second with the lines printed since the last call; returning True cancels the batch (the
    Slicer module passes one that keeps the GUI alive and shows a progress dialog with Cancel).
    Returns cohort.csv's rows. Ctrl-C (or any exception while waiting) stops the process within
    2 s. Raises RuntimeError with its one-line reason when the batch did not run to the end."""
    import logging

    from ..app.analysis_process import batch_command
    from .load_results import cohort_rows

    log = log or (lambda text: logging.info("EmphysemaXAI: %s", text))
    scene, report, notes = batch_outputs(options, workers=workers, scene=scene, report=report)
    for note in notes:
        log(note)
    work = new_work_dir()
    try:
        command = batch_command(python or analysis_python(), folder, out, options, work, workers=workers,
                                resume=resume, scene=scene, report=report)
        process = AnalysisProcess(command, stop_file=work / "stop", popen=popen or slicer_popen()).start()
        try:
            while process.running:
                lines = process.poll()
                for line in lines:
                    log(line.text)
                if poll is not None and poll(lines):
                    process.cancel()
                    raise RuntimeError("the batch was cancelled; finished cases are kept (run again with "
                                       "resume=True to finish it)")
                time.sleep(0.1)
            for line in process.poll():
                log(line.text)
        except BaseException:
            process.cancel()
            raise
        if process.returncode != 0:
            raise RuntimeError(process.error_message())
        return cohort_rows(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
