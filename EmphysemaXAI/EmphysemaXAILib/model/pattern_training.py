"""Training the pattern CNN on real expert labels and phantom truth together.

Each step draws a batch of CIP patches (real parenchyma, expert pattern labels) and a batch of
phantom patches (exact lesion masks over the phantoms' dose / kernel range), resamples both to
the working pixel size with random geometry (:func:`.pattern_augment.resample`) and makes them
look like another scanner's (:func:`.pattern_augment.scanner_augment`). Losses:
- pattern: cross-entropy of the CIP patch's attention-pooled logits against the expert label
  (classes weighted by inverse frequency, label smoothing 0.05). Two options are off in the
  shipped recipe: ``dense_weight`` x the same for the plain mean of the dense logits (every
  position learns the label) and ``phantom_normal_weight`` x cross-entropy calling lesion-free
  phantom patches normal (a lung border alone is not paraseptal emphysema); runs with them
  scored 0.54-0.61 6-class accuracy on a held-out CIP fold against 0.78 for the run without
  (other settings differed too: not a controlled comparison, so they stay off);
- fraction: binary cross-entropy of the dense ``fraction_map`` against the phantom's lesion
  fraction around each position (lung-weighted, ``phantom_fraction_weight``), and of a CIP
  patch's mean fraction against the
  share of its *clean* source pixels below -950 HU (the augmented image must give the clean
  image's answer: noise, kernel and calibration drift are nuisances).
Border-aware options (issue 25; off in the recipe of the model shipped before it):
``mask_chest_wall`` sets the chest-wall band of a CIP patch (:func:`.cip_patches.chest_wall_mask`)
to the +200 HU fill a case gives non-lung and passes the lung mask (as inference does), and
``border_prob`` gives that share of the non-paraseptal patches a synthetic pleural border
(:func:`.pattern_augment.pleural_border`) with their label unchanged: with both, a lung border is
no class's feature (176 of 184 paraseptal patches hold chest wall).
AdamW, one-cycle learning rate, fixed epochs, seeded generators (repeatable on the CPU).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ..analysis.patterns import PATTERNS
from ..analysis.severity import EMPHYSEMA_HU
from .cip_patches import PatchSet, chest_wall_mask
from .pattern_augment import ScannerRanges, center_resample, pleural_border, resample, scanner_augment
from .pattern_net import STRIDE, PatternNet
from .tiles import FILL_HU

LAA_HU = EMPHYSEMA_HU
PARASEPTAL = PATTERNS.index("paraseptal")


@dataclass
class PatternTrainConfig:
    pixel_mm: float = 1.0          # working pixel size
    patch_mm: float = 18.0         # training image width (CIP's patches are about 20 mm wide)
    cip_pixel_mm: tuple = (0.58, 0.75)   # CIP stores no spacing: drawn in COPDGene's range
    epochs: int = 150
    batch_cip: int = 48
    batch_phantom: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    fraction_weight: float = 1.0
    phantom_fraction_weight: float = 0.5
    dense_weight: float = 0.0       # cross-entropy of the mean of the dense logits (every position)
    phantom_normal_weight: float = 0.0   # lesion-free phantom patches as "normal"
    width: int = 24                # pattern trunk
    fraction_width: int = 16       # fraction trunk
    seed: int = 0
    augment: bool = True
    mask_chest_wall: bool = False   # CIP's chest-wall bands -> +200 HU, lung mask given (as on a case)
    border_prob: float = 0.0        # share of non-paraseptal CIP patches given a synthetic pleural border
    ranges: ScannerRanges = field(default_factory=ScannerRanges)

    @property
    def size(self) -> int:
        return int(round(self.patch_mm / self.pixel_mm / STRIDE)) * STRIDE


@dataclass
class PhantomPatches:
    """2D phantom patches at ``pixel_mm``: ``images`` (n, H, W) HU with non-lung at FILL_HU,
    ``lung`` and ``lesion`` (n, H, W) float32 masks (truth from the noise-free lesion map)."""

    images: np.ndarray
    lung: np.ndarray
    lesion: np.ndarray
    pixel_mm: float

    def __len__(self) -> int:
        return len(self.images)


def phantom_patches(design: list, per_phantom: int, size_px: int = 16, seed: int = 0) -> PhantomPatches:
    """2D patches (one axial slice) of phantoms generated from ``design`` (PhantomParams list)."""
    from ..phantom import generate_phantom
    from ..phantom.patches import sample_patches

    images, lung, lesion, pixel = [], [], [], None
    for i, params in enumerate(design):
        phantom = generate_phantom(params)
        batch = sample_patches(phantom, per_phantom, size=size_px, slices=1, rng=[seed, i], min_lung=0.5)
        images.append(np.where(batch.lung[:, 0], batch.images[:, 0], FILL_HU))
        lung.append(batch.lung[:, 0])
        lesion.append(batch.lesion[:, 0] > 0)
        pixel = float(phantom.ct.spacing[0])
    return PhantomPatches(np.concatenate(images).astype(np.float32), np.concatenate(lung).astype(np.float32),
                          np.concatenate(lesion).astype(np.float32), pixel)


def _cip_batch(patches: PatchSet, index: np.ndarray, config: PatternTrainConfig, gen: torch.Generator,
               augment: bool, wall: np.ndarray | None = None) -> tuple:
    """(image (n, 1, S, S) HU, labels (n,), clean %LAA-950 share of the lung (n,), lung mask
    (n, 1, S, S) or None when no border option is on)."""
    images = torch.from_numpy(patches.images[index])[:, None]
    border = wall is not None or config.border_prob > 0
    if border:
        source_wall = torch.from_numpy(wall[index])[:, None].float() if wall is not None else torch.zeros_like(images)
        images = torch.cat([images, source_wall], 1)
    if augment:
        lo, hi = config.cip_pixel_mm
        source = lo + (hi - lo) * torch.rand(len(index), generator=gen)
        clean, _ = resample(images, source, config.pixel_mm, config.size, gen)
    else:
        clean = torch.cat([center_resample(images[:, i:i + 1], patches.pixel_mm, config.pixel_mm, config.size)
                           for i in range(images.shape[1])], 1)
    labels = torch.from_numpy(patches.labels[index])
    lung = None
    if border:
        outside = (clean[:, 1:2] > 0.5).float()
        clean = clean[:, :1]
        if config.border_prob > 0 and augment:
            pick = (torch.rand(len(index), generator=gen) < config.border_prob) & (labels != PARASEPTAL)
            synthetic = pleural_border(len(index), config.size, gen)
            outside = torch.maximum(outside, synthetic * pick[:, None, None, None].float())
        lung = 1.0 - outside
    image = scanner_augment(clean, config.pixel_mm, gen, config.ranges) if augment else clean
    if lung is None:
        target = (clean < LAA_HU).float().mean(dim=(1, 2, 3))
    else:
        image = torch.where(lung > 0, image, torch.full_like(image, FILL_HU))
        target = ((clean < LAA_HU).float() * lung).sum(dim=(1, 2, 3)) / lung.sum(dim=(1, 2, 3)).clamp_min(1.0)
    return image, labels, target, lung


def _phantom_batch(patches: PhantomPatches, index: np.ndarray, config: PatternTrainConfig, gen: torch.Generator):
    stack = torch.from_numpy(np.stack([patches.images[index], patches.lung[index], patches.lesion[index]], 1))
    source = torch.full((len(index),), patches.pixel_mm)
    out, _ = resample(stack, source, config.pixel_mm, config.size, gen)
    lung = (out[:, 1:2] > 0.5).float()
    image = scanner_augment(out[:, :1], config.pixel_mm, gen, config.ranges) if config.augment else out[:, :1]
    image = torch.where(lung > 0, image, torch.full_like(image, FILL_HU))
    pooled_lung = nn.functional.avg_pool2d(lung, STRIDE)[:, 0]
    pooled_lesion = nn.functional.avg_pool2d(out[:, 2:3] * lung, STRIDE)[:, 0]
    target = pooled_lesion / pooled_lung.clamp_min(1e-6)
    return image, lung, target.clamp(0, 1), pooled_lung


def class_weights(labels: np.ndarray) -> torch.Tensor:
    counts = np.bincount(labels, minlength=len(PATTERNS)).astype(np.float64)
    weights = counts.sum() / np.maximum(counts, 1) / len(PATTERNS)
    return torch.tensor(weights, dtype=torch.float32)


def train_pattern_model(cip: PatchSet, train_index: np.ndarray, phantoms: PhantomPatches | None,
                        config: PatternTrainConfig, progress: bool = True) -> tuple:
    """(trained PatternNet in eval mode, history: list of per-epoch dicts)."""
    from tqdm import tqdm

    # seeded generators make runs repeatable on the CPU (a test trains twice and compares the
    # weights); torch.use_deterministic_algorithms is not called: it imports torch._inductor,
    # which crashes a process that has loaded Slicer's VTK first (the Slicer application, the tests)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = PatternNet(width=config.width, fraction_width=config.fraction_width)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = max(1, len(train_index) // config.batch_cip)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=steps * config.epochs)
    ce = nn.CrossEntropyLoss(weight=class_weights(cip.labels[train_index]), label_smoothing=0.05)
    bce = nn.BCELoss(reduction="none")
    wall = chest_wall_mask(cip.images) if config.mask_chest_wall else None
    history = []
    for epoch in tqdm(range(config.epochs), desc="pattern model", unit="epoch", disable=not progress):
        model.train()
        order = rng.permutation(train_index)
        totals, start = {"pattern": 0.0, "fraction_cip": 0.0, "fraction_phantom": 0.0}, time.perf_counter()
        for step in range(steps):
            index = order[step * config.batch_cip:(step + 1) * config.batch_cip]
            image, label, target, lung = _cip_batch(cip, index, config, gen, config.augment, wall)
            out = model(image, lung)
            loss_pattern = ce(out["pattern_logits"], label)
            loss_dense = ce(out["pattern_map"].mean(dim=(2, 3)), label)
            loss_cip = bce(out["fraction"].clamp(1e-6, 1 - 1e-6), target).mean()
            loss = loss_pattern + config.dense_weight * loss_dense + config.fraction_weight * loss_cip
            if phantoms is not None and len(phantoms):
                pick = rng.integers(0, len(phantoms), config.batch_phantom)
                p_image, p_lung, p_target, p_weight = _phantom_batch(phantoms, pick, config, gen)
                # the fraction trunk only: phantoms must not move the pattern trunk's batch-norm
                # statistics (they did, and the 6-class accuracy on real patches fell)
                p_out = model.fraction_only(p_image, p_lung) if config.phantom_normal_weight == 0 else \
                    model(p_image, p_lung)
                dense = bce(p_out["fraction_map"].clamp(1e-6, 1 - 1e-6), p_target)
                loss_phantom = (dense * p_weight).sum() / p_weight.sum().clamp_min(1e-6)
                loss = loss + config.phantom_fraction_weight * loss_phantom
                clear = (p_target * p_weight).sum(dim=(1, 2)) == 0       # no lesion anywhere in the patch
                if bool(clear.any()) and config.phantom_normal_weight > 0:
                    normal = torch.zeros(int(clear.sum()), dtype=torch.long)
                    loss = loss + config.phantom_normal_weight * ce(p_out["pattern_logits"][clear], normal)
                totals["fraction_phantom"] += float(loss_phantom.detach())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            totals["pattern"] += float(loss_pattern.detach())
            totals["fraction_cip"] += float(loss_cip.detach())
        history.append({"epoch": epoch + 1, **{k: v / steps for k, v in totals.items()},
                        "seconds": round(time.perf_counter() - start, 2)})
    return model.eval(), history


def predict_patches(model, images: np.ndarray, pixel_mm: float, config: PatternTrainConfig,
                    augment_seed: int | None = None, batch: int = 256) -> tuple:
    """(probabilities (n, 6), emphysema fraction (n,)) of (n, H, W) HU patches at ``pixel_mm``:
    centre resampled to the working pixel size; with ``augment_seed`` the patches are first
    passed through :func:`scanner_augment` (a seeded "other scanner"). A model trained with
    ``mask_chest_wall`` sees each patch's chest-wall band as non-lung (+200 HU, lung mask)."""
    gen = torch.Generator().manual_seed(augment_seed or 0)
    probs, fractions = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            part = np.asarray(images[start:start + batch], np.float32)
            x = center_resample(torch.from_numpy(part)[:, None], pixel_mm, config.pixel_mm, config.size)
            if augment_seed is not None:
                x = scanner_augment(x, config.pixel_mm, gen, config.ranges)
            lung = None
            if config.mask_chest_wall:
                wall = torch.from_numpy(chest_wall_mask(part)[:, None].astype(np.float32))
                lung = (center_resample(wall, pixel_mm, config.pixel_mm, config.size) <= 0.5).float()
                x = torch.where(lung > 0, x, torch.full_like(x, FILL_HU))
            out = model(x, lung)
            probs.append(torch.softmax(out["pattern_logits"], 1).numpy())
            fractions.append(out["fraction"].numpy())
    return np.concatenate(probs), np.concatenate(fractions)


def config_record(config: PatternTrainConfig) -> dict:
    record = asdict(config)
    record["size"] = config.size
    return record


class PatternClassifier:
    """The pattern CNN as a patch classifier with scikit-learn's interface, for side-by-side
    figures on the same folds as the baselines: ``fit(images, labels)`` on (n, H, W) HU patches
    at ``pixel_mm`` (CIP patches only: no phantoms), ``predict_proba(images)`` -> (n, 6)."""

    def __init__(self, config: PatternTrainConfig | None = None, pixel_mm: float = 0.65):
        self.config = config or PatternTrainConfig()
        self.pixel_mm = pixel_mm
        self.model = None

    def fit(self, images: np.ndarray, labels: np.ndarray) -> "PatternClassifier":
        patches = PatchSet(np.asarray(images, np.float32), np.asarray(labels, np.int64), self.pixel_mm)
        self.model, _ = train_pattern_model(patches, np.arange(len(patches)), None, self.config, progress=False)
        return self

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return predict_patches(self.model, images, self.pixel_mm, self.config)[0]
