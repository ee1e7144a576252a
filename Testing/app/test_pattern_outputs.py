"""The pattern model's results in every output: pattern_map.nrrd, patterns.csv, summary.json,
report.html, scene.mrb (colour table, label map, table) and cohort.csv.

The model is an untrained PatternNet (seeded): the tests check the machinery, never the figures."""
import importlib.util
import json
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
import SimpleITK as sitk  # noqa: E402
from helpers import run_cli, save_untrained_pattern_model  # noqa: E402

from EmphysemaXAILib.analysis.patterns import (  # noqa: E402
    COHORT_PATTERN_COLUMNS,
    PATTERN_COLORS,
    PATTERNS,  # noqa: E402
)
from EmphysemaXAILib.app.batch import COHORT_COLUMNS, run_batch  # noqa: E402
from EmphysemaXAILib.app.case_files import write_case  # noqa: E402
from EmphysemaXAILib.options import AnalysisOptions
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom  # noqa: E402
from EmphysemaXAILib.phantom.io import write_phantom  # noqa: E402
from EmphysemaXAILib.pipeline import analyze_case  # noqa: E402

SCENE = importlib.util.find_spec("slicer") is not None  # slicer-core (the headless extra)


@pytest.fixture(scope="module")
def pattern_model(tmp_path_factory):
    """An untrained pattern model folder, as the training command would write it."""
    return save_untrained_pattern_model(tmp_path_factory.mktemp("models") / "pattern")


@pytest.fixture(scope="module")
def phantom_ct(tmp_path_factory):
    phantom = generate_phantom(PhantomParams(size="small", seed=21, extent_pct=15, pattern="mixed"))
    return write_phantom(phantom, tmp_path_factory.mktemp("ph") / "p", fmt="nrrd") / "ct.nrrd"


@pytest.fixture(scope="module")
def case_dir(pattern_model, phantom_ct, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "case"
    result = analyze_case(phantom_ct, AnalysisOptions(engine="classical", model=str(pattern_model)))
    assert result.severity is not None and result.severity.pattern_labels is not None
    write_case(result, out, report=True, scene=SCENE)
    return out


def test_pattern_map_file_on_the_ct_grid(case_dir, phantom_ct):
    ct = sitk.ReadImage(str(phantom_ct))
    patterns = sitk.ReadImage(str(case_dir / "pattern_map.nrrd"))
    assert patterns.GetSize() == ct.GetSize()
    assert patterns.GetSpacing() == pytest.approx(ct.GetSpacing())
    assert patterns.GetOrigin() == pytest.approx(ct.GetOrigin())
    assert patterns.GetDirection() == pytest.approx(ct.GetDirection())
    assert patterns.GetPixelID() == sitk.sitkUInt8
    codes = sitk.GetArrayFromImage(patterns)
    lung = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "lung_labels.nrrd"))) > 0
    assert codes.min() >= 0 and codes.max() <= len(PATTERNS)
    assert not codes[~lung].any()
    assert (codes[lung] > 0).mean() > 0.99  # every lung voxel labelled (edge voxels may differ by resampling)
    assert b"gzip" in (case_dir / "pattern_map.nrrd").read_bytes()[:1000]


def test_patterns_csv_and_summary(case_dir):
    table = pd.read_csv(case_dir / "patterns.csv")
    share_columns = [f"{p}_pct" for p in PATTERNS]
    assert list(table.columns) == ["region"] + share_columns + ["emphysema_pct"]
    summary = json.loads((case_dir / "summary.json").read_text())
    patterns = summary["severity"]["patterns"]
    assert set(patterns) >= {"classes", "share_by_region", "probabilities", "group_probabilities", "dominant",
                             "emphysema_share_pct", "label_codes", "map_rule"}
    assert list(table["region"]) == list(patterns["share_by_region"])
    assert {"whole", "right", "left", "upper", "middle", "lower"} <= set(table["region"])
    for _, row in table.iterrows():
        if patterns["share_by_region"][row["region"]] is not None:
            assert row[share_columns].sum() == pytest.approx(100.0, abs=0.01)
    whole = table.set_index("region").loc["whole"]
    assert whole["emphysema_pct"] == pytest.approx(summary["severity"]["extent_pct"])


def test_report_shows_the_pattern_map_and_table(case_dir):
    page = (case_dir / "report.html").read_text()
    assert "Emphysema patterns" in page and "alt='pattern map beside the LAA map'" in page
    assert "Share of lung in each pattern per region" in page
    assert "centrilobular severe %" in page and "panlobular %" in page
    assert "not a medical device" in page


@pytest.mark.skipif(not SCENE, reason="slicer-core (the headless extra) is not installed")
def test_the_display_shows_the_pattern_map_when_chosen_and_the_laa_map_again(case_dir):
    from EmphysemaXAILib.mrml.app import bootstrap
    from EmphysemaXAILib.mrml.load_results import load_results
    from EmphysemaXAILib.mrml.views import LAA_LAYER, PATTERN_LAYER, layer_choices, show_layer

    scene, app_logic = bootstrap(fresh=True)
    nodes = load_results(case_dir, scene, app_logic)
    assert layer_choices(nodes)[:2] == [LAA_LAYER, PATTERN_LAYER]
    show_layer(nodes, PATTERN_LAYER, opacity=0.4)
    for composite in scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
        assert composite.GetLabelVolumeID() == nodes["pattern_map"].GetID()
        assert composite.GetForegroundVolumeID() is None
        assert composite.GetLabelOpacity() == pytest.approx(0.4)
    assert nodes["pattern_rendering"].GetVisibility() and not nodes["laa_rendering"].GetVisibility()
    show_layer(nodes, LAA_LAYER)
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == nodes["laa_map"].GetID() and composite.GetLabelVolumeID() is None
    assert nodes["laa_rendering"].GetVisibility() and not nodes["pattern_rendering"].GetVisibility()


@pytest.mark.skipif(not SCENE, reason="slicer-core (the headless extra) is not installed")
def test_scene_has_the_pattern_colours_map_and_table(case_dir):
    import slicer.util

    from EmphysemaXAILib.mrml.app import bootstrap

    scene, _ = bootstrap(fresh=True)
    slicer.util.loadScene(str(case_dir / "scene.mrb"))
    colors = scene.GetFirstNodeByName("EmphysemaXAI patterns")
    assert colors.IsA("vtkMRMLColorTableNode")
    assert colors.GetNumberOfColors() == len(PATTERN_COLORS)
    names = [colors.GetColorName(i) for i in range(1, colors.GetNumberOfColors())]
    assert names == [name for _, name, _ in PATTERN_COLORS[1:]] and len(set(names)) == 6
    rgba = [0.0] * 4
    colors.GetColor(4, rgba)
    assert rgba == pytest.approx([0.85, 0.1, 0.12, 1.0], abs=1 / 255)  # red (the file stores 8-bit colours)
    label_map = scene.GetFirstNodeByName("Pattern map")
    assert label_map.IsA("vtkMRMLLabelMapVolumeNode")
    assert label_map.GetDisplayNode().GetColorNodeID() == colors.GetID()
    codes = slicer.util.arrayFromVolume(label_map)
    assert np.array_equal(codes, sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "pattern_map.nrrd"))))
    table = slicer.util.dataframeFromTable(scene.GetFirstNodeByName("Patterns"))
    rendering = [n for n in scene.GetNodesByClass("vtkMRMLVolumeRenderingDisplayNode")
                 if n.GetVolumeNodeID() == label_map.GetID()]
    assert len(rendering) == 1 and not rendering[0].GetVisibility()      # the LAA map is the default view
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == scene.GetFirstNodeByName("LAA map").GetID()
    assert composite.GetLabelVolumeID() is None
    assert list(table["region"])[:3] == ["whole", "right", "left"]
    assert table.loc[0, [f"{p}_pct" for p in PATTERNS]].sum() == pytest.approx(100.0, abs=0.01)


def test_cohort_rows_carry_the_pattern_columns(pattern_model, phantom_ct, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(phantom_ct, root / "case1.nrrd")
    rows = run_batch(root, tmp_path / "with", scene=False, report=False, progress=False,
                     options=AnalysisOptions(model=str(pattern_model)))
    assert COHORT_COLUMNS[-len(COHORT_PATTERN_COLUMNS):] == COHORT_PATTERN_COLUMNS
    cohort = pd.read_csv(tmp_path / "with" / "cohort.csv")
    assert list(cohort.columns) == list(COHORT_COLUMNS)
    assert rows[0]["status"] == "ok" and rows[0]["pattern_dominant"] in PATTERNS
    assert sum(rows[0][f"{p}_pct"] for p in PATTERNS) == pytest.approx(100.0, abs=0.01)
    assert cohort.loc[0, "pattern_emphysema_share_pct"] == pytest.approx(100.0 - rows[0]["normal_pct"])
    # no model: the same columns, empty
    plain = run_batch(root, tmp_path / "without", scene=False, report=False, progress=False,
                      options=AnalysisOptions(model="none"))
    assert plain[0]["status"] == "ok" and all(plain[0][c] is None for c in COHORT_PATTERN_COLUMNS)
    assert pd.read_csv(tmp_path / "without" / "cohort.csv")[list(COHORT_PATTERN_COLUMNS)].isna().all().all()


def test_analyze_cli_says_where_the_pattern_map_is(pattern_model, phantom_ct, tmp_path):
    out = tmp_path / "cli"
    done = run_cli("analyze", phantom_ct, "--out", out, "--model", pattern_model, "--engine", "classical",
                   "--no-scene", "--no-report")
    assert done.returncode == 0, done.stderr
    assert "pattern_map.nrrd" in done.stdout and "patterns.csv" in done.stdout
    assert (out / "pattern_map.nrrd").is_file() and not (out / "report.html").exists()
