"""The severity network: shapes, attention normalisation, determinism, patch-to-case pooling."""
import numpy as np
import pytest
import torch

from EmphysemaXAILib.model.severity_net import N_CLASSES, N_SUBTYPES, SeverityNet, SpatialAttention, normalise_hu
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.patches import sample_patches


def test_spatial_attention_is_a_softmax_over_positions():
    torch.manual_seed(0)
    layer = SpatialAttention(8)
    features = torch.randn(2, 8, 4, 5)
    attended, attention = layer(features)
    assert attention.shape == (2, 4, 5)
    assert torch.allclose(attention.sum(dim=(1, 2)), torch.ones(2))
    assert torch.allclose(attended, features * attention[:, None])


def test_network_on_phantom_patches_shapes_and_ranges():
    torch.manual_seed(0)
    phantom = generate_phantom(PhantomParams(size="small", seed=3, extent_pct=15, pattern="mixed"))
    batch = sample_patches(phantom, 12, size=32, slices=3, rng=0)
    net = SeverityNet(slices=3, width=8, hidden=16).eval()
    with torch.no_grad():
        out = net(torch.from_numpy(batch.images))
        case = net.case(out, torch.from_numpy(batch.lung_fraction).float())
    assert out["fraction"].shape == (12,) and ((out["fraction"] >= 0) & (out["fraction"] <= 1)).all()
    assert out["subtype_logits"].shape == (12, N_SUBTYPES) and out["attention"].shape == (12, 4, 4)
    assert case["class_logits"].shape == (N_CLASSES,)
    assert torch.isclose(case["patch_weights"].sum(), torch.tensor(1.0))
    expected = 100 * float((out["fraction"] * torch.from_numpy(batch.lung_fraction).float()).sum()
                           / float(batch.lung_fraction.sum()))
    assert float(case["extent_pct"]) == pytest.approx(expected, rel=1e-5)


def test_same_seed_same_output_on_cpu():
    x = torch.from_numpy(np.random.default_rng(0).normal(-850, 80, (4, 3, 32, 32)).astype(np.float32))
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        net = SeverityNet(width=8, hidden=16).eval()
        with torch.no_grad():
            outputs.append(net(x)["fraction"])
    assert torch.equal(outputs[0], outputs[1])
    assert normalise_hu(torch.tensor([-2000.0, -1100.0, 200.0, 500.0])).tolist() == [0.0, 0.0, 1.0, 1.0]


def _tiles(phantoms, n=20, size=32):
    from EmphysemaXAILib.model.severity_dataset import TileSet, phantom_tiles

    return TileSet.concat([phantom_tiles(p, n, size=size, seed=i) for i, p in enumerate(phantoms)])


def test_tile_dataset_with_monai_augmentation():
    from monai.transforms import Compose

    from EmphysemaXAILib.model.severity_dataset import TileDataset, augmentations
    from EmphysemaXAILib.model.tiles import FILL_HU

    phantoms = [generate_phantom(PhantomParams(size="small", seed=s, extent_pct=e, pattern=p))
                for s, e, p in ((1, 0, "none"), (2, 20, "mixed"))]
    tiles = _tiles(phantoms)
    plain, augmented = TileDataset(tiles, augment=False), TileDataset(tiles, augment=True)
    assert len(plain) == 40 and isinstance(augmentations(), Compose)
    item = plain[25]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert float(item["fraction"]) == pytest.approx(float(tiles.fraction[25]))
    assert (tiles.fraction[:20] == 0).all() and tiles.fraction[20:].mean() > 0.1  # healthy vs 20 %
    changed = sum(not torch.equal(augmented[i]["image"], plain[i]["image"]) for i in range(40))
    assert changed > 10  # MONAI flips / rotations / noise really applied
    for i in range(40):  # re-masked: outside the (augmented) lung the model sees FILL_HU only
        image = augmented[i]["image"]
        assert ((image == FILL_HU) | (image < 150)).all()
    first, second = TileDataset(tiles, augment=True), TileDataset(tiles, augment=True)
    order = [5, 30, 5, 12]  # the same reads in the same order give the same augmented tiles
    assert all(torch.equal(first[i]["image"], second[i]["image"]) for i in order)


def test_patch_training_learns_and_is_deterministic(tmp_path):
    from EmphysemaXAILib.model.severity_dataset import TileDataset
    from EmphysemaXAILib.model.severity_training import TrainConfig, train_patch_model

    phantoms = [generate_phantom(PhantomParams(size="small", seed=s, extent_pct=e, pattern=p))
                for s, e, p in ((1, 0, "none"), (2, 30, "mixed"), (3, 15, "centrilobular"))]
    train = TileDataset(_tiles(phantoms[:2], 48), augment=True)
    val = TileDataset(_tiles(phantoms[2:], 32), augment=False)
    config = TrainConfig(epochs=6, batch_size=16, lr=3e-3, patience=10, seed=0, device="cpu")
    histories = []
    for run in range(2):
        torch.manual_seed(0)
        net = SeverityNet(width=8, hidden=16)
        histories.append(train_patch_model(net, train, val, config, tmp_path / f"run{run}", progress=False))
    history = histories[0]
    assert len(history) == 6
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # it learns
    assert [h["val_loss"] for h in histories[0]] == [h["val_loss"] for h in histories[1]]  # seeded
    assert (tmp_path / "run0" / "log.csv").is_file()
    assert (tmp_path / "run0" / "training_curve.png").stat().st_size > 5000
