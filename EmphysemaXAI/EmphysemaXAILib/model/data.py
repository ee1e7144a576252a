"""Training data for the severity network: phantom patches with per-patch truth, augmented
with MONAI transforms (rotation, flips, elastic deformation, intensity shift, noise).

An item is one 2.5D patch: ``image`` (S, P, P) float32 HU, its ``fraction`` (emphysema voxels
/ lung voxels, a float), ``subtype`` (0 none, 1-4), ``zone`` (0 upper, 1 middle, 2 lower) and
``lung_fraction``. Geometric augmentations keep the per-patch fractions valid (the fraction of
a patch hardly changes under rotation, flips and mild elastic deformation); noise and intensity
shifts are the nuisances the model must see through, so the truth stays that of the noise-free
lesion mask.
"""
from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (Compose, Rand2DElastic, RandFlip, RandGaussianNoise, RandRotate,
                              RandShiftIntensity)

from ..phantom.patches import sample_patches


def augmentations(seed: int = 0, noise_hu: float = 20.0) -> Compose:
    """MONAI augmentation of a (S, P, P) HU patch (channels first), seeded."""
    transform = Compose([
        RandFlip(prob=0.5, spatial_axis=0),
        RandFlip(prob=0.5, spatial_axis=1),
        RandRotate(range_x=np.pi / 12, prob=0.5, keep_size=True, mode="bilinear", padding_mode="border"),
        Rand2DElastic(spacing=(16, 16), magnitude_range=(0.0, 1.0), prob=0.2, mode="bilinear",
                      padding_mode="border"),
        RandShiftIntensity(offsets=15.0, prob=0.3),
        RandGaussianNoise(prob=0.3, mean=0.0, std=noise_hu),
    ])
    transform.set_random_state(seed=seed)
    return transform


class PhantomPatchDataset(torch.utils.data.Dataset):
    """Patches of a list of phantoms (``n_per_phantom`` each, sampled once, seeded)."""

    def __init__(self, phantoms, n_per_phantom: int = 256, size: int = 64, slices: int = 3,
                 seed: int = 0, augment: bool = True):
        rng = np.random.default_rng(seed)
        batches = [sample_patches(p, n_per_phantom, size=size, slices=slices, rng=rng) for p in phantoms]
        self.images = np.concatenate([b.images for b in batches])
        self.fraction = np.concatenate([b.emphysema_fraction for b in batches]).astype(np.float32)
        self.subtype = np.concatenate([b.subtype for b in batches]).astype(np.int64)
        self.zone = np.concatenate([b.zone for b in batches]).astype(np.int64)
        self.lung_fraction = np.concatenate([b.lung_fraction for b in batches]).astype(np.float32)
        self.case = np.concatenate([np.full(len(b), i) for i, b in enumerate(batches)])
        self.transform = augmentations(seed) if augment else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = torch.from_numpy(self.images[index])
        if self.transform is not None:
            image = torch.as_tensor(self.transform(image), dtype=torch.float32)
        return {"image": image, "fraction": torch.tensor(self.fraction[index]),
                "subtype": torch.tensor(self.subtype[index]), "zone": torch.tensor(self.zone[index]),
                "lung_fraction": torch.tensor(self.lung_fraction[index]), "case": int(self.case[index])}
