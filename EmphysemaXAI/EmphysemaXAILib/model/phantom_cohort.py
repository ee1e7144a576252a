"""Phantom cohorts for training and evaluation: the design (dose x kernel x severity class),
the split by subject, and the generation of each phantom's training tiles and case bag.

:func:`phantom_design` draws ``n`` parameter sets over the phantoms' acquisitions
(:data:`~..phantom.params.DOSES` x :data:`~..phantom.params.KERNELS`) and the severity classes
of ``analysis/severity.py``; :func:`split_subjects` keeps every subject's items in one part
(users' cohorts use it too); :func:`generate_cases` makes (TileSet, CaseBag) pairs in processes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..analysis.severity import SEVERITY_CLASSES, severity_bands, severity_class
from ..phantom.generate import generate_phantom
from ..phantom.params import DOSES, EMPHYSEMA_PATTERNS, KERNELS, PhantomParams
from .severity_dataset import case_bag, phantom_tiles

if TYPE_CHECKING:
    from .severity_dataset import CaseBag, TileSet

#: the extent drawn for the most severe class stops here (% of lung): the phantoms stay anatomical
MAX_PHANTOM_EXTENT_PCT = 40.0
#: extent range drawn for each class
CLASS_RANGES = severity_bands(high=MAX_PHANTOM_EXTENT_PCT)


def phantom_design(n: int, seed: int, size: str = "medium") -> list:
    """``n`` phantom parameter sets: dose x kernel cycle through all 9 combinations; the class is
    drawn uniformly, the extent uniformly inside it (0 with pattern ``none`` for a third of the
    ``none`` cases), pattern among the subtypes and ``mixed``, inspiration 0.85-1.0."""
    rng = np.random.default_rng([seed, 6])
    out = []
    for i in range(n):
        dose, kernel = DOSES[i % 3], KERNELS[(i // 3) % 3]
        cls = SEVERITY_CLASSES[int(rng.integers(4))]
        lo, hi = CLASS_RANGES[cls]
        pattern = str(rng.choice(EMPHYSEMA_PATTERNS))
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


def phantom_case(params, tiles_per_case: int, size: int, slices: int) -> tuple[TileSet, CaseBag]:
    """Generate one phantom -> (TileSet of training tiles, CaseBag with the true extent and class)."""
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


