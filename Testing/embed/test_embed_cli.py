"""``embed`` and ``fit-linear`` through the real command line (generated data, no internet).

The images route runs on 2D HU patches cut from a generated phantom with known lesion truth:
EfficientNet-Lite0 embeddings of emphysematous vs normal patches must separate out of fold.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import run_cli

tifffile = pytest.importorskip("tifffile")


@pytest.fixture(scope="module")
def patch_folder(tmp_path_factory):
    """48 single-slice 64 x 64 int16 TIFF patches of a medium phantom: 24 with >= 20 % lesion
    voxels ("emphysema"), 24 without any ("normal"); 8 groups of 6 patches."""
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
    from EmphysemaXAILib.phantom.patches import sample_patches

    # the same anatomy and noise (same seed) with and without emphysema: only the lesions differ
    batches = [sample_patches(generate_phantom(PhantomParams(size="medium", seed=21, extent_pct=extent,
                                                             pattern=pattern)),
                              300, size=64, slices=1, rng=np.random.default_rng(0), min_lung=0.9)
               for extent, pattern in ((25, "mixed"), (0, "none"))]
    sick = np.flatnonzero(batches[0].emphysema_fraction >= 0.2)[:24]
    normal = np.flatnonzero(batches[1].emphysema_fraction == 0)[:24]
    assert len(sick) == 24 and len(normal) == 24
    folder = tmp_path_factory.mktemp("patches")
    rows = []
    for k, (batch, index) in enumerate([(batches[0], i) for i in sick] + [(batches[1], i) for i in normal]):
        name = f"{'e' if k < 24 else 'n'}/{k:03d}.tif"
        (folder / name).parent.mkdir(exist_ok=True)
        tifffile.imwrite(folder / name, np.round(batch.images[index, 0]).astype(np.int16))
        rows.append({"path": name, "label": "emphysema" if k < 24 else "normal", "group": f"g{k % 8}",
                     "laa_pct": 100.0 * float(batch.emphysema_fraction[index])})
    labels = folder / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    return folder, labels


def test_fit_linear_images_route_separates_emphysema_patches(patch_folder, tmp_path):
    folder, labels = patch_folder
    out = tmp_path / "fit"
    result = run_cli("fit-linear", "--images", str(folder), "--labels", str(labels), "--groups-column", "group",
                     "--bootstraps", "200", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics == json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "per_class", "ci95", "models"):
        assert key in metrics
    # real texture signal in ImageNet features: lesion-rich vs lesion-free lung patches
    assert metrics["roc_auc"] > 0.85, metrics["roc_auc"]
    assert metrics["balanced_accuracy"] > 0.75
    low, high = metrics["ci95"]["roc_auc"]
    assert low <= metrics["roc_auc"] <= high
    assert {"ttest-lr", "lasso", "rfe", "ttest-lr+qct", "qct-only", "laa-regression"} <= set(metrics["models"])
    assert metrics["models"]["laa-regression"]["spearman"] > 0.5
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert len(oof) == 48
    for name in ("pca.png", "tsne.png", "coefficients.png", "roc.png", "model.json", "model.joblib"):
        assert (out / name).stat().st_size > 0


def test_fit_linear_images_route_multiclass_logo(patch_folder, tmp_path):
    folder, labels = patch_folder
    table = pd.read_csv(labels)
    cut = table.laa_pct[table.laa_pct > 0].median()
    table["label"] = np.where(table.laa_pct >= cut, "heavy", np.where(table.laa_pct > 0, "some", "none"))
    assert table.label.value_counts().min() >= 12
    three = tmp_path / "three.csv"
    table.to_csv(three, index=False)
    result = run_cli("fit-linear", "--images", str(folder), "--labels", str(three), "--groups-column", "group",
                     "--cv", "logo", "--model", "lasso", "--bootstraps", "50", "--out", str(tmp_path / "o"), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics["per_class"]) == {"none", "some", "heavy"}
    assert metrics["model"] == "lasso"
    assert metrics["balanced_accuracy"] > 1 / 3 + 0.1   # better than chance on three classes


def test_embed_cases_then_fit_linear_embeddings_route(tmp_path):
    """Six small phantoms through `embed` (NRRD, the classical engine, previews) then
    `fit-linear --embeddings --fuse-qct`: the top level is the fused variant."""
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
    from EmphysemaXAILib.phantom.io import write_phantom

    inputs, rows = [], []
    for k, extent in enumerate((0, 1, 2, 14, 18, 22)):
        params = PhantomParams(size="small", seed=40 + k, extent_pct=extent,
                               pattern="none" if extent == 0 else "panlobular")
        case = tmp_path / f"case{k}"
        write_phantom(generate_phantom(params), case, fmt="nrrd")
        inputs.append(str(case / "ct.nrrd"))
        rows.append({"id": f"case{k}/ct", "label": "emphysema" if extent >= 6 else "normal"})
    emb = tmp_path / "emb.parquet"
    result = run_cli("embed", *inputs, "--out", str(emb), "--engine", "classical", "--preview", str(tmp_path / "pv"),
                     "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["rows"] == 6 and info["backbone"]["backbone"] == "efficientnet-lite0"
    assert len(info["backbone"]["weights_sha256"]) == 64
    table = pd.read_parquet(emb)
    assert table.shape == (6, 1 + 3 + 3 * 1280)
    # every input is <case>/ct.nrrd: ids fall back to the path below the common folder, never patient tags
    assert list(table["id"]) == [f"case{k}/ct" for k in range(6)]
    assert table.qct_laa950_pct.iloc[5] > table.qct_laa950_pct.iloc[0] + 10
    assert (tmp_path / "pv" / "case0__ct.png").stat().st_size > 0
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    out = tmp_path / "fit"
    result = run_cli("fit-linear", "--embeddings", str(emb), "--labels", str(labels), "--fuse-qct", "--folds", "3",
                     "--bootstraps", "50", "--out", str(out))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "ttest-lr+qct"
    assert "circularity" in result.stdout + json.dumps(metrics["_run"])
    model = json.loads((out / "model.json").read_text())
    assert any(str(name).startswith("qct_") for name in json.dumps(model).split('"'))
    # one zone's embedding alone: the model's inputs are upper_* columns (+ QCT) only
    result = run_cli("fit-linear", "--embeddings", str(emb), "--labels", str(labels), "--zones", "upper",
                     "--folds", "3", "--bootstraps", "20", "--out", str(tmp_path / "upper"))
    assert result.returncode == 0, result.stderr
    columns = json.loads((tmp_path / "upper" / "model.json").read_text())["input_columns"]
    assert columns and all(c.startswith("upper_") for c in columns)
    bad = run_cli("fit-linear", "--embeddings", str(emb), "--labels", str(labels), "--zones", "apex",
                  "--out", str(tmp_path / "apex"))
    assert bad.returncode == 2 and "zones 'apex'" in bad.stderr and not (tmp_path / "apex").exists()


@pytest.mark.parametrize("args, needle", [
    (("embed", "--out", "x.csv"), "no inputs"),
    (("embed", "nothing.nrrd", "--out", "x.txt"), "unknown table type"),
    (("embed", "--images", "missing_folder", "--out", "x.csv"), "missing_folder"),
    (("fit-linear", "--embeddings", "none.parquet", "--labels", "none.csv", "--out", "o"), "none.csv"),
    (("embed", "missing.nrrd", "--out", "x.csv", "--preview", "pv"), "missing.nrrd"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())   # nothing written


def test_fit_linear_images_route_names_missing_images(patch_folder, tmp_path):
    folder, labels = patch_folder
    table = pd.read_csv(labels)
    table.loc[0, "path"] = "e/not_there.tif"
    bad = tmp_path / "bad.csv"
    table.to_csv(bad, index=False)
    result = run_cli("fit-linear", "--images", str(folder), "--labels", str(bad), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "not_there.tif" in result.stderr
    assert not (tmp_path / "o").exists()
