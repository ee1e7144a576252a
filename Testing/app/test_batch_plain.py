"""`batch` and `analyze` with only what 3D Slicer's Python ships: no pandas, tqdm or matplotlib
needed for the cohort and the case files; report.html (matplotlib) is refused up front, with
what to do, when matplotlib is missing. Runs in both environments (marker slicer_python)."""
import csv
import importlib.util
import json
import shutil

import pytest
from helpers import run_cli

from EmphysemaXAILib import InputError
from EmphysemaXAILib.app.batch import COHORT_COLUMNS, run_batch
from EmphysemaXAILib.app.case_files import check_report_support
from EmphysemaXAILib.options import AnalysisOptions
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
#: Without torch (Slicer's own Python) the defaults (model and engine "auto") must fall back to
#: QCT only and the classical engine: run the defaults there. With torch, lungmask and the model
#: would load (tested elsewhere, and slow): classical engine and no model here.
HAS_TORCH = importlib.util.find_spec("torch") is not None
OPTIONS = AnalysisOptions(model="none", engine="classical") if HAS_TORCH else AnalysisOptions()
FLAGS = ["--no-model", "--engine", "classical"] if HAS_TORCH else []


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory):
    base = tmp_path_factory.mktemp("plain")
    root = base / "root"
    root.mkdir()
    dicom = write_phantom(generate_phantom(PhantomParams(size="small", seed=50)), base / "p0", fmt="dicom")
    nrrd = write_phantom(generate_phantom(PhantomParams(size="small", seed=51, extent_pct=20, pattern="centrilobular")),
                         base / "p1", fmt="nrrd")
    shutil.copytree(dicom / "ct", root / "dicom_case")
    shutil.copy(nrrd / "ct.nrrd", root / "nrrd_case.nrrd")
    return root


def read_rows(path) -> list:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_batch_writes_the_cohort_and_case_files_with_the_csv_module(two_cases, tmp_path, capsys):
    out = tmp_path / "out"
    rows = run_batch(two_cases, out, OPTIONS, scene=False, report=False, progress=True)
    table = read_rows(out / "cohort.csv")
    assert list(table[0]) == list(COHORT_COLUMNS)
    assert [r["case_id"] for r in table] == ["dicom_case", "nrrd_case"]
    assert [r["status"] for r in table] == ["ok", "ok"], [r["error"] for r in table]
    for row, returned in zip(table, rows):
        assert float(row["laa950_pct"]) == pytest.approx(returned["laa950_pct"])
        case = out / "cases" / row["case_id"]
        summary = json.loads((case / "summary.json").read_text())
        regions = read_rows(case / "qct.csv")
        whole = next(r for r in regions if r["region"] == "whole")
        assert float(whole["laa950_pct"]) == pytest.approx(summary["qct"]["regions"][0]["laa950_pct"])
        assert not (case / "report.html").exists()
        if not HAS_TORCH:
            assert summary["severity"] is None and any("torch is not installed" in w for w in summary["warnings"])
    assert float(table[1]["laa950_pct"]) > float(table[0]["laa950_pct"]) + 5  # the emphysematous case
    assert (out / "qc_montage.png").exists() == HAS_MATPLOTLIB
    assert "cases" in capsys.readouterr().err  # progress: tqdm's bar or one line per case


def test_report_needs_matplotlib_and_says_so_before_any_work(two_cases, tmp_path):
    if HAS_MATPLOTLIB:
        check_report_support(True)
        return
    with pytest.raises(InputError, match="report.html needs matplotlib.*--no-report"):
        run_batch(two_cases, tmp_path / "out", OPTIONS, scene=False, report=True, progress=False)
    assert not (tmp_path / "out").exists()
    result = run_cli("analyze", two_cases / "nrrd_case.nrrd", "--out", tmp_path / "case", "--no-scene", *FLAGS)
    assert result.returncode == 2 and "report.html needs matplotlib" in result.stderr
    assert not (tmp_path / "case").exists()


def test_analyze_command_without_report_and_scene(two_cases, tmp_path):
    out = tmp_path / "case"
    result = run_cli("analyze", two_cases / "nrrd_case.nrrd", "--out", out, "--no-report", "--no-scene",
                     *FLAGS)
    assert result.returncode == 0, result.stderr
    regions = read_rows(out / "qct.csv")
    assert regions[0]["region"] == "whole" and float(regions[0]["volume_l"]) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["segmentation"]["engine_used"] == "classical"
    if not HAS_TORCH:
        assert "lungmask is not installed" in summary["segmentation"]["fallback_reason"]
    assert {"summary.json", "qct.csv", "lung_labels.nrrd", "laa_map.nrrd"} <= {p.name for p in out.iterdir()}
