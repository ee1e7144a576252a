"""`batch`: cases found under a root, cohort.csv, failures recorded, resume, montage."""
import shutil

import pandas as pd
import pytest
from helpers import run_cli

from EmphysemaXAILib.app.batch import run_batch
from EmphysemaXAILib.app.find_cases import find_cases
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("cohort")
    root = base / "root"
    (root / "site_a").mkdir(parents=True)
    (root / "site_b").mkdir()
    healthy = write_phantom(generate_phantom(PhantomParams(size="small", seed=40)), base / "p0", fmt="dicom")
    sick = write_phantom(generate_phantom(PhantomParams(size="small", seed=41, extent_pct=20,
                                                        pattern="centrilobular")), base / "p1", fmt="nrrd")
    shutil.copytree(healthy / "ct", root / "site_a" / "patient1")
    shutil.copy(sick / "ct.nrrd", root / "site_b" / "case2.nrrd")
    (root / "site_b" / "broken.nii.gz").write_bytes(b"not an image")
    return root


def test_cases_found_with_ids_from_relative_paths(cohort_root):
    cases = find_cases(cohort_root)
    assert [c["case_id"] for c in cases] == ["site_a__patient1", "site_b__broken", "site_b__case2"]
    assert cases[0]["series_uid"] is not None and cases[1]["series_uid"] is None


def test_batch_records_every_case_and_resumes(cohort_root, tmp_path):
    out = tmp_path / "out"
    rows = run_batch(cohort_root, out, workers=2, scene=False, report=False, progress=False)
    table = pd.read_csv(out / "cohort.csv").set_index("case_id")
    assert list(table.columns) == ["source", "status", "error", "laa950_pct", "perc15_hu", "volume_l",
                                   "qct_class", "severity_class", "extent_pct", "laa950_pct_calibrated",
                                   "perc15_hu_calibrated", "calibration_air_hu", "calibration_air_source",
                                   # appended for a pattern model (empty without one)
                                   "pattern_dominant", "pattern_emphysema_share_pct", "normal_pct",
                                   "centrilobular_mild_pct", "centrilobular_moderate_pct", "centrilobular_severe_pct",
                                   "paraseptal_pct", "panlobular_pct"]
    assert table.loc["site_a__patient1", "status"] == "ok" and table.loc["site_a__patient1", "qct_class"] == "none"
    assert table.loc["site_b__case2", "status"] == "ok" and table.loc["site_b__case2", "qct_class"] == "moderate"
    assert table.loc["site_b__broken", "status"] == "failed"  # an unreadable image is a failed case
    assert "cannot be read" in table.loc["site_b__broken", "error"]
    assert table.loc["site_b__case2", "laa950_pct"] == pytest.approx(20, abs=2)
    assert "SYNTHETIC" not in (out / "cohort.csv").read_text()  # ids from paths, not patient tags
    assert (out / "qc_montage.png").stat().st_size > 5000
    assert (out / "cases" / "site_a__patient1" / "summary.json").is_file()
    assert not (out / "cases" / "site_b__broken").exists()  # nothing half-written
    stamp = (out / "cases" / "site_a__patient1" / "summary.json").stat().st_mtime_ns
    again = run_batch(cohort_root, out, resume=True, scene=False, report=False, progress=False)
    assert (out / "cases" / "site_a__patient1" / "summary.json").stat().st_mtime_ns == stamp
    assert [r["status"] for r in again] == [r["status"] for r in rows]
    assert again[0]["laa950_pct"] == rows[0]["laa950_pct"]


def test_cli_batch_strict_exit_code(cohort_root, tmp_path):
    # exit codes and counts only: no model (the batch with the model is the test above)
    result = run_cli("batch", cohort_root, "--out", tmp_path / "o", "--no-scene", "--no-report", "--no-model",
                     "--strict")
    assert result.returncode == 1 and "failed site_b__broken" in result.stderr
    relaxed = run_cli("batch", cohort_root, "--out", tmp_path / "o", "--no-scene", "--no-report", "--no-model",
                      "--resume")
    assert relaxed.returncode == 0 and "2 ok, 0 excluded, 1 failed" in relaxed.stdout
