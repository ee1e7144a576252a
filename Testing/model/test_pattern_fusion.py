"""The fused texture + calibrated density map of a pattern model (model/pattern_fusion.py): its
features, its logistic map, its fit (reproducible), models without a ``fusion`` block unchanged,
and the shipped block on a generated phantom."""
import json

import numpy as np
import pytest
import torch

from EmphysemaXAILib.model import pattern_fusion as pf
from EmphysemaXAILib.model import pattern_fusion_fit as pff
from EmphysemaXAILib.model.cip_patches import PatchSet
from EmphysemaXAILib.model.pattern_fusion import FEATURES, features, fused_map, local_density
from EmphysemaXAILib.model.pattern_fusion_fit import fit_fusion
from EmphysemaXAILib.model.pattern_infer import PatternPredictor
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom


def test_local_density_counts_lung_pixels_below_minus_950_in_the_window():
    hu = np.full((1, 9, 9), -850.0, np.float32)
    hu[0, :, :3] = -980.0                       # three columns of low attenuation
    lung = np.ones_like(hu, bool)
    lung[0, :, 7:] = False                      # not lung: never counted
    hu[0, :, 7:] = -1000.0
    share, mean = local_density(hu, lung, 3)
    assert share[0, 4, 1] == pytest.approx(1.0) and share[0, 4, 3] == pytest.approx(1 / 3)
    assert share[0, 4, 5] == 0.0 and share[0, 4, 7] == 0.0     # the -1000 HU outside the lung is not counted
    assert mean[0, 4, 2] == pytest.approx((2 * -980 - 850) / 3, abs=1e-3)
    assert mean[0, 4, 6] == pytest.approx(-850.0)


def test_fused_map_is_the_logistic_of_the_features():
    feats = np.array([[0.0, 2.0], [-1.0, 1.0]], np.float32)          # 2 features x 2 voxels
    block = {"features": ["texture_logit", "laa950_local"], "coefficients": [0.5, 2.0], "intercept": -1.0}
    z = np.array([0.5 * 0 + 2 * -1 - 1, 0.5 * 2 + 2 * 1 - 1])
    assert np.allclose(fused_map(feats, block), 1 / (1 + np.exp(-z)), atol=1e-6)
    # texture and density as the features say: more low attenuation -> a higher map
    hu = np.full((1, 16, 16), -870.0, np.float32)
    hu[0, :, 8:] = -990.0
    f = features(hu, np.ones_like(hu, bool), np.full(hu.shape, 0.1), np.full(hu.shape, 0.5), 1.0, 5.0, FEATURES)
    assert f.shape == (len(FEATURES), 1, 16, 16)
    out = fused_map(f, {"features": list(FEATURES), "coefficients": [0.3, 0.7], "intercept": -1.0})
    assert out[0, 8, 14] > 0.5 > 0.01 > out[0, 8, 1]


def _tiny_model(folder, fusion=None):
    from EmphysemaXAILib.model.checkpoint import save_model
    from EmphysemaXAILib.model.pattern_net import PatternNet

    torch.manual_seed(0)
    record = {"name": "test-pattern", "architecture": {"kind": "pattern", "width": 4, "hidden": 8, "pixel_mm": 1.0,
                                                        "slice_mm": 2.0},
              "extent_calibration": [1.0, 0.0], "extent_sigma": 1.0, "map_rule": "extent"}
    save_model(PatternNet(width=4, hidden=8).eval(), record, folder)
    if fusion is not None:
        config = json.loads((folder / "config.json").read_text())
        config["fusion"] = fusion
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_fusion_block_replaces_the_fraction_map_and_models_without_it_are_unchanged(tmp_path):
    phantom = generate_phantom(PhantomParams(size="small", extent_pct=12, pattern="centrilobular", seed=5))
    labels = phantom.labels["lungs"]
    plain = PatternPredictor(_tiny_model(tmp_path / "plain"), device="cpu")
    assert plain.fusion is None
    before = plain.predict(phantom.ct, labels)
    # without a block: the extent is the lung mean of the calibrated fraction map, as before
    lung = before.grid.labels > 0
    _, _, fraction, _, _ = plain._dense(before.grid.hu, lung)
    old = 100 * float(plain._calibrated(fraction)[lung].mean())
    assert before.summary["extent_pct"] == pytest.approx(old, abs=1e-3)
    assert before.summary["patterns"]["extent_map"] == "fraction"
    block = {"features": ["texture_logit", "laa950_local"], "window_mm": 15.0, "coefficients": [0.0, 1.0],
             "intercept": 0.0}
    fused = PatternPredictor(_tiny_model(tmp_path / "fused", block), device="cpu").predict(phantom.ct, labels)
    # texture ignored (0) and density alone (logit of the local %LAA-950): the map's mean is the
    # lung mean of the local share below -950 HU, near the phantom's noisy %LAA-950
    assert fused.summary["patterns"]["extent_map"] == "fused"
    # the map labels the most probable voxels, as many as the extent says but only those above 0.5
    assert fused.summary["patterns"]["emphysema_share_pct"] <= fused.summary["extent_pct"] + 0.05
    laa = 100 * float(np.mean(fused.grid.hu[lung] < -950))
    assert abs(fused.summary["extent_pct"] - laa) < 1.0, (fused.summary["extent_pct"], laa)
    assert fused.summary["extent_pct"] != pytest.approx(before.summary["extent_pct"], abs=0.01)


def test_the_fit_is_reproducible_and_learns_density_from_labelled_items(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    labels = np.repeat([0, 2], n // 2)
    images = rng.normal(-860, 30, (n, 31, 31)).astype(np.float32)
    images[labels > 0, 5:25, 5:25] = rng.normal(-975, 15, (n // 2, 20, 20))   # low-attenuation holes
    patches = PatchSet(images, labels.astype(np.int64))
    predictor = PatternPredictor(_tiny_model(tmp_path / "m"), device="cpu")
    design = [PhantomParams(size="small", extent_pct=15, pattern="centrilobular", seed=7)]
    kwargs = dict(mosaics=12, per_mosaic=200, every=8, per_phantom=2000)
    first = fit_fusion(pff.training_voxels(predictor, patches, np.arange(n), design, **kwargs))
    again = fit_fusion(pff.training_voxels(predictor, patches, np.arange(n), design, **kwargs))
    assert first["coefficients"] == again["coefficients"] and first["intercept"] == again["intercept"]
    assert first["features"] == list(FEATURES)
    assert first["coefficients"][FEATURES.index("laa950_smooth_local")] > 0.3     # density counts
    assert first["fit"]["voxels"] == {"cip": 12 * 200, "phantom": 2000}


def test_the_shipped_block_reads_a_held_out_phantom():
    """The shipped model's fusion block (texture + smoothed local density, calibrated on the fit
    phantoms) on a held-out medium phantom (seed in neither the training nor the fit design),
    standard dose, true lungs: the fused extent within 2 points of the truth, the map holding
    exactly that much emphysema, and the block's record says how it was fitted."""
    from EmphysemaXAILib.model.checkpoint import SHIPPED_DIR

    config = json.loads((SHIPPED_DIR / "config.json").read_text())
    block = config["fusion"]
    assert block["features"] == list(FEATURES)
    assert block["fit"]["phantoms"] == [50000 + i for i in range(8)]        # phantom_design(8, seed=5)
    assert block["calibration"]["mae_after"] < block["calibration"]["mae_before"]
    phantom = generate_phantom(PhantomParams(size="medium", extent_pct=12, pattern="mixed", dose="standard",
                                             seed=990011))
    result = PatternPredictor(device="cpu").predict(phantom.ct, phantom.labels["lungs"])
    truth = phantom.truth["extent_pct"]
    assert result.summary["patterns"]["extent_map"] == "fused"
    assert abs(result.summary["extent_pct"] - truth) < 2.0, (result.summary["extent_pct"], truth)
    share = result.summary["patterns"]["emphysema_share_pct"]
    assert 0.5 * result.summary["extent_pct"] < share <= result.summary["extent_pct"] + 0.05, share


def test_calibrate_block_rescales_the_logit_to_the_phantoms_true_extents():
    """Rows whose logits give the true extents under logit' = 2 x logit - 1: the calibration finds
    that map, folds it into the block and keeps each voxel a probability, ranked as before."""
    rng = np.random.default_rng(3)
    rows = []
    for k, centre in enumerate((-6.0, -3.0, -1.5, 0.0, 1.0)):
        z = rng.normal(centre, 1.5, 20000).astype(np.float32)
        truth = 100.0 * float(np.mean(1.0 / (1.0 + np.exp(-(2.0 * z - 1.0)))))
        rows.append({"name": f"p{k}", "dose": "low", "kernel": "soft", "z": z, "extent_true": truth})
    block = {"features": ["laa950_local"], "window_mm": 15.0, "coefficients": [1.0], "intercept": 0.0}
    out = pff.calibrate_block(block, rows)
    assert out["calibration"]["scale"] == pytest.approx(2.0, rel=0.01)
    assert out["calibration"]["shift"] == pytest.approx(-1.0, abs=0.02)
    assert out["coefficients"][0] == pytest.approx(2.0, rel=0.01) and out["intercept"] == pytest.approx(-1.0, abs=0.02)
    assert out["calibration"]["mae_before"] > 1.0 > 0.05 > out["calibration"]["mae_after"]
    assert out["extent_sigma"] == 0.25          # the floor: the fit is exact here
    feats = np.array([[-2.0, 0.5, 3.0]], np.float32)
    after = fused_map(feats, out)
    assert np.all((after >= 0) & (after <= 1)) and np.all(np.diff(after) > 0)
    assert block["coefficients"] == [1.0]       # the input block is not modified


def test_a_calibrated_block_gives_its_own_extent_sd_to_the_class_probabilities(tmp_path):
    phantom = generate_phantom(PhantomParams(size="small", extent_pct=12, pattern="centrilobular", seed=5))
    block = {"features": list(FEATURES), "window_mm": 15.0, "coefficients": [0.0, 1.0], "intercept": 0.0}
    wide = PatternPredictor(_tiny_model(tmp_path / "a", {**block, "extent_sigma": 6.0}), device="cpu")
    narrow = PatternPredictor(_tiny_model(tmp_path / "b", {**block, "extent_sigma": 0.5}), device="cpu")
    p_wide = wide.predict(phantom.ct, phantom.labels["lungs"]).summary
    p_narrow = narrow.predict(phantom.ct, phantom.labels["lungs"]).summary
    assert p_wide["extent_pct"] == pytest.approx(p_narrow["extent_pct"])
    top = p_narrow["class"]
    assert p_narrow["probabilities"][top] > p_wide["probabilities"][top] + 0.1


def test_smoothed_in_lung_averages_noise_and_never_takes_non_lung():
    rng = np.random.default_rng(0)
    hu = (-870 + rng.normal(0, 60, (1, 64, 64))).astype(np.float32)
    lung = np.ones(hu.shape, bool)
    lung[0, :, 48:] = False
    hu[0, :, 48:] = 100.0                        # chest wall
    smooth = pf.smoothed_in_lung(hu, lung, 1.0)
    inner = smooth[0, 8:56, 8:40]
    assert inner.std() < 0.45 * hu[0, 8:56, 8:40].std()
    assert abs(inner.mean() + 870) < 10
    assert smooth[0, :, 47].max() < -700         # the lung's border column: no +100 HU bleeds in
    assert np.array_equal(smooth[0, :, 48:], hu[0, :, 48:])
    # noise alone: far fewer pixels below -950 HU after smoothing
    assert np.mean(smooth[lung] < -950) < 0.2 * np.mean(hu[lung] < -950)


def test_a_fused_map_labels_only_voxels_more_likely_emphysema_than_not():
    """The extent rule on a fused map: as many voxels as the extent says, highest first, but none
    at or below FUSED_LABEL_P; the report says why the map's share is then below the extent."""
    from EmphysemaXAILib.app.report import map_rule_text
    from EmphysemaXAILib.model.pattern_infer import FUSED_LABEL_P

    p = np.array([[[0.9, 0.7, 0.3, 0.2, 0.1, 0.05, 0.02, 0.02, 0.01, 0.01]]], np.float32)
    lung = np.ones(p.shape, bool)
    codes = np.full(p.shape, 5, np.uint8)                          # paraseptal wherever labelled
    extent = 100.0 * float(p.mean())                               # 23.2 %: about 2 of the 10 voxels
    labels = PatternPredictor._extent_labels(codes, p, p, lung, extent, exact=True, floor=FUSED_LABEL_P)
    assert labels.tolist() == [[[5, 5, 1, 1, 1, 1, 1, 1, 1, 1]]]
    low = np.full(p.shape, 0.3, np.float32)                        # a normal lung's spread-out probability
    labels = PatternPredictor._extent_labels(codes, low, low, lung, 30.0, exact=True, floor=FUSED_LABEL_P)
    assert (labels == 1).all()
    text = map_rule_text({"map_rule": "extent", "extent_map": "fused", "emphysema_share_pct": 0.0}, 2.0)
    assert "more likely emphysema than not" in text and "other 2.0 points" in text
    text = map_rule_text({"map_rule": "extent", "extent_map": "fused", "emphysema_share_pct": 12.0}, 12.0)
    assert "tell one story" in text


def _synthetic_cip_mat(path, per_class=6, seed=0):
    """A file in the layout of CIP's EmphysemaPatches.mat (EmphyPatch: 1 x 6 cells of 31 x 31 x N
    int16 HU; classLabel: the 6 names): normal patches near -860 HU, emphysema patches with holes."""
    import scipy.io

    rng = np.random.default_rng(seed)
    cells = np.empty((1, 6), dtype=object)
    names = np.empty((1, 6), dtype=object)
    for i, name in enumerate(("NT", "CL1", "CL2", "CL3", "PS", "PL")):
        stack = rng.normal(-860, 30, (31, 31, per_class))
        if i:
            stack[6:24, 6:24] = rng.normal(-975, 15, (18, 18, per_class))
        cells[0, i] = np.round(stack).astype(np.int16)
        names[0, i] = name
    scipy.io.savemat(str(path), {"EmphyPatch": cells, "classLabel": names})
    return path


def test_fit_fusion_command_writes_a_calibrated_block_and_keeps_the_weights(tmp_path):
    """``fit-fusion --write`` end to end (tiny network, a synthetic CIP file, one fit phantom): the
    config gains the default-feature block with its calibration record, the weights are untouched;
    a bad feature name is one line and exit 2, with the config unchanged."""
    import subprocess
    import sys

    from EmphysemaXAILib.io.files import sha256

    folder = _tiny_model(tmp_path / "m")
    digest = sha256(folder / "weights.pt")
    mat = _synthetic_cip_mat(tmp_path / "patches.mat")
    base = [sys.executable, "-m", "EmphysemaXAILib", "fit-fusion", "--model", str(folder), "--cip-patches", str(mat),
            "--phantoms", "1"]
    bad = subprocess.run(base + ["--features", "texture_logit,nope", "--write"], capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope" in bad.stderr
    assert "fusion" not in json.loads((folder / "config.json").read_text())
    done = subprocess.run(base + ["--write"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    block = json.loads((folder / "config.json").read_text())["fusion"]
    assert block["features"] == list(FEATURES) and block["fit"]["phantoms"] == [50000]
    calibration = block["calibration"]
    assert calibration["mae_after"] <= calibration["mae_before"] + 1e-6 and calibration["scale"] > 0
    assert block["extent_sigma"] >= 0.25
    assert sha256(folder / "weights.pt") == digest
    assert PatternPredictor(folder, device="cpu").fusion == block
