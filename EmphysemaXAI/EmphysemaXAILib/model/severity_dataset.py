"""Training data for the severity network: lung tiles of phantoms with per-tile truth
(:class:`TileSet`, :class:`TileDataset`) and cases as bags of tiles (:class:`CaseBag`).

Tiles are augmented with MONAI dictionary transforms (flips, rotation, elastic deformation on the image and its lung
mask together; intensity shift and noise on the image), then re-masked.

An item is one 2.5D tile (see :mod:`.tiles`): ``image`` (S, P, P) float32 HU with non-lung voxels
at FILL_HU, its ``fraction`` (emphysema voxels / lung voxels, a float), ``subtype`` (0 none, 1-4:
the dominant phantom subtype), ``zone`` (0 upper, 1 middle, 2 lower) and ``lung_fraction``.
The truth comes from the noise-free lesion mask, so noise and intensity shifts are nuisances the
model must see through; geometric augmentations hardly change a tile's fraction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.regions import slice_thirds
from .tiles import FILL_HU, extract_tiles, tile_corners, to_working_grid


@dataclass
class TileSet:
    """Tiles of one or more cases with their truth (arrays indexed by tile)."""

    images: np.ndarray        # (n, S, P, P) int16 HU (non-lung at FILL_HU)
    lung: np.ndarray          # (n, S, P, P) bool
    fraction: np.ndarray      # (n,) float32
    subtype: np.ndarray       # (n,) int64
    zone: np.ndarray          # (n,) int64
    case: np.ndarray          # (n,) int64 index of the case

    @classmethod
    def concat(cls, sets: list) -> "TileSet":
        offset, cases = 0, []
        for s in sets:
            cases.append(s.case + offset)
            offset += int(s.case.max()) + 1 if len(s.case) else 0
        return cls(*(np.concatenate([getattr(s, f) for s in sets]) for f in
                     ("images", "lung", "fraction", "subtype", "zone")), np.concatenate(cases))


def phantom_tiles(phantom, n: int, size: int = 64, slices: int = 3, offsets: int = 2, seed: int = 0) -> TileSet:
    """Up to ``n`` tiles of a phantom on the working grid, from ``offsets`` randomly shifted tilings."""
    rng = np.random.default_rng(seed)
    grid = to_working_grid(phantom.ct, phantom.labels["lungs"], extra={"emphysema": phantom.labels["emphysema"]})
    lung = grid.labels > 0
    thirds = slice_thirds(lung, grid.superior_is_high_index)
    parts = []
    for _ in range(offsets):
        offset = (rng.integers(slices), rng.integers(size), rng.integers(size))
        corners = tile_corners(lung, size, slices, offset)
        tiles, extra = extract_tiles(grid.hu, lung, corners, size, slices, {"emphysema": grid.extra["emphysema"]})
        parts.append((tiles, extra["emphysema"]))
    images = np.concatenate([t.images for t, _ in parts])
    inside = np.concatenate([t.lung for t, _ in parts])
    lesion = np.concatenate([e for _, e in parts]) * inside
    corners = np.concatenate([t.corners for t, _ in parts])
    pick = rng.permutation(len(images))[:n]
    images, inside, lesion, corners = images[pick], inside[pick], lesion[pick], corners[pick]
    lung_count = inside.sum(axis=(1, 2, 3))
    counts = np.stack([(lesion == code).sum(axis=(1, 2, 3)) for code in range(1, 5)], axis=1)
    total = counts.sum(axis=1)
    centre_z = np.clip(corners[:, 0] + slices // 2, 0, len(thirds) - 1)
    return TileSet(np.rint(images).astype(np.int16), inside, (total / np.maximum(lung_count, 1)).astype(np.float32),
                   np.where(total > 0, counts.argmax(axis=1) + 1, 0).astype(np.int64),
                   np.maximum(thirds[centre_z], 0).astype(np.int64), np.zeros(len(images), np.int64))


def augmentations(seed: int = 0, noise_hu: float = 20.0):
    """MONAI augmentation (a ``monai.transforms.Compose``) of {"image": (S, P, P) HU, "lung": (S, P, P)
    mask}, seeded. MONAI is imported here, not with the module: its import takes 4-8 s, which every
    ``evaluate`` and ``analyze`` with a model paid without augmenting anything."""
    from monai.transforms import (
        Compose,
        Rand2DElasticd,
        RandFlipd,
        RandGaussianNoised,
        RandRotated,
        RandShiftIntensityd,
    )

    keys = ("image", "lung")
    transform = Compose([
        RandFlipd(keys, prob=0.5, spatial_axis=0),
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandRotated(keys, range_x=np.pi / 12, prob=0.3, keep_size=True, mode=("bilinear", "nearest"),
                    padding_mode="border"),
        Rand2DElasticd(keys, spacing=(16, 16), magnitude_range=(0.0, 1.0), prob=0.1, mode=("bilinear", "nearest"),
                       padding_mode="border"),
        RandShiftIntensityd("image", offsets=10.0, prob=0.3),
        RandGaussianNoised("image", prob=0.3, mean=0.0, std=noise_hu),
    ])
    transform.set_random_state(seed=seed)
    return transform


class TileDataset(torch.utils.data.Dataset):
    """A :class:`TileSet` as a torch dataset, optionally augmented (then re-masked to the lung)."""

    def __init__(self, tiles: TileSet, augment: bool = True, seed: int = 0):
        self.tiles = tiles
        self.transform = augmentations(seed) if augment else None

    def __len__(self) -> int:
        return len(self.tiles.images)

    def __getitem__(self, index: int) -> dict:
        t = self.tiles
        image = torch.from_numpy(t.images[index].astype(np.float32))
        if self.transform is not None:
            lung = torch.from_numpy(t.lung[index].astype(np.float32))
            out = self.transform({"image": image, "lung": lung})
            image = torch.as_tensor(out["image"], dtype=torch.float32)
            image = torch.where(torch.as_tensor(out["lung"]) > 0.5, image, torch.tensor(FILL_HU))
        return {"image": image, "fraction": torch.tensor(t.fraction[index]),
                "subtype": torch.tensor(t.subtype[index]), "zone": torch.tensor(t.zone[index]),
                "case": int(t.case[index])}


@dataclass
class CaseBag:
    """One case as the model sees it: its lung tiles (offset 0) and its labels."""

    name: str
    subject: str
    images: np.ndarray          # (n, S, P, P) int16 HU
    lung_count: np.ndarray      # (n,)
    extent_pct: float = float("nan")   # NaN when unknown
    label: int = -1             # index into SEVERITY_CLASSES, -1 when unknown
    info: dict | None = None


def case_bag(ct, labels, name: str, subject: str, size: int, slices: int, extent_pct=float("nan"),
             label: int = -1, info=None) -> CaseBag:
    """The :class:`CaseBag` of a CT and its lung ``labels``: working grid, then its tiles."""
    grid = to_working_grid(ct, labels)
    lung = grid.labels > 0
    tiles, _ = extract_tiles(grid.hu, lung, tile_corners(lung, size, slices), size, slices)
    return CaseBag(name, subject, np.rint(tiles.images).astype(np.int16), tiles.lung_count, float(extent_pct),
                   int(label), info)
