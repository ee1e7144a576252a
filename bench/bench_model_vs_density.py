"""Benchmark: the pattern model's extent and patterns against density (Perc15, %LAA-950) on the
same items, as stored and under a scanner offset.

Usage (from the project root; the model must come from ``train-patterns --holdout-fold K``, so
its held-out CIP patches are known and unseen):
    .venv/bin/python bench/bench_model_vs_density.py --model DIR [--mat PATH] [--phantoms 6] [--json OUT]
        [--fusion BLOCK.json]
(about 5 minutes with --phantoms 0 and 20 with 6 phantoms, on 2 cores shared with other jobs).

Items:
- **CIP patches** of the model's held-out fold (``metrics.json`` ``holdout``), as the
  ``patterns`` command reads them (whole patch, 0.65 mm pixels). Severity: normal 0,
  centrilobular mild / moderate / severe 1 / 2 / 3 (paraseptal and panlobular patches have no
  grade: left out of the Spearman, in the AUC as emphysema).
- **Mosaics** of held-out patches without chest wall: 4 x 4 patches (80 x 80 mm), k of 16
  emphysema (any emphysema class) and the rest normal, k = 0..16 (4 mosaics each, 12 with k = 0);
  truth = k / 16. Run through the network whole (dense maps, 1 mm pixels).
- **Phantoms** not seen in training (``phantom_design(n, seed=2)``: dose x kernel cycled,
  extents 0-40 %, every subtype), with their true lung masks; truth = the true extent; the AUC
  separates extent >= 5 % from < 5 %.
Scores: the model's extent (calibrated emphysema fraction, %), its emphysema probability
(1 - p(normal): the attention-pooled pattern output on patches, the lung mean of the dense map
on mosaics; not on phantoms), Perc15 (HU, sign flipped so that higher = more emphysema), raw
%LAA-950 and calibrated %LAA-950 (the offset undone exactly: an upper bound of what an air /
blood calibration reaches; without an offset it equals raw).
"Fused extent" (when the model's config.json has a ``fusion`` block, or ``--fusion`` gives one:
``model/pattern_fusion.py``): the mean of the fused texture + local density map, on the input as
read and, as "fused extent calibrated", with the offset undone first (what the case pipeline,
which calibrates, feeds the model).
Conditions: as stored; the scanner reading air at -1080 / -1040 / -960 / -920 HU (water at 0: air
offset -80 / -40 / +40 / +80 HU); the -80 and +80 offsets with white noise of SD 25 HU added
(seeded); "mixed scanners": every item read by its own scanner, air offset drawn uniformly in
-80..+80 HU (seeded; the condition that matters for ranking: one offset shared by every item
moves Perc15 of all alike and leaves its ranks unchanged); "calibrated, residual air -20..+20"
(with and without noise): a case after an air / blood calibration that is off by up to 20 HU per
item, so there the raw density columns and "fused extent" are what a calibrated case gives.
Phantoms: as stored, -80, +80, mixed and residual -20..+20 only (time); also the extent MAE
against the truth of the model extent (its own phantom calibration), the fused extent and
calibrated %LAA-950.
The model's extent is ranked before its linear phantom calibration (``extent_calibration``
set to 1, 0 here: the calibration is monotone, but its clipping at 0 % would tie the patches
it sends below 0 and hide the fraction trunk's ranking).
Also the ``patterns`` 3-way accuracy (normal / centrilobular / paraseptal) of the held-out
patches per condition, without and with the air value given (``--air-hu``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "EmphysemaXAI"))

from common import add_held_out_arguments, held_out  # noqa: E402

from EmphysemaXAILib.analysis.patterns import PATTERN_GROUPS, THREE_WAY, group_probabilities  # noqa: E402
from EmphysemaXAILib.model.pattern_runs import air_offset  # noqa: E402

CONDITIONS = {"as stored": (0.0, 0.0), "air -80": (-80.0, 0.0), "air -40": (-40.0, 0.0), "air +40": (40.0, 0.0),
              "air +80": (80.0, 0.0), "air -80 + noise 25": (-80.0, 25.0), "air +80 + noise 25": (80.0, 25.0),
              "mixed scanners -80..+80": ((-80.0, 80.0), 0.0),
              "mixed scanners -80..+80 + noise 25": ((-80.0, 80.0), 25.0),
              "calibrated, residual air -20..+20": ((-20.0, 20.0), 0.0),
              "calibrated, residual air -20..+20 + noise 25": ((-20.0, 20.0), 25.0)}
PHANTOM_CONDITIONS = ("as stored", "air -80", "air +80", "mixed scanners -80..+80", "calibrated, residual air -20..+20")
SCORES = ("model extent", "model p(emphysema)", "fused extent", "fused extent calibrated", "-Perc15",
          "%LAA-950 raw", "%LAA-950 calibrated")
GRADE = {0: 0, 1: 1, 2: 2, 3: 3}     # PATTERNS index -> severity grade (normal, centrilobular grades)


def offsets(offset, n: int, seed: int) -> np.ndarray:
    """(n,) air offsets: one for all, or drawn per item in (lo, hi)."""
    if isinstance(offset, tuple):
        return np.random.default_rng([seed, 1]).uniform(offset[0], offset[1], n)
    return np.full(n, float(offset))


def degrade(images: np.ndarray, offset: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """(n, ...) HU read with air offsets ``offset`` (n,) and white noise of SD ``noise``."""
    out = np.stack([air_offset(image, o) for image, o in zip(images, offset)])
    if noise:
        out = out + np.random.default_rng(seed).normal(0.0, noise, out.shape).astype(np.float32)
    return out


def undo(images: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The calibration from the known air value (water at 0): inverse of :func:`air_offset`."""
    return np.stack([image * 1000.0 / (1000.0 - o) for image, o in zip(images, offset)]).astype(np.float32)


def density(values: np.ndarray) -> tuple:
    """(-Perc15 HU, %LAA-950) of HU values."""
    return -float(np.percentile(values, 15)), 100.0 * float(np.mean(values < -950.0))


def figures(scores: dict, truth: np.ndarray, graded: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> dict:
    """Spearman against ``truth`` on ``graded`` items and AUC of ``positive`` vs ``negative`` per score."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    out = {}
    for name, values in scores.items():
        values = np.asarray(values, float)
        rho = spearmanr(values[graded], truth[graded]).statistic if graded.sum() > 2 else float("nan")
        pick = positive | negative
        auc = roc_auc_score(positive[pick], values[pick]) if positive.any() and negative.any() else float("nan")
        out[name] = {"spearman": round(float(rho), 3), "auc": round(float(auc), 3)}
    return out


def patch_scores(predictor, images: np.ndarray, pixel_mm: float, offset: np.ndarray, noise: float, seed: int) -> tuple:
    shifted = degrade(images, offset, noise, seed)
    probs, fractions = predictor.classify_images(list(shifted), pixel_mm)
    calibrated_probs, _ = predictor.classify_images(list(undo(shifted, offset)), pixel_mm)
    dens = np.array([density(p.ravel()) for p in shifted])
    laa_cal = np.array([density(p.ravel())[1] for p in undo(shifted, offset)])
    scores = {"model extent": 100 * fractions, "model p(emphysema)": 1 - probs[:, 0], "-Perc15": dens[:, 0],
              "%LAA-950 raw": dens[:, 1], "%LAA-950 calibrated": laa_cal}
    if predictor.fusion:
        scores["fused extent"] = 100 * predictor.fused_images(list(shifted), pixel_mm)
        scores["fused extent calibrated"] = 100 * predictor.fused_images(list(undo(shifted, offset)), pixel_mm)
    return scores, probs, calibrated_probs


def three_way(probs: np.ndarray, labels: np.ndarray) -> float:
    broad = np.zeros(6, int)
    for g, idx in enumerate(PATTERN_GROUPS.values()):
        broad[list(idx)] = g
    truth = broad[labels]
    keep = truth < len(THREE_WAY)
    return round(float(np.mean(group_probabilities(probs)[keep, :3].argmax(1) == truth[keep])), 3)


def mosaics(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple:
    """((m, 124, 124) HU mosaics, (m,) emphysema share) of 4 x 4 held-out patches."""
    from EmphysemaXAILib.model.cip_patches import chest_wall_mask

    clear = ~chest_wall_mask(images).any(axis=(1, 2))
    normal = np.flatnonzero(clear & (labels == 0))
    emphysema = np.flatnonzero(clear & (labels > 0))
    rng = np.random.default_rng(seed)
    out, truth = [], []
    for k in range(17):
        for _ in range(12 if k == 0 else 4):
            pick = np.concatenate([rng.choice(emphysema, k), rng.choice(normal, 16 - k)])
            tiles = images[rng.permutation(pick)].reshape(4, 4, 31, 31)
            out.append(tiles.transpose(0, 2, 1, 3).reshape(124, 124))
            truth.append(k / 16)
    return np.stack(out).astype(np.float32), np.array(truth)


def mosaic_scores(predictor, images: np.ndarray, pixel_mm: float) -> dict:
    import torch

    from EmphysemaXAILib.model.pattern_augment import center_resample

    size = int(round(images.shape[-1] * pixel_mm / predictor.pixel_mm / 4)) * 4
    with torch.inference_mode():
        x = center_resample(torch.from_numpy(images)[:, None], pixel_mm, predictor.pixel_mm, size)
        out = predictor.model(x)
        p_normal = torch.softmax(out["pattern_map"], 1)[:, 0].mean(dim=(1, 2)).numpy()
        fraction = predictor._calibrated(out["fraction"].numpy())
    return {"model extent": 100 * fraction, "model p(emphysema)": 1 - p_normal}


def fused_mosaic_scores(predictor, shifted: np.ndarray, offset: np.ndarray, pixel_mm: float) -> dict:
    """Fused extent (%) of the mosaics as read and with the offset undone (the case pipeline)."""
    if not predictor.fusion:
        return {}
    return {"fused extent": 100 * predictor.fused_images(list(shifted), pixel_mm),
            "fused extent calibrated": 100 * predictor.fused_images(list(undo(shifted, offset)), pixel_mm)}


def run_patches(predictor, cip, test: np.ndarray) -> dict:
    images, labels = cip.images[test], cip.labels[test]
    graded = np.isin(labels, list(GRADE))
    grade = np.array([GRADE.get(int(label), -1) for label in labels], float)
    mosaic_images, mosaic_truth = mosaics(images, labels)
    out = {"patches": {}, "mosaics": {}, "three_way": {}}
    for i, (name, (offset, noise)) in enumerate(CONDITIONS.items()):
        scores, probs, calibrated = patch_scores(predictor, images, cip.pixel_mm, offsets(offset, len(images), i),
                                                 noise, seed=i)
        out["patches"][name] = figures(scores, grade, graded, labels > 0, labels == 0)
        out["three_way"][name] = {"without air": three_way(probs, labels), "air given": three_way(calibrated, labels)}
        offset = offsets(offset, len(mosaic_images), 100 + i)
        shifted = degrade(mosaic_images, offset, noise, seed=100 + i)
        m_scores = mosaic_scores(predictor, shifted, cip.pixel_mm)
        m_scores.update(fused_mosaic_scores(predictor, shifted, offset, cip.pixel_mm))
        dens = np.array([density(m.ravel()) for m in shifted])
        m_scores.update({"-Perc15": dens[:, 0], "%LAA-950 raw": dens[:, 1],
                         "%LAA-950 calibrated": [density(m.ravel())[1] for m in undo(shifted, offset)]})
        everything = np.ones(len(mosaic_truth), bool)
        out["mosaics"][name] = figures(m_scores, mosaic_truth, everything, mosaic_truth > 0, mosaic_truth == 0)
    return out


def run_phantoms(predictor, n: int, calibration: tuple) -> dict:
    """Spearman / AUC per score and condition, and the extent MAE (points of %) of the model
    extent (with its phantom ``calibration``), the fused extent and calibrated %LAA-950. The
    network runs once per phantom and condition (:meth:`dense_volume` on the working grid, as
    ``predict`` does); "fused extent calibrated" equals "fused extent" of "as stored" here: an
    exact undo of a noise-free offset gives back the stored HU."""
    from EmphysemaXAILib.model.pattern_fusion import features, fused_map
    from EmphysemaXAILib.model.phantom_cohort import phantom_design
    from EmphysemaXAILib.model.tiles import to_working_grid
    from EmphysemaXAILib.phantom import generate_phantom

    names = [s for s in SCORES if s != "model p(emphysema)" and (predictor.fusion or "fused" not in s)]
    rows = {name: {s: [] for s in names} for name in PHANTOM_CONDITIONS}
    truth, mae_rows = [], {name: {"model extent": [], "fused extent": [], "%LAA-950 calibrated": []}
                           for name in PHANTOM_CONDITIONS}
    spacing = (predictor.pixel_mm, predictor.pixel_mm, float(predictor.config["architecture"]["slice_mm"]))
    slope, intercept = calibration
    for j, params in enumerate(phantom_design(n, seed=2)):
        phantom = generate_phantom(params)
        lungs = phantom.labels["lungs"]
        lung = lungs > 0
        truth.append(phantom.truth["extent_pct"])
        grid = to_working_grid(phantom.ct, lungs, spacing=spacing)
        lung_w = grid.labels > 0
        for i, name in enumerate(PHANTOM_CONDITIONS):
            offset, noise = CONDITIONS[name]
            offset = offsets(offset, n, 200 + i)[j:j + 1]
            hu = degrade(phantom.ct.hu[None], offset, noise, seed=200 + i)[0]
            hu_w = degrade(grid.hu[None], offset, noise, seed=200 + i)[0]    # a linear map commutes with resampling
            maps = predictor.dense_volume(hu_w, lung_w)
            raw = float(maps["fraction"][lung_w].mean())
            perc, laa = density(hu[lung])
            laa_cal = density(undo(hu[lung][None], offset))[1]
            rows[name]["model extent"].append(100 * raw)
            rows[name]["-Perc15"].append(perc)
            rows[name]["%LAA-950 raw"].append(laa)
            rows[name]["%LAA-950 calibrated"].append(laa_cal)
            mae_rows[name]["model extent"].append(float(np.clip(slope * 100 * raw + intercept, 0, 100)))
            mae_rows[name]["%LAA-950 calibrated"].append(laa_cal)
            if predictor.fusion:
                feats = features(hu_w, lung_w, maps["fraction"], maps["p_normal"], predictor.pixel_mm,
                                 predictor.fusion_window_mm, predictor.fusion["features"])
                fused = 100 * float(fused_map(feats, predictor.fusion)[lung_w].mean())
                rows[name]["fused extent"].append(fused)
                rows[name]["fused extent calibrated"].append(rows["as stored"]["fused extent"][-1] if i else fused)
                mae_rows[name]["fused extent"].append(fused)
    truth = np.array(truth)
    everything = np.ones(len(truth), bool)
    mae = {name: {s: round(float(np.mean(np.abs(np.array(v) - truth))), 2) for s, v in scores.items() if v}
           for name, scores in mae_rows.items()}
    return {"truth_extent_pct": truth.tolist(), "mae": mae, "extents": mae_rows,
            **{name: figures(scores, truth, everything, truth >= 5, truth < 5) for name, scores in rows.items()}}


def print_table(title: str, block: dict) -> None:
    print(f"\n{title}: Spearman / AUC")
    block = {k: v for k, v in block.items() if k in CONDITIONS}
    names = list(next(iter(block.values())))
    print("| condition | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for condition, scores in block.items():
        if isinstance(scores, dict) and condition in CONDITIONS:
            print(f"| {condition} | " + " | ".join(f"{scores[s]['spearman']:.2f} / {scores[s]['auc']:.2f}"
                                                 for s in names) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_held_out_arguments(parser)
    parser.add_argument("--phantoms", type=int, default=6, help="held-out phantoms (0: none)")
    parser.add_argument("--fusion", type=Path, help="a JSON fusion block (pattern_fusion) for the fused extent "
                        "(default: the model's own config.json block, if any)")
    args = parser.parse_args()
    predictor, cip, test, fold = held_out(args)
    if args.fusion:
        predictor.fusion = json.loads(args.fusion.read_text())
    calibration = tuple(predictor.config.get("extent_calibration", (1.0, 0.0)))
    predictor.config["extent_calibration"] = (1.0, 0.0)       # ranking figures: module docstring
    result = {"model": str(args.model), "holdout_fold": fold, "n_test": len(test), "fusion": predictor.fusion,
              **run_patches(predictor, cip, test)}
    if args.phantoms:
        result["phantoms"] = run_phantoms(predictor, args.phantoms, calibration)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"model {args.model} (held-out fold {result['holdout_fold']}, {len(test)} patches)")
    print_table("CIP held-out patches (grade: normal 0, CL mild..severe 1..3)", result["patches"])
    print_table("mosaics of held-out patches (truth: emphysema share)", result["mosaics"])
    if args.phantoms:
        print_table(f"held-out phantoms ({args.phantoms}; AUC: extent >= 5 %)", result["phantoms"])
        print("\nheld-out phantoms: extent MAE (points of %)")
        for condition, mae in result["phantoms"]["mae"].items():
            print(f"| {condition} | " + " | ".join(f"{k} {v:.2f}" for k, v in mae.items()) + " |")
    print("\n`patterns` 3-way accuracy (normal / centrilobular / paraseptal), without / with --air-hu")
    for condition, acc in result["three_way"].items():
        print(f"| {condition} | {acc['without air']:.3f} | {acc['air given']:.3f} |")


if __name__ == "__main__":
    main()
