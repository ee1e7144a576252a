"""The pattern CNN: network algebra, scanner augmentation, training on labelled patches, the case
predictor, the ``patterns`` command and per-pattern explanations (generated data; the real CIP
patches and real series are in test_pattern_real.py)."""
import json

import numpy as np
import pytest
import torch
from helpers import run_cli

from EmphysemaXAILib.analysis.patterns import PATTERNS, group_probabilities
from EmphysemaXAILib.model.cip_patches import PatchSet, patch_folds
from EmphysemaXAILib.model.pattern_augment import ScannerRanges, gaussian_blur, resample, scanner_augment
from EmphysemaXAILib.model.pattern_net import STRIDE, PatternNet


def save_pattern_model(folder, width=4, hidden=8, seed=0, calibration=(1.0, 0.0)):
    """An untrained (seeded) pattern model folder written by the real checkpoint code."""
    from EmphysemaXAILib.model.checkpoint import save_model

    torch.manual_seed(seed)
    model = PatternNet(width=width, hidden=hidden).eval()
    save_model(model, {"name": "test-pattern", "architecture": {"kind": "pattern", "width": width, "hidden": hidden,
                                                                "pixel_mm": 1.0, "slice_mm": 2.0},
                       "extent_calibration": list(calibration), "extent_sigma": 1.0}, folder)
    return folder


@pytest.fixture(scope="module")
def pattern_model(tmp_path_factory):
    return save_pattern_model(tmp_path_factory.mktemp("pattern") / "model")


def test_network_outputs_and_their_algebra():
    torch.manual_seed(0)
    net = PatternNet(width=4, hidden=8).eval()
    x = -860 + 40 * torch.randn(3, 1, 24, 32)
    lung = torch.ones_like(x)
    lung[:, :, :, :16] = 0                                         # the left half is not lung
    with torch.no_grad():
        out = net(x, lung)
    h, w = 24 // STRIDE, 32 // STRIDE
    assert out["pattern_map"].shape == (3, len(PATTERNS), h, w) and out["fraction_map"].shape == (3, h, w)
    assert torch.allclose(out["attention"].sum(dim=(1, 2)), torch.ones(3), atol=1e-5)
    assert float(out["attention"][:, :, : w // 2].abs().max()) == 0.0       # no attention outside the lung
    # pooled logits = the 1 x 1 head applied to the attended embedding (the head is linear)
    head = net.pattern_head
    expected = out["embedding"] @ head.weight[:, :, 0, 0].T + head.bias
    assert torch.allclose(out["pattern_logits"], expected, atol=1e-4)
    # the image fraction is the mean of the fraction map over the lung positions
    assert torch.allclose(out["fraction"], out["fraction_map"][:, :, w // 2:].mean(dim=(1, 2)), atol=1e-6)


def test_scanner_augmentation_moves_air_and_adds_the_asked_noise():
    gen = torch.Generator().manual_seed(0)
    air = torch.full((400, 1, 32, 32), -1000.0)
    out = scanner_augment(air, 1.0, gen, ScannerRanges(noise_hu=(0.0, 0.0)))
    means = out.mean(dim=(1, 2, 3))
    assert float(means.min()) >= -1050.5 and float(means.max()) <= -949.5      # air drift +-50 HU
    assert float(means.std()) > 20                                           # and it is drawn, not fixed
    flat = torch.full((200, 1, 64, 64), -860.0)
    noisy = scanner_augment(flat, 1.0, torch.Generator().manual_seed(1),
                            ScannerRanges(noise_hu=(60.0, 60.0), air_shift_hu=(0.0, 0.0), water_shift_hu=(0.0, 0.0)))
    sd = noisy.flatten(1).std(dim=1)
    expected = np.sqrt(60.0 ** 2 - 20.0 ** 2)                                  # the source's own noise counted
    assert abs(float(sd.median()) - expected) < 0.1 * expected


def test_resample_keeps_the_physical_size_and_blur_keeps_the_mean():
    gen = torch.Generator().manual_seed(0)
    image = torch.zeros(1, 1, 40, 40)
    image[:, :, 10:30, 10:30] = 1.0                              # a 20 x 20 px square at 0.5 mm = 10 mm
    out, theta = resample(image, torch.tensor([0.5]), 1.0, 20, gen)   # 20 px at 1 mm = the whole source
    assert out.shape == (1, 1, 20, 20) and theta.shape == (1, 2, 3)
    assert abs(float(out.mean()) - 0.25) < 0.03                  # the square covers a quarter either way
    blurred = gaussian_blur(image, torch.tensor([2.0]))
    assert abs(float(blurred.mean()) - float(image.mean())) < 0.01 and float(blurred.max()) < 1.0


def _synthetic_patches(n=120, seed=0) -> PatchSet:
    """Normal lung (-860 HU, fine noise) against panlobular-like lung (-975 HU with a few vessels)."""
    rng = np.random.default_rng(seed)
    normal = -860 + 25 * rng.standard_normal((n, 31, 31))
    low = -975 + 25 * rng.standard_normal((n, 31, 31))
    low[:, 15, :] = -300                                        # a vessel through each
    return PatchSet(np.concatenate([normal, low]).astype(np.float32),
                    np.array([0] * n + [5] * n, np.int64))


def test_training_learns_patterns_and_fractions_on_labelled_patches():
    from EmphysemaXAILib.model.pattern_training import PatternTrainConfig, predict_patches, train_pattern_model

    patches = _synthetic_patches()
    train, test = patch_folds(patches.labels, 4, seed=0)[0]
    config = PatternTrainConfig(epochs=10, width=4, batch_cip=32)
    model, history = train_pattern_model(patches, train, None, config, progress=False)
    assert len(history) == 10 and history[-1]["pattern"] < history[0]["pattern"]
    probs, fraction = predict_patches(model, patches.images[test], patches.pixel_mm, config)
    labels = patches.labels[test]
    assert probs.shape == (len(test), len(PATTERNS)) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.mean(probs.argmax(1) == labels) >= 0.9
    assert fraction[labels == 5].mean() > fraction[labels == 0].mean() + 0.3
    assert group_probabilities(probs).shape == (len(test), 4)
    # seeded: the same run gives the same weights
    short = PatternTrainConfig(epochs=1, width=4, batch_cip=32)
    first, _ = train_pattern_model(patches, train, None, short, progress=False)
    again, _ = train_pattern_model(patches, train, None, short, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_case_predictor_maps_every_lung_voxel(pattern_model):
    from EmphysemaXAILib.model.pattern_infer import PatternPredictor
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

    phantom = generate_phantom(PhantomParams(size="small", extent_pct=12, pattern="centrilobular", seed=5))
    labels = phantom.labels["lungs"]
    result = PatternPredictor(pattern_model, device="cpu").predict(phantom.ct, labels)
    codes = result.pattern_labels
    assert codes.shape == labels.shape and codes.dtype == np.uint8
    assert not codes[labels == 0].any() and codes[labels > 0].min() >= 1 and codes.max() <= len(PATTERNS)
    shares = result.summary["patterns"]["share_by_region"]
    for region in ("whole", "right", "left", "upper", "middle", "lower"):
        assert abs(sum(shares[region].values()) - 100.0) < 1e-6
    # the label map on the CT grid holds (about) the shares counted on the working grid
    ct_share = 100.0 * np.bincount(codes[labels > 0], minlength=7)[1:] / (labels > 0).sum()
    assert np.allclose(ct_share, [shares["whole"][p] for p in PATTERNS], atol=3.0)
    assert 0.0 <= result.summary["extent_pct"] <= 100.0
    from EmphysemaXAILib.model.tiles import from_working_grid

    fraction_ct = from_working_grid(result.fraction_map, result.grid, phantom.ct)
    assert abs(100 * fraction_ct[labels > 0].mean() - result.summary["extent_pct"]) < 2.0


def test_explanations_target_emphysema_or_a_pattern(pattern_model):
    from EmphysemaXAILib.explain.methods import TargetLogit, attribute
    from EmphysemaXAILib.model.checkpoint import load_model
    from EmphysemaXAILib.model.tiles import FILL_HU

    model, _ = load_model(pattern_model)
    rng = np.random.default_rng(0)
    tiles = (-860 + 30 * rng.standard_normal((2, 1, 32, 32))).astype(np.float32)
    tiles[:, :, :, :6] = FILL_HU
    maps = {}
    for target in ("emphysema", "paraseptal"):
        maps[target] = attribute(model, tiles, "ig", steps=48, target=target)
        assert maps[target].shape == tiles.shape and not maps[target][:, :, :, :6].any()
        # integrated gradients are complete: the map sums to the target's change from the baseline
        wrapper = TargetLogit(model, target)
        x = torch.from_numpy(tiles)
        base = torch.where(x < FILL_HU - 0.5, torch.full_like(x, -860.0), x)
        with torch.no_grad():
            delta = (wrapper(x) - wrapper(base))[:, 0].numpy()
        assert np.allclose(maps[target].sum(axis=(1, 2, 3)), delta, atol=0.05 * np.abs(delta).max() + 1e-3)
    assert not np.allclose(maps["emphysema"], maps["paraseptal"])
    for method in ("gradcam", "attention", "occlusion"):
        assert attribute(model, tiles, method, target="panlobular").shape == tiles.shape
    with pytest.raises(ValueError, match="unknown explanation target"):
        TargetLogit(model, "bullous")


def test_a_pattern_target_needs_a_pattern_model(tiny_model, tmp_path):
    from EmphysemaXAILib.explain.methods import TargetLogit
    from EmphysemaXAILib.model.checkpoint import load_model

    severity_net, _ = load_model(tiny_model)
    with pytest.raises(ValueError, match="no paraseptal output"):
        TargetLogit(severity_net, "paraseptal")


def _write_tiffs(folder, images):
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        tifffile.imwrite(folder / f"roi_{i:02d}.tif", np.asarray(image, np.int16))


def test_patterns_command_writes_one_row_per_image(pattern_model, tmp_path):
    rng = np.random.default_rng(0)
    _write_tiffs(tmp_path / "rois", [-860 + 30 * rng.standard_normal((31, 31)),
                                     -950 + 30 * rng.standard_normal((61, 45))])
    out = tmp_path / "patterns.csv"
    done = run_cli("patterns", tmp_path / "rois", "--pixel-mm", 0.7, "--model", pattern_model, "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows"] == 2 and summary["model"]["name"] == "test-pattern"
    import csv

    rows = list(csv.DictReader(open(out)))
    assert [r["image"] for r in rows] == ["rois/roi_00.tif", "rois/roi_01.tif"]
    for row in rows:
        p = np.array([float(row[f"p_{k}"]) for k in PATTERNS])
        assert abs(p.sum() - 1) < 1e-3 and row["subclass"] in PATTERNS
        assert row["pattern"] in ("normal", "centrilobular", "paraseptal", "panlobular")
        assert abs(float(row["p_centrilobular"]) - p[1:4].sum()) < 1e-3
        assert 0 <= float(row["emphysema_pct"]) <= 100
    # the air calibration changes what the model sees
    out2 = tmp_path / "calibrated.csv"
    assert run_cli("patterns", tmp_path / "rois", "--pixel-mm", 0.7, "--air-hu", -920, "--model", pattern_model,
                   "--out", out2).returncode == 0
    assert open(out2).read() != open(out).read()


@pytest.mark.parametrize("case", ["no-pixel-size", "not-hu", "bad-pixel", "bad-air", "severity-model"])
def test_patterns_command_refuses_bad_input_and_writes_nothing(case, pattern_model, tiny_model, tmp_path):
    rng = np.random.default_rng(0)
    images = [-860 + 30 * rng.standard_normal((31, 31))] if case != "not-hu" else [rng.integers(0, 255, (31, 31))]
    _write_tiffs(tmp_path / "rois", images)
    args = {"no-pixel-size": [], "not-hu": ["--pixel-mm", 0.7], "bad-pixel": ["--pixel-mm", 700],
            "bad-air": ["--pixel-mm", 0.7, "--air-hu", 0], "severity-model": ["--pixel-mm", 0.7]}[case]
    model = tiny_model if case == "severity-model" else pattern_model
    out = tmp_path / "out.csv"
    done = run_cli("patterns", tmp_path / "rois", *args, "--model", model, "--out", out)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    expected = {"no-pixel-size": "--pixel-mm", "not-hu": "not lung parenchyma in HU", "bad-pixel": "millimetres",
                "bad-air": "not an air reading", "severity-model": "not a pattern model"}[case]
    assert expected in done.stderr
    assert not out.exists()
