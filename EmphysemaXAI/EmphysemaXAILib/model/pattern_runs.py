"""The ``train-patterns`` run: CIP's expert-labelled patches and phantom patches in, a pattern
model folder out (the shipped model is made by this run; MODEL_CARD.md gives the command).

1. Phantoms from :func:`~.phantom_cohort.phantom_design` (dose x kernel cycled): the first ``phantoms`` give
   2D training patches with exact lesion truth, the next ``val_phantoms`` are held out whole.
2. Optional k-fold on the CIP patches (:func:`~.cip_patches.patch_folds`; the folds may share
   subjects: the file has no subject ids): per fold a model on the other folds (and the same
   phantom patches), scored on the held-out fold as stored ("clean") and after a seeded scanner
   shift (:func:`~.pattern_augment.scanner_augment`) and after a pure air offset of -80, -40, +40
   and +80 HU (:func:`air_offset`: the scanner reads air at -1080 .. -920 HU, water stays at 0; with
   the air value given, ``patterns --air-hu`` undoes it exactly, so "air given" scores equal the
   clean ones): 6-class accuracy, balanced accuracy and the 3-way normal / centrilobular /
   paraseptal accuracy. ``holdout_fold`` instead keeps one fold out of the final model (its
   indices in metrics.json), for benchmarks that need a model that has not seen their patches.
3. The final model on every CIP patch; its extent calibration (a linear map of the fraction
   map, as the severity model has) and extent SD are fitted on the held-out phantoms run whole
   through :class:`~.pattern_infer.PatternPredictor` with their true lung masks.
The folder: ``weights.pt``, ``config.json``, ``metrics.json``, ``log.csv``, ``training_curve.png``;
written atomically.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from ..analysis.patterns import PATTERN_GROUPS, PATTERNS, THREE_WAY, group_probabilities
from ..io.atomic import atomic_folder
from ..phantom import generate_phantom
from .case_extent import extent_sigma, fit_calibration
from .checkpoint import CONFIG_FILE, save_model
from .cip_patches import load_cip_patches, patch_folds
from .pattern_infer import PatternPredictor
from .pattern_training import PatternTrainConfig, config_record, phantom_patches, predict_patches, train_pattern_model
from .phantom_cohort import phantom_design

SLICE_MM = 2.0        # distance between the axial images the model looks at on a case
SHIFT_SEED = 7        # the seeded "other scanner" of the k-fold figures
AIR_OFFSETS_HU = (-80.0, -40.0, 40.0, 80.0)   # held-out folds read by a scanner whose air is off by this


def air_offset(images: np.ndarray, offset_hu: float) -> np.ndarray:
    """HU as a scanner reading air ``offset_hu`` off (water kept at 0 HU): the linear map
    ``patterns --air-hu`` (calibration from air and water) inverts."""
    return (np.asarray(images, np.float32) * (1000.0 - offset_hu) / 1000.0).astype(np.float32)


def patch_scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """6-class accuracy and balanced accuracy; 3-way accuracy on the normal / centrilobular /
    paraseptal patches (argmax among those three broad patterns)."""
    from sklearn.metrics import balanced_accuracy_score

    groups = group_probabilities(probabilities)
    broad = np.zeros(len(PATTERNS), int)
    for g, idx in enumerate(PATTERN_GROUPS.values()):
        broad[list(idx)] = g
    truth = broad[labels]
    keep = truth < len(THREE_WAY)
    return {"accuracy": float(np.mean(probabilities.argmax(1) == labels)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, probabilities.argmax(1))),
            "accuracy_nt_cl_ps": float(np.mean(groups[keep, :3].argmax(1) == truth[keep]))}


def _fold_job(args) -> dict:
    import torch

    cip, train, test, patches, config = args
    torch.set_num_threads(1)
    model, _ = train_pattern_model(cip, train, patches, config, progress=False)
    out = {}
    for name, seed in (("clean", None), ("scanner_shift", SHIFT_SEED)):
        probs, _ = predict_patches(model, cip.images[test], cip.pixel_mm, config, augment_seed=seed)
        out[name] = patch_scores(probs, cip.labels[test])
    for offset in AIR_OFFSETS_HU:
        probs, _ = predict_patches(model, air_offset(cip.images[test], offset), cip.pixel_mm, config)
        out[f"air_{offset:+.0f}"] = patch_scores(probs, cip.labels[test])
    return out


def kfold(cip, patches, config: PatternTrainConfig, k: int = 5, workers: int = 2) -> dict:
    """Per-fold and mean figures (module docstring, step 2)."""
    from concurrent.futures import ProcessPoolExecutor

    folds = patch_folds(cip.labels, k, seed=0, images=cip.images)
    jobs = [(cip, train, test, patches, config) for train, test in folds]
    if workers <= 1:
        results = [_fold_job(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_fold_job, jobs))
    summary = {"k": k, "folds": results, "note": "CIP's patches carry no subject ids: folds may share subjects "
               "(even neighbouring patches of one lung), so these figures are optimistic for new subjects and scanners"}
    for name in results[0]:
        summary[name] = {m: float(np.mean([r[name][m] for r in results])) for m in results[0][name]}
    return summary


def _phantom_extents(model_dir, design: list) -> list:
    predictor = PatternPredictor(model_dir, device="cpu")
    rows = []
    for params in design:
        phantom = generate_phantom(params)
        result = predictor.predict(phantom.ct, phantom.labels["lungs"])
        rows.append({"name": f"phantom-{params.seed}", "extent_true": float(phantom.truth["extent_pct"]),
                     "extent_raw": result.summary["extent_pct"], "dose": params.dose, "kernel": params.kernel,
                     "pattern": params.pattern})
    return rows


def _write_log(history: list, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(folder / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    epochs = [r["epoch"] for r in history]
    for key, label in (("pattern", "pattern cross-entropy (CIP)"), ("fraction_cip", "fraction BCE (CIP)"),
                       ("fraction_phantom", "fraction BCE (phantoms)")):
        ax.plot(epochs, [r[key] for r in history], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (augmented)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "training_curve.png", dpi=80)
    plt.close(fig)


def train_patterns(mat_path, out, *, phantoms: int = 24, val_phantoms: int = 8, per_phantom: int = 400,
                   folds: int = 0, seed: int = 0, progress: bool = True, command: str | None = None,
                   config: PatternTrainConfig | None = None, workers: int = 2, holdout_fold: int | None = None,
                   map_rule: str = "extent") -> dict:
    """Train, calibrate and write a pattern model into ``out``; returns the metrics. ``holdout_fold``
    (0..4 of the 5 folds of :func:`~.cip_patches.patch_folds`): the final model does not see that
    fold's patches (metrics ``holdout``); ``map_rule``: the label rule of :mod:`.pattern_infer`."""
    import torch

    config = config or PatternTrainConfig(seed=seed)
    start = time.perf_counter()
    cip = load_cip_patches(mat_path)
    design = phantom_design(phantoms + val_phantoms, seed)
    patches = phantom_patches(design[:phantoms], per_phantom, seed=seed) if phantoms else None
    generation_s = time.perf_counter() - start
    metrics = {"cip_patches": cip.counts(), "phantom_patches": len(patches) if patches else 0}
    if folds:
        metrics["cip_kfold"] = kfold(cip, patches, config, folds, workers)
    torch.set_num_threads(max(1, workers))
    train_index = np.arange(len(cip))
    if holdout_fold is not None:
        train_index, test_index = patch_folds(cip.labels, 5, seed=0, images=cip.images)[holdout_fold]
        metrics["holdout"] = {"fold": holdout_fold, "k": 5, "test_index": test_index.tolist()}
    model, history = train_pattern_model(cip, train_index, patches, config, progress=progress)
    record = {"name": f"patterns-cip-phantoms{phantoms}-seed{seed}",
              "architecture": {"kind": "pattern", "width": config.width, "fraction_width": config.fraction_width,
                               "hidden": 32, "pixel_mm": config.pixel_mm, "slice_mm": SLICE_MM},
              "patterns": list(PATTERNS), "map_rule": map_rule,
              "training": {"cip_patches": str(Path(mat_path).name), "phantoms": phantoms, "per_phantom": per_phantom,
                           "val_phantoms": val_phantoms, "seed": seed, "config": config_record(config),
                           "torch": torch.__version__, "command": command}}
    with atomic_folder(out) as folder:
        folder = Path(folder)
        save_model(model, record, folder)
        rows = _phantom_extents(folder, design[phantoms:]) if val_phantoms else []
        slope, intercept = fit_calibration(rows)
        for row in rows:
            row["extent_pct"] = float(np.clip(slope * row["extent_raw"] + intercept, 0, 100))
        errors = [r["extent_pct"] - r["extent_true"] for r in rows]
        saved = json.loads((folder / CONFIG_FILE).read_text())
        saved["extent_calibration"] = [slope, intercept]
        saved["extent_sigma"] = extent_sigma(rows)
        saved["training"]["total_s"] = round(time.perf_counter() - start, 1)
        saved["training"]["generation_s"] = round(generation_s, 1)
        (folder / CONFIG_FILE).write_text(json.dumps(saved, indent=2) + "\n")
        metrics["validation_phantoms"] = {"rows": rows,
                                          "extent_mae": float(np.mean(np.abs(errors))) if errors else None,
                                          "calibration": [slope, intercept]}
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _write_log(history, folder)
    return metrics
