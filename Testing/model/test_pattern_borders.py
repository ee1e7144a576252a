"""Issue 25: the pattern model must mark disease, not anatomy (chest-wall masking and synthetic
pleural borders in training, the extent label rule of the map) and read a scanner whose air is
off (air offsets; generated data)."""
import json

import numpy as np
import torch

from EmphysemaXAILib.analysis.patterns import PATTERNS
from EmphysemaXAILib.model.cip_patches import PatchSet, chest_wall_mask, duplicate_groups, patch_folds
from EmphysemaXAILib.model.pattern_augment import pleural_border
from EmphysemaXAILib.model.tiles import FILL_HU


def _lung(n=6, seed=0):
    return (-860 + 25 * np.random.default_rng(seed).standard_normal((n, 31, 31))).astype(np.float32)


def test_chest_wall_mask_finds_an_edge_band_and_not_a_vessel():
    images = _lung(3)
    images[0, :, 24:] = 40.0                       # chest wall along the right edge (23 % of the patch)
    images[1, 15:17, :] = -100.0                   # a thin vessel across the patch (6 %, touches two edges)
    images[1, 0:2, 0:3] = -100.0                   # and a speck in a corner
    mask = chest_wall_mask(images)
    assert mask[0, :, 24:].all() and not mask[0, :, :23].any()
    assert not mask[1].any() and not mask[2].any()


def test_duplicates_stay_in_one_fold():
    images = _lung(40)
    images[7] = images[3]
    images[30] = images[3]
    labels = np.array([0, 5] * 20, np.int64)
    labels[30] = labels[3]
    groups = duplicate_groups(images)
    assert groups[7] == groups[30] == groups[3] == 3 and groups[5] == 5
    folds = patch_folds(labels, 4, seed=0, images=images)
    for train, test in folds:
        assert len(set(train) & set(test)) == 0
        assert ({3, 7, 30} <= set(test)) or not ({3, 7, 30} & set(test))
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(40))


def test_pleural_border_masks_one_edge_partly():
    mask = pleural_border(500, 16, torch.Generator().manual_seed(0))
    assert mask.shape == (500, 1, 16, 16)
    share = mask.mean(dim=(1, 2, 3))
    assert float(share.min()) > 0.0 and float(share.max()) < 0.8 and 0.1 < float(share.mean()) < 0.5
    # the wall touches an edge: some border row or column is fully wall in most images
    m = mask[:, 0]
    edges = torch.stack([m[:, 0].all(1), m[:, -1].all(1), m[:, :, 0].all(1), m[:, :, -1].all(1)])
    assert float(edges.any(0).float().mean()) > 0.5


def test_border_aware_batches_put_non_lung_at_the_fill_value():
    from EmphysemaXAILib.model.pattern_training import PatternTrainConfig, _cip_batch

    images = _lung(64)
    images[:32, :, 22:] = 40.0
    labels = np.array([4] * 32 + [0] * 32, np.int64)
    patches = PatchSet(images, labels)
    config = PatternTrainConfig(mask_chest_wall=True, border_prob=1.0)
    image, label, target, lung = _cip_batch(patches, np.arange(64), config, torch.Generator().manual_seed(0),
                                            True, chest_wall_mask(images))
    assert lung is not None and image.shape == lung.shape == (64, 1, config.size, config.size)
    outside = lung == 0
    assert torch.all(image[outside] == FILL_HU) and float(image[~outside].max()) < 0
    assert float(outside[32:].float().mean(dim=(1, 2, 3)).min()) > 0    # every normal patch got a border
    assert torch.equal(label, torch.from_numpy(labels)) and float(target.max()) < 0.05


def test_air_offset_is_undone_by_the_air_calibration():
    from EmphysemaXAILib.analysis.calibration import calibration_from_refs
    from EmphysemaXAILib.model.pattern_runs import air_offset

    hu = np.array([-1000.0, -950.0, -860.0, 0.0, 40.0], np.float32)
    for offset in (-80.0, -40.0, 40.0):
        shifted = air_offset(hu, offset)
        assert abs(shifted[0] - (-1000.0 + offset)) < 1e-3 and shifted[3] == 0.0
        back = calibration_from_refs(-1000.0 + offset, "user", None).apply(shifted)
        assert np.allclose(back, hu, atol=0.5)


def test_the_extent_rule_labels_as_much_lung_as_the_extent(tmp_path):
    from EmphysemaXAILib.model.checkpoint import save_model
    from EmphysemaXAILib.model.pattern_infer import PatternPredictor
    from EmphysemaXAILib.model.pattern_net import PatternNet
    from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

    torch.manual_seed(0)
    folder = tmp_path / "model"
    save_model(PatternNet(width=4, hidden=8).eval(),
               {"name": "test-extent-rule", "map_rule": "extent",
                "architecture": {"kind": "pattern", "width": 4, "hidden": 8, "pixel_mm": 1.0, "slice_mm": 2.0},
                "extent_calibration": [1.0, 0.0], "extent_sigma": 1.0}, folder)
    phantom = generate_phantom(PhantomParams(size="small", extent_pct=12, pattern="mixed", seed=5))
    predictor = PatternPredictor(folder, device="cpu")
    result = predictor.predict(phantom.ct, phantom.labels["lungs"])
    patterns = result.summary["patterns"]
    assert patterns["map_rule"] == "extent"
    assert abs(patterns["emphysema_share_pct"] - result.summary["extent_pct"]) < 0.5
    assert patterns["share_by_region"]["whole"]["normal"] > 0
    whole = patterns["share_by_region"]["whole"]
    broad = {"centrilobular": sum(whole[p] for p in PATTERNS[1:4]), "paraseptal": whole["paraseptal"],
             "panlobular": whole["panlobular"]}
    assert patterns["leading_emphysema"] == max(broad, key=broad.get)
    predictor.map_rule = "argmax"
    argmax = predictor.predict(phantom.ct, phantom.labels["lungs"]).summary["patterns"]
    assert argmax["map_rule"] == "argmax" and set(argmax["share_by_region"]["whole"]) == set(PATTERNS)
    assert json.loads((folder / "config.json").read_text())["map_rule"] == "extent"
