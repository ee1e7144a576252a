"""The air estimate ``patterns`` makes without ``--air-hu`` (``model/air_estimate.py``): the stored
trees, the ``--air-hu`` / ``--air-groups`` options and CSV columns (generated data), and real
values on CIP's expert patches and the LIDC slices (../shared/data; skipped without it).

Held-out figures (the estimator and the model fitted without the scored patches) are in the
model card (``bench/bench_air_estimate.py``); here the shipped estimator and model saw the CIP
patches, so these tests pin what the command does, not how well it generalises."""
import csv
import json

import numpy as np
import pytest
from helpers import run_cli, shared
from test_pattern_model import _write_tiffs, save_pattern_model

from EmphysemaXAILib.model import air_estimate
from EmphysemaXAILib.model.cip_patches import load_cip_patches
from EmphysemaXAILib.model.pattern_runs import air_offset

MAT = ("cip-copdgene", "EmphysemaPatches.mat")


def test_stored_trees_predict_what_scikit_learn_predicts():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 13))
    y = 30 * x[:, 0] - 10 * x[:, 3] ** 2 + rng.normal(size=300)
    for loss in ({"loss": "squared_error"}, {"loss": "quantile", "alpha": 0.9}):
        gbr = GradientBoostingRegressor(random_state=0, **air_estimate.TREES, **loss).fit(x, y)
        stored = json.loads(json.dumps(air_estimate.export_trees(gbr)))
        got = np.array([air_estimate.predict(stored, row) for row in x[:50]])
        assert np.allclose(got, gbr.predict(x[:50]), atol=0.05)


def test_shipped_estimator_is_complete():
    stored = air_estimate.load()
    assert set(stored["models"]) == {"mean", "low", "high"}
    assert stored["training"]["patches"] == 1337 and len(stored["features"]["quantiles"]) == 10


@pytest.fixture(scope="module")
def pattern_model(tmp_path_factory):
    return save_pattern_model(tmp_path_factory.mktemp("pattern") / "model")


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_patterns_air_options_and_columns(pattern_model, tmp_path):
    rng = np.random.default_rng(0)
    _write_tiffs(tmp_path / "a", [-860 + 30 * rng.standard_normal((31, 31)) for _ in range(3)])
    _write_tiffs(tmp_path / "b", [-700 + 30 * rng.standard_normal((31, 31)) for _ in range(2)])
    base = ["--pixel-mm", 0.7, "--model", pattern_model]
    done = run_cli("patterns", tmp_path / "a", tmp_path / "b", *base, "--air-hu", "auto",
                   "--out", tmp_path / "auto.csv", "--json")
    assert done.returncode == 0, done.stderr
    airs = json.loads(done.stdout)["air"]
    assert len(airs) == 1 and airs[0]["images"] == 5 and airs[0]["source"].startswith("histogram")
    rows = _rows(tmp_path / "auto.csv")
    assert {(float(r["air_hu"]), r["air_source"]) for r in rows} == {(airs[0]["air_hu"], airs[0]["source"])}
    # one estimate per input folder
    done = run_cli("patterns", tmp_path / "a", tmp_path / "b", *base, "--air-hu", "auto", "--air-groups", "input",
                   "--out", tmp_path / "groups.csv", "--json")
    assert done.returncode == 0, done.stderr
    assert [a["images"] for a in json.loads(done.stdout)["air"]] == [3, 2]
    # off (the default), and given
    for value, source, air in ((None, "none", -1000.0), ("-920", "given", -920.0)):
        out = tmp_path / f"{value}.csv"
        given = [] if value is None else ["--air-hu", value]
        assert run_cli("patterns", tmp_path / "a", *base, *given, "--out", out).returncode == 0
        assert {(float(r["air_hu"]), r["air_source"]) for r in _rows(out)} == {(air, source)}
    def readings(name):
        return [[r[k] for k in r if k.startswith("p_") or k == "emphysema_pct"] for r in _rows(tmp_path / name)]

    assert readings("None.csv") != readings("-920.csv")          # the calibration reaches the model
    done = run_cli("patterns", tmp_path / "a", *base, "--air-hu", "air", "--out", tmp_path / "bad.csv")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "auto or none" in done.stderr
    assert not (tmp_path / "bad.csv").exists()


def _three_way(rows, truth):
    broad = {"normal": "normal", "paraseptal": "paraseptal"}
    hits = [r["pattern"] == broad.get(truth[r["image"]], "centrilobular") for r in rows
            if truth[r["image"]] != "panlobular"]
    return float(np.mean(hits))


def test_cip_patches_read_by_a_scanner_off_by_80_hu(tmp_path):
    """20 patches per class read with air at -920 HU (offset +80): ``--air-hu auto`` finds the
    offset and gives back the 3-way accuracy the offset took; a normal-only set read right is
    nudged by a few HU only (its harm: see the model card's held-out figures)."""
    import tifffile

    patches = load_cip_patches(shared(*MAT))
    rng = np.random.default_rng(0)
    truth = {}
    for i, name in enumerate(["normal", "cl1", "cl2", "cl3", "paraseptal", "panlobular"]):
        for j in rng.choice(np.flatnonzero(patches.labels == i), 20, replace=False):
            path = tmp_path / "rois" / f"{name}_{j}.tif"
            path.parent.mkdir(exist_ok=True)
            tifffile.imwrite(path, np.rint(air_offset(patches.images[j], 80.0)).astype(np.int16))
            truth[f"rois/{path.name}"] = name
    accuracy = {}
    for mode in ("none", "auto"):
        out = tmp_path / f"{mode}.csv"
        done = run_cli("patterns", tmp_path / "rois", "--pixel-mm", patches.pixel_mm, "--air-hu", mode, "--out", out)
        assert done.returncode == 0, done.stderr
        rows = _rows(out)
        accuracy[mode] = _three_way(rows, truth)
    air = float(rows[0]["air_hu"])
    print(accuracy, air)
    assert rows[0]["air_source"] == "histogram" and abs(air - (-920.0)) <= 10.0
    assert accuracy["none"] <= 0.75 and accuracy["auto"] >= 0.88      # measured 0.71 -> 0.91

    normal = rng.choice(np.flatnonzero(patches.labels == 0), 30, replace=False)
    found = air_estimate.estimate_air(list(patches.images[normal]), patches.pixel_mm)
    print(found)
    assert abs(found.offset_hu) <= 10.0


def test_whole_slices_use_their_outside_air_or_nothing():
    from EmphysemaXAILib.model.pattern_images import read_images

    lidc = [image for name in ("0.dcm", "1.dcm") for image in read_images(shared("lidc-two-slices", name), None)[0]]
    found = air_estimate.estimate_air(lidc, 0.625)
    print(found)
    assert found.source == "outside air" and -990.0 <= found.air_hu <= -970.0
    shifted = air_estimate.estimate_air([air_offset(image, 80.0) for image in lidc], 0.625)
    assert abs(shifted.air_hu - (found.air_hu * 0.92)) <= 3.0          # the offset is followed
    crop, size = read_images(shared("cip-copdgene", "crop_ct_2slices.nrrd"), None)
    assert air_estimate.estimate_air(crop, size).source == "none: whole slices without outside air"
