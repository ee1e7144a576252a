"""Training runs: phantom design, patient-level splits, the two training stages, calibration.

Stage 1 (:func:`~.train.train_patch_model`): tiles with per-tile truth (phantoms only).
Stage 2 (:func:`train_case_model`): bags of a case's tiles with the case label; trains the gated
attention pooling and class head (encoder frozen, phantoms) or the whole network end to end
(users' cohorts, which have case labels only: extent loss when ``extent_pct`` is known, a band
loss keeping the extent inside the labelled class otherwise, and the class head's cross-entropy).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..analysis.severity import SEVERITY_CLASSES, SEVERITY_CUTPOINTS, severity_class
from .tiles import extract_tiles, tile_corners, to_working_grid

DOSES = ("standard", "low", "ultralow")
KERNELS = ("soft", "standard", "sharp")
PATTERNS = ("centrilobular", "panlobular", "paraseptal", "bullous", "mixed")
#: extent range drawn for each class (the last class capped where the phantoms stay anatomical)
CLASS_RANGES = {"none": (0.0, 5.0), "mild": (5.0, 15.0), "moderate": (15.0, 25.0), "severe": (25.0, 40.0)}


def phantom_design(n: int, seed: int, size: str = "medium") -> list:
    """``n`` phantom parameter sets: dose x kernel cycle through all 9 combinations; the class is
    drawn uniformly, the extent uniformly inside it (0 with pattern ``none`` for a third of the
    ``none`` cases), pattern among the subtypes and ``mixed``, inspiration 0.85-1.0."""
    from ..phantom.params import PhantomParams

    rng = np.random.default_rng([seed, 6])
    out = []
    for i in range(n):
        dose, kernel = DOSES[i % 3], KERNELS[(i // 3) % 3]
        cls = SEVERITY_CLASSES[int(rng.integers(4))]
        lo, hi = CLASS_RANGES[cls]
        pattern = str(rng.choice(PATTERNS))
        extent = float(np.round(rng.uniform(max(lo, 0.3), hi), 2))
        if cls == "none" and rng.random() < 1 / 3:
            pattern, extent = "none", 0.0
        out.append(PhantomParams(extent_pct=extent, pattern=pattern, dose=dose, kernel=kernel, size=size,
                                 seed=seed * 10000 + i, inspiration=float(np.round(rng.uniform(0.85, 1.0), 3))))
    return out


def split_subjects(subjects, seed: int, fractions=(0.70, 0.15, 0.15)) -> dict:
    """Patient-level split: ``{"train", "val", "test"}`` -> sorted indices of the items whose
    subject falls in that part (every subject's items stay together)."""
    unique = np.array(sorted(set(subjects)))
    rng = np.random.default_rng([seed, 7015])
    order = rng.permutation(len(unique))
    n_val = max(1, int(round(fractions[1] * len(unique))))
    n_test = max(1, int(round(fractions[2] * len(unique)))) if fractions[2] > 0 else 0
    if len(unique) < n_val + n_test + 1:
        raise ValueError(f"{len(unique)} subjects cannot be split into training, validation and test parts")
    parts = {"val": set(unique[order[:n_val]]), "test": set(unique[order[n_val:n_val + n_test]]),
             "train": set(unique[order[n_val + n_test:]])}
    return {name: [i for i, s in enumerate(subjects) if s in members] for name, members in parts.items()}


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
    grid = to_working_grid(ct, labels)
    lung = grid.labels > 0
    tiles, _ = extract_tiles(grid.hu, lung, tile_corners(lung, size, slices), size, slices)
    return CaseBag(name, subject, np.rint(tiles.images).astype(np.int16), tiles.lung_count, float(extent_pct),
                   int(label), info)


def phantom_case(params, tiles_per_case: int, size: int, slices: int):
    """Generate one phantom -> (TileSet of training tiles, CaseBag with the true extent and class)."""
    from ..phantom.generate import generate_phantom
    from .data import phantom_tiles

    phantom = generate_phantom(params)
    tileset = phantom_tiles(phantom, tiles_per_case, size, slices, seed=params.seed)
    extent = float(phantom.truth["extent_pct"])
    info = {"dose": params.dose, "kernel": params.kernel, "pattern": params.pattern, "seed": params.seed}
    bag = case_bag(phantom.ct, phantom.labels["lungs"], f"phantom-{params.seed}", str(params.seed), size, slices,
                   extent, SEVERITY_CLASSES.index(severity_class(extent)), info)
    return tileset, bag


def _phantom_job(args):
    return phantom_case(*args)


def generate_cases(design: list, tiles_per_case: int, size: int, slices: int, workers: int = 2,
                   progress: bool = True) -> list:
    """[(TileSet, CaseBag)] for every parameter set, in order, ``workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    jobs = [(p, tiles_per_case, size, slices) for p in design]
    if workers <= 1:
        return [phantom_case(*job) for job in tqdm(jobs, desc="phantoms", disable=not progress)]
    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(_phantom_job, jobs), total=len(jobs), desc="phantoms", disable=not progress))


def _bag_tensors(bag: CaseBag, rng, max_tiles: int | None):
    import torch

    pick = np.arange(len(bag.images))
    if max_tiles is not None and len(pick) > max_tiles:
        pick = np.sort(rng.choice(pick, max_tiles, replace=False))
    images = torch.from_numpy(bag.images[pick].astype(np.float32))
    lung = torch.from_numpy(bag.lung_count[pick].astype(np.float32) / bag.images[0].size)
    return images, lung


def case_outputs(model, bag: CaseBag, device, rng=None, max_tiles: int | None = None, grad: bool = False) -> dict:
    """The model's case outputs for a bag (all tiles, or a random subset of ``max_tiles``)."""
    import torch

    images, lung = _bag_tensors(bag, rng if rng is not None else np.random.default_rng(0), max_tiles)
    with torch.set_grad_enabled(grad):
        outs = [model(images[i:i + 256].to(device)) for i in range(0, len(images), 256)]
        patch = {k: torch.cat([o[k] for o in outs]) for k in ("fraction", "embedding")}
        return {**model.case(patch, lung.to(device)), "fractions": patch["fraction"]}


def _case_loss(out, bag: CaseBag, cutpoints, extent_weight: float):
    import torch

    loss = torch.zeros(())
    if bag.label >= 0:
        loss = loss + torch.nn.functional.cross_entropy(out["class_logits"][None].float().cpu(),
                                                        torch.tensor([bag.label]))
    extent = out["extent_pct"].float().cpu()
    if np.isfinite(bag.extent_pct):
        loss = loss + extent_weight * ((extent - bag.extent_pct) / 10.0) ** 2
    elif bag.label >= 0:   # keep the extent inside the labelled band
        bounds = [0.0] + [b for b, _ in cutpoints] + [100.0]
        lo, hi = bounds[bag.label], bounds[bag.label + 1]
        loss = loss + extent_weight * (torch.relu(lo - extent) + torch.relu(extent - hi)) / 10.0
    return loss


def train_case_model(model, train: list, val: list, *, epochs: int = 30, lr: float = 1e-3, patience: int = 6,
                     max_tiles: int = 64, freeze_encoder: bool = True, extent_weight: float = 1.0,
                     cutpoints=SEVERITY_CUTPOINTS, seed: int = 0, device="cpu", progress: bool = True) -> list:
    """Stage 2 on bags of tiles; batch norm keeps its running statistics. Early stopping on the
    validation loss (best weights kept). Returns the per-epoch history."""
    import torch
    from tqdm import tqdm

    from .train import EarlyStopping

    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 2])
    encoder_params = list(model.encoder.parameters()) + list(model.fraction_head.parameters()) + \
        list(model.subtype_head.parameters())
    for p in encoder_params:
        p.requires_grad_(not freeze_encoder)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    model.to(device).eval()
    history, stopper = [], EarlyStopping(patience)
    bar = tqdm(range(epochs), desc="case epochs", disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        total = 0.0
        for index in rng.permutation(len(train)):
            optimizer.zero_grad()
            loss = _case_loss(case_outputs(model, train[index], device, rng, max_tiles, grad=True),
                              train[index], cutpoints, extent_weight)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        val_loss = float(np.mean([float(_case_loss(case_outputs(model, b, device), b, cutpoints, extent_weight))
                                  for b in val])) if val else total / max(len(train), 1)
        scheduler.step(val_loss)
        history.append({"epoch": epoch + 1, "train_loss": total / max(len(train), 1), "val_loss": val_loss,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start})
        bar.set_postfix(train=f"{history[-1]['train_loss']:.4f}", val=f"{val_loss:.4f}")
        if stopper.step(model, val_loss):
            break
    stopper.restore(model)
    for p in model.parameters():
        p.requires_grad_(True)
    return history


def fit_calibration(rows: list) -> tuple:
    """(slope, intercept) of true against predicted case extent (least squares over ``rows``
    with a known extent): the linear map applied to tile fractions at inference."""
    pairs = np.array([(r["extent_raw"], r["extent_true"]) for r in rows if r.get("extent_true") is not None])
    if len(pairs) < 3:
        return 1.0, 0.0
    slope, intercept = np.polyfit(pairs[:, 0], pairs[:, 1], 1)
    return float(slope), float(intercept)


def predict_bags(model, bags: list, device="cpu", cutpoints=SEVERITY_CUTPOINTS, calibration=(1.0, 0.0)) -> list:
    """Per case: ``name``, ``extent_true``, ``label`` (class name or None), ``extent_raw`` (before
    calibration), ``extent_pct`` (after), ``class`` (band of the extent), ``head_probabilities`` (4,)."""
    import torch

    model.eval()
    slope, intercept = calibration
    rows = []
    for bag in bags:
        out = case_outputs(model, bag, device)
        raw = float(out["extent_pct"])
        counts = bag.lung_count.astype(float)
        fractions = np.clip(slope * out["fractions"].float().cpu().numpy() + intercept / 100, 0, 1)
        extent = float(100 * (fractions * counts).sum() / counts.sum())
        rows.append({"name": bag.name, "subject": bag.subject,
                     "extent_true": bag.extent_pct if np.isfinite(bag.extent_pct) else None,
                     "label": SEVERITY_CLASSES[bag.label] if bag.label >= 0 else None,
                     "extent_raw": raw, "extent_pct": extent, "class": severity_class(extent, cutpoints),
                     "head_probabilities": torch.softmax(out["class_logits"].float(), 0).tolist(),
                     **(bag.info or {})})
    return rows
