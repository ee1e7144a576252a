"""The module's "Write DICOM SEG + SR" headless: a CT the DICOM browser loaded is analysed from its
DICOM files (so the SEG references that series), the DICOM results are handed to the database
import before the run's folder goes, or kept in a folder without a database (slicer-core)."""
import sys
from pathlib import Path

import pydicom
import pytest

pytest.importorskip("slicer", reason="slicer-core (the headless extra) is not installed")
pytest.importorskip("highdicom")

import slicer.util  # noqa: E402
from helpers import wait_for_run  # noqa: E402

from EmphysemaXAILib.app.analysis_process import analysis_command  # noqa: E402
from EmphysemaXAILib.mrml.app import bootstrap  # noqa: E402
from EmphysemaXAILib.mrml.module_logic import finish_analysis, launch_analysis  # noqa: E402
from EmphysemaXAILib.options import AnalysisOptions  # noqa: E402
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom  # noqa: E402
from EmphysemaXAILib.phantom.io import write_phantom  # noqa: E402

FAST = AnalysisOptions(engine="classical", model="none")


class FakeDatabase:
    """What the module logic asks of ``slicer.dicomDatabase``: the file of an instance UID."""

    def __init__(self, files):
        self.files = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: str(p) for p in files}

    def fileForInstance(self, uid):  # noqa: N802 (Slicer's name)
        return self.files.get(uid, "")


def test_analysis_command_adds_dicom_out(tmp_path):
    assert "--dicom-out" in analysis_command("python", "ct.nrrd", tmp_path / "out", FAST, tmp_path, dicom=True)
    assert "--dicom-out" not in analysis_command("python", "ct.nrrd", tmp_path / "out", FAST, tmp_path)


def test_dicom_results_of_a_browser_loaded_ct_reference_its_series_and_are_imported_or_kept(tmp_path):
    phantom = generate_phantom(PhantomParams(size="small", seed=4, extent_pct=10, pattern="mixed"))
    folder = write_phantom(phantom, tmp_path / "ph") / "ct"
    files = sorted(folder.glob("*.dcm"))
    scene, app_logic = bootstrap(fresh=True)
    node = slicer.util.loadVolume(str(files[0]), {"singleFile": False})
    database = FakeDatabase(files)
    node.SetAttribute("DICOM.instanceUIDs", " ".join(database.files))
    run = launch_analysis(node, None, FAST, database, python=sys.executable, temp_parent=tmp_path, dicom=True)
    assert (run.work_dir / "source").is_dir()                          # the DICOM files, not exported voxels
    wait_for_run(run)
    imported = []

    def fake_import(path):  # as DICOMUtils.importDicom(path, db, copyFiles=True): reads the files now
        imported.append({p.name: pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(
            Path(path).rglob("*.dcm"))})
        return True

    finish_analysis(run, scene, app_logic, dicom_import=fake_import)
    assert run.dicom_results == {"imported": True, "folder": None} and not run.work_dir.exists()
    seg = imported[0]["seg.dcm"]
    source_series = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source_series
    assert set(imported[0]) == {"seg.dcm", "sr.dcm"}                   # no derived CT: the source is referenced

    run = launch_analysis(node, None, FAST, None, python=sys.executable, temp_parent=tmp_path, dicom=True)
    wait_for_run(run)
    finish_analysis(run, scene, app_logic, dicom_import=None, dicom_keep_dir=tmp_path / "kept")
    kept = run.dicom_results["folder"]
    assert run.dicom_results["imported"] is False and (tmp_path / "kept").is_dir()
    assert {p.name for p in Path(kept).iterdir()} == {"seg.dcm", "sr.dcm", "ct"}  # derived
