"""Severity model: splits, case-level training, checkpoints, metrics, `train` / `evaluate`,
and the model inside `analyze` (tiny models trained here on small phantoms)."""
import csv
import json
import shutil

import numpy as np
import pytest
import torch
from helpers import run_cli

from EmphysemaXAILib.errors import InputError
from EmphysemaXAILib.io.files import sha256
from EmphysemaXAILib.model.checkpoint import load_model, save_model
from EmphysemaXAILib.model.metrics import case_metrics, clear_of_cutpoints
from EmphysemaXAILib.model.phantom_cohort import phantom_design, split_subjects
from EmphysemaXAILib.model.severity_net import SeverityNet


def test_split_is_by_subject_and_70_15_15():
    subjects = [f"s{i // 2}" for i in range(40)]  # two scans per subject
    parts = split_subjects(subjects, seed=0)
    assert sorted(sum(parts.values(), [])) == list(range(40))
    owners = {name: {subjects[i] for i in idx} for name, idx in parts.items()}
    assert not (owners["train"] & owners["val"]) and not (owners["train"] & owners["test"])
    assert [len(owners[k]) for k in ("train", "val", "test")] == [14, 3, 3]
    assert parts == split_subjects(subjects, seed=0) and parts != split_subjects(subjects, seed=1)
    with pytest.raises(ValueError):
        split_subjects(["a", "b"], seed=0)


def test_phantom_design_spans_doses_kernels_and_classes():
    design = phantom_design(36, seed=1)
    assert {(p.dose, p.kernel) for p in design} == {(d, k) for d in ("standard", "low", "ultralow")
                                                   for k in ("soft", "standard", "sharp")}
    extents = [p.extent_pct for p in design]
    assert min(extents) < 5 and max(extents) >= 25 and len({p.seed for p in design}) == 36
    assert [p.seed for p in phantom_design(3, seed=1)] != [p.seed for p in phantom_design(3, seed=2)]


def test_case_metrics_match_hand_counts():
    true = ["none", "mild", "moderate", "severe", "mild", "none"]
    pred = ["none", "mild", "severe", "severe", "none", "none"]
    extent_true = [1.0, 10.0, 20.0, 30.0, 5.5, 0.0]
    extent_pred = [1.5, 11.0, 26.0, 31.0, 4.5, 0.0]
    proba = np.eye(4)[[0, 1, 3, 3, 0, 0]] * 0.9 + 0.025
    m = case_metrics(true, pred, proba, extent_true, extent_pred, n_boot=200)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"][2][3] == 1 and m["confusion"][1][0] == 1 and np.trace(m["confusion"]) == 4
    assert clear_of_cutpoints(extent_true).tolist() == [True, True, True, True, False, True]
    assert m["n_clear"] == 5 and m["accuracy_clear"] == pytest.approx(4 / 5)
    assert m["extent_mae"] == pytest.approx((0.5 + 1 + 6 + 1 + 1 + 0) / 6)
    from sklearn.metrics import cohen_kappa_score

    idx = {"none": 0, "mild": 1, "moderate": 2, "severe": 3}
    assert m["weighted_kappa_quadratic"] == pytest.approx(
        cohen_kappa_score([idx[t] for t in true], [idx[p] for p in pred], weights="quadratic"))
    low, high = m["ci95"]["extent_mae"]
    assert low <= m["extent_mae"] <= high and high > low
    assert m["per_class"]["severe"]["precision"] == pytest.approx(0.5) and m["per_class"]["moderate"]["recall"] == 0


def test_bootstrap_figures_equal_the_scikit_learn_ones():
    """The bootstrap's numpy figures (model.metrics._bootstrap_classification) are the
    scikit-learn ones of _classification, on random draws with ties, one class, absent classes."""
    import warnings

    from EmphysemaXAILib.model.metrics import _bootstrap_classification, _classification

    rng = np.random.default_rng(0)
    for trial in range(120):
        n = int(rng.integers(1, 12))
        y_true = rng.integers(0, 4, n)
        y_pred = rng.integers(0, 4, n) if trial % 3 else y_true.copy()
        if trial % 5 == 0:
            y_true[:] = y_true[0]
        proba = rng.dirichlet(np.ones(4), n)
        proba = np.round(proba, 1) if trial % 7 == 0 else proba
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full, fast = _classification(y_true, y_pred, proba), _bootstrap_classification(y_true, y_pred, proba)
        for key, value in fast.items():
            if full[key] is None or value is None or np.isnan(full[key]):
                assert value is full[key] or (np.isnan(full[key]) and np.isnan(value)), (key, full[key], value)
            else:
                assert value == pytest.approx(full[key], rel=0, abs=1e-12), (key, y_true, y_pred)


def test_checkpoint_roundtrip_and_tamper_check(tmp_path):
    torch.manual_seed(0)
    net = SeverityNet(width=8, hidden=16).eval()
    config = {"name": "t", "architecture": {"slices": 3, "width": 8, "hidden": 16, "size": 32},
              "working_spacing": [1.4, 1.4, 1.4]}
    digest = save_model(net, config, tmp_path / "m")
    assert digest == sha256(tmp_path / "m" / "weights.pt")
    state = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)   # plain tensors only
    assert set(state) == set(net.state_dict())
    loaded, loaded_config = load_model(tmp_path / "m")
    x = torch.full((2, 3, 32, 32), -850.0)
    assert torch.equal(loaded(x)["fraction"], net(x)["fraction"]) and loaded_config["weights_sha256"] == digest
    shutil.copytree(tmp_path / "m", tmp_path / "bad")
    data = bytearray((tmp_path / "bad" / "weights.pt").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "bad" / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256"):
        load_model(tmp_path / "bad")
    with pytest.raises(InputError, match="not a severity model folder"):
        load_model(tmp_path / "missing")


def test_case_stage_trains_pooling_only_when_frozen(tiny_model):
    from EmphysemaXAILib.model.severity_dataset import CaseBag
    from EmphysemaXAILib.model.severity_training import train_case_model

    model, _ = load_model(tiny_model)
    rng = np.random.default_rng(0)
    bags = [CaseBag(f"c{i}", f"s{i}", rng.normal(-850 - 20 * i, 30, (12, 3, 64, 64)).astype(np.int16),
                    np.full(12, 3 * 64 * 64), float(5 * i), min(i // 2, 3)) for i in range(8)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_case_model(model, bags[:6], bags[6:], epochs=2, freeze_encoder=True, progress=False)
    after = model.state_dict()
    assert torch.equal(before["encoder.features.0.0.weight"], after["encoder.features.0.0.weight"])
    assert not torch.equal(before["class_head.weight"], after["class_head.weight"])
    train_case_model(model, bags[:6], bags[6:], epochs=2, freeze_encoder=False, progress=False)
    assert not torch.equal(before["encoder.features.0.0.weight"], model.state_dict()["encoder.features.0.0.weight"])


def test_train_command_writes_the_model_folder(tiny_model):
    files = {p.name for p in tiny_model.iterdir()}
    assert {"weights.pt", "config.json", "metrics.json", "log.csv", "training_curve.png"} <= files
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["weights_sha256"] == sha256(tiny_model / "weights.pt")
    assert config["training"]["split"] == {"train": 6, "val": 1, "test": 1}
    assert config["architecture"] == {"slices": 3, "width": 16, "hidden": 64, "size": 64}
    metrics = json.loads((tiny_model / "metrics.json").read_text())
    assert metrics["test"]["n"] == 1 and metrics["extent_sigma"] > 0
    stages = {row["stage"] for row in csv.DictReader(open(tiny_model / "log.csv"))}
    assert len(stages) == 2


def test_evaluate_on_phantoms_and_bad_model(tiny_model, tmp_path):
    out = tmp_path / "eval"
    done = run_cli("evaluate", "--model", tiny_model, "--phantoms", 3, "--seed", 9, "--phantom-size", "small",
                   "--workers", 1, "--out", out)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "weighted_kappa_quadratic", "extent_mae",
                "extent_rmse", "confusion", "per_class", "ci95", "by_acquisition", "model"):
        assert key in metrics
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == 3 and all(float(r["naive_laa950_pct"]) >= 0 for r in rows)
    mae = np.mean([abs(float(r["extent_pct"]) - float(r["extent_true"])) for r in rows])
    assert metrics["extent_mae"] == pytest.approx(mae, abs=1e-3)
    assert (out / "confusion.png").stat().st_size > 3000 and (out / "roc.png").stat().st_size > 3000
    bad = run_cli("evaluate", "--model", tmp_path / "nothing", "--phantoms", 2, "--out", tmp_path / "e2")
    assert bad.returncode == 2 and "not a severity model folder" in bad.stderr and not (tmp_path / "e2").exists()


def test_manifest_training_without_init_starts_from_the_severity_model_v1(tmp_path):
    """No --init: the starting point is the shipped severity model v1 (the default shipped model
    is the pattern model, which cannot be fine-tuned on case labels): the run gets as far as the
    manifest, whose refusal names the bad line, instead of refusing the starting model."""
    from EmphysemaXAILib.errors import InputError
    from EmphysemaXAILib.model.runs import train_manifest

    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,subject\ncase0/ct.nrrd,huge,p0\n")
    with pytest.raises(InputError, match="line 2"):
        train_manifest(bad, tmp_path / "out", folds=0, epochs=1, progress=False)
    assert not (tmp_path / "out").exists()
