"""The case pipeline and `analyze`: steps, progress, cancel, outputs, exclusion."""
import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from helpers import run_cli

from EmphysemaXAILib.options import AnalysisOptions
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom
from EmphysemaXAILib.pipeline import Cancelled, analyze_case


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    phantom = generate_phantom(PhantomParams(size="small", seed=5, extent_pct=15, pattern="mixed"))
    out = write_phantom(phantom, tmp_path_factory.mktemp("case") / "ph", fmt="nrrd")
    return out, phantom


def test_analyze_case_steps_progress_and_results(phantom_dir):
    folder, phantom = phantom_dir
    calls = []
    result = analyze_case(folder / "ct.nrrd", AnalysisOptions(engine="classical"), progress=lambda *a: calls.append(a))
    starts = [c for i, c in enumerate(calls) if i == 0 or c[0] != calls[i - 1][0]]      # each step's first call
    assert [c[0] for c in starts] == ["read", "qc", "segment", "qct", "severity", "done"]
    assert [c[1] for c in starts] == pytest.approx([0.0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 1.0])
    inside = [c[1] for c in calls if c[0] == "severity"][1:]       # the CNN's own progress, per batch of slices
    assert inside and all(4 / 6 < f <= 5 / 6 for f in inside) and inside == sorted(inside)
    assert set(result.timings_s) == {"read", "qc", "segment", "qct", "severity"}
    whole = result.qct.region("whole")
    assert whole["laa950_pct"] == pytest.approx(phantom.truth["extent_pct"], abs=2.0)
    summary = result.summary()
    assert summary["qct_severity"]["class"] == "mild"
    severity = summary["severity"]   # the shipped model runs by default
    assert set(severity) >= {"class", "probabilities", "extent_pct", "extent_by_region", "model"}
    assert sum(severity["probabilities"].values()) == pytest.approx(1.0)
    from EmphysemaXAILib.analysis.severity import severity_class

    assert severity["class"] == severity_class(severity["extent_pct"])   # docs/severity.md: the band of the extent
    from EmphysemaXAILib.analysis.regions import REGION_NAMES
    from EmphysemaXAILib.model.checkpoint import SHIPPED_SHA256

    assert severity["model"]["sha256"] == SHIPPED_SHA256 and set(REGION_NAMES) <= set(severity["extent_by_region"])
    assert summary["input"]["shape"] == [96, 128, 128] and "identity" not in json.dumps(summary)
    plain = analyze_case(folder / "ct.nrrd", AnalysisOptions(engine="classical", model="none"))
    assert plain.summary()["severity"] is None and "severity" not in plain.timings_s


def test_cancel_between_steps(phantom_dir):
    folder, _ = phantom_dir
    seen = []

    def cancel():
        return len(seen) >= 2

    with pytest.raises(Cancelled, match="before segment"):
        analyze_case(folder / "ct.nrrd", progress=lambda *a: seen.append(a), cancel=cancel)


def test_cli_analyze_writes_outputs_and_refuses_existing_folder(phantom_dir, tmp_path):
    folder, phantom = phantom_dir
    out = tmp_path / "result"
    result = run_cli("analyze", folder / "ct.nrrd", "--out", out, "--no-scene", "--engine", "classical", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["airways.nrrd", "laa_map.nrrd", "lung_labels.nrrd",
                                                     "pattern_map.nrrd", "patterns.csv", "qct.csv", "report.html",
                                                     "summary.json"]
    table = pd.read_csv(out / "qct.csv")
    assert table["laa950_pct"].iloc[0] == pytest.approx(summary["qct"]["regions"][0]["laa950_pct"])
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lung_labels.nrrd")))
    assert 2 * ((labels > 0) & (phantom.labels["lungs"] > 0)).sum() / ((labels > 0).sum()
                                                                      + (phantom.labels["lungs"] > 0).sum()) > 0.97
    html = (out / "report.html").read_text()
    # + the CNN's map, the pattern map
    assert "not a medical device" in html and html.count("data:image/png;base64,") == 5
    assert "CNN severity" in html
    again = run_cli("analyze", folder / "ct.nrrd", "--out", out, "--no-scene")
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_cli_analyze_excludes_a_scan_without_lung(tmp_path):
    hu = np.full((12, 64, 64), -1000, np.int16)
    yy, xx = np.mgrid[:64, :64]
    hu[:, (yy - 32) ** 2 + (xx - 32) ** 2 < 26 ** 2] = 40  # a water cylinder: no lung
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(tmp_path / "water.nrrd"))
    result = run_cli("analyze", tmp_path / "water.nrrd", "--out", tmp_path / "out", "--no-scene")
    assert result.returncode == 3 and "no lung in the field of view" in result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["qc"]["excluded"] is True and summary["qct"] is None


def test_a_mask_with_other_labels_than_lungs_is_refused(phantom_dir, tmp_path):
    from EmphysemaXAILib import InputError
    from EmphysemaXAILib.phantom.io import save_label

    folder, phantom = phantom_dir
    lobes = phantom.labels["lobes"]  # codes up to 5: not a lung mask
    with pytest.raises(InputError, match="holds labels up to 5"):
        analyze_case(folder / "ct.nrrd", lung_mask=lobes)
    save_label(lobes, phantom.ct, tmp_path / "lobes.nrrd")
    result = run_cli("qct", folder / "ct.nrrd", "--lung-mask", tmp_path / "lobes.nrrd")
    assert result.returncode == 2 and "holds labels up to 5" in result.stderr and "--label-scheme cip" in result.stderr
