"""Benchmark (issue 25): can ``patterns`` estimate the scanner's air offset when ``--air-hu`` is
not given? Estimates from the images' own histograms, scored on CIP's held-out fold.

Usage (from the project root; ``--model`` must come from ``train-patterns --holdout-fold 0``, so
its held-out CIP patches are known and unseen; about 18 minutes on 2 busy shared cores):
    .venv/bin/python bench/bench_air_estimate.py --model DIR [--mat PATH] [--sets 25] [--json OUT]

An air offset ``o`` is :func:`..pattern_runs.air_offset` (HU' = HU (1000 - o) / 1000: air read at
-1000 + o HU, water at 0); undoing an estimate ``e`` multiplies by 1000 / (1000 - e), as
``--air-hu -1000+e`` does. Estimators (fitted on the model's TRAINING folds only):
- ``per-image q1``: each image alone: its 1 % quantile against the training patches' median 1 %
  quantile (shows that one patch cannot tell its scanner: normal density varies between people);
- ``set q0.5``: all images of a run pooled: the pooled 0.5 % quantile against the median of the
  same on simulated training sets;
- ``set GBR``: gradient-boosted trees on pooled features (``model/air_estimate.py``
  ``set_features``: log of 10 low-to-median quantiles; the mean size of the connected dark
  regions below the pooled 1 / 5 / 15 % quantiles: holes of emphysema against scattered noise)
  trained on simulated sets (``air_estimate.simulate``): random subsets (3-199 images) of the
  training folds, 60 % random class mixtures (Dirichlet 0.5), 25 % normal-only, 15 %
  emphysema-only, offsets uniform in -100..+100 HU, white noise SD 0-25 HU;
- ``set GBR prior``: the same with half of the training scanners calibrated (offset ~ N(0, 10 HU))
  and half uniform in -100..+100 (the posterior mean shrinks ambiguous sets toward 0): the
  ``mean`` model of ``air_estimate.fit``;
- ``set GBR gated``: ``air_estimate.histogram_estimate`` (what ``patterns`` would do): ``set GBR
  prior``, but 0 whenever the 10-90 % quantile-regression interval holds 0.
Scored on sets drawn from the held-out fold at air offsets -80, -40, 0, +40, +80 HU: the whole fold
(one scanner read every patch, the natural mixture), normal-only (10, 30, all), emphysema-only
(30) and mixed (10, 30) sets (``--sets`` draws each): the estimate's error (HU) and the 3-way
accuracy (normal / centrilobular / paraseptal; on emphysema-only sets the share called
emphysema, on normal-only the share called normal) without the air value, with the estimate and
with the true air value. "mixed scanners": every patch read with its own offset in -80..+80.
Also the real files of ``../shared/data`` (LIDC slices, CIP crop): the estimates, the peak of
their outside air (:func:`..analysis.air.air_mode`) and what ``patterns`` calls them.
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

from EmphysemaXAILib.analysis.patterns import PATTERN_GROUPS, group_probabilities  # noqa: E402
from EmphysemaXAILib.model import air_estimate  # noqa: E402
from EmphysemaXAILib.model.air_estimate import REFERENCE_PIXEL_MM  # noqa: E402
from EmphysemaXAILib.model.pattern_runs import air_offset  # noqa: E402

OFFSETS = (-80, -40, 0, 40, 80)
BROAD = np.zeros(6, int)
for _g, _idx in enumerate(PATTERN_GROUPS.values()):
    BROAD[list(_idx)] = _g


def undo(images: np.ndarray, offset) -> np.ndarray:
    """Images calibrated with air read at -1000 + ``offset`` (scalar or one per image)."""
    offset = np.broadcast_to(np.asarray(offset, np.float32), (len(images),))
    return (np.asarray(images, np.float32) * (1000.0 / (1000.0 - offset))[:, None, None]).astype(np.float32)


class Estimators:
    """The estimators of the module docstring, fitted on the training folds ``train``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, train: np.ndarray, n_sets: int):
        from sklearn.ensemble import GradientBoostingRegressor

        self.q1_ref = float(np.median(np.percentile(images[train].reshape(len(train), -1), 1, axis=1)))
        x, y = air_estimate.simulate(images, labels, train, n_sets, seed=1, prior=False)
        self.q05_ref = float(np.median(np.exp(x[:, 2]) * 1000.0 / (1000.0 - y)))   # -q0.5 at offset 0
        self.uniform = air_estimate.export_trees(
            GradientBoostingRegressor(random_state=0, **air_estimate.TREES).fit(x, y))
        self.fitted = air_estimate.fit(images, labels, train, n_sets, seed=0)   # what would ship

    def per_image(self, images: np.ndarray) -> np.ndarray:
        """(n,) offsets, one per image."""
        q1 = np.percentile(np.asarray(images).reshape(len(images), -1), 1, axis=1)
        return 1000.0 - 1000.0 * q1 / self.q1_ref

    def sets(self, images: np.ndarray, pixel_mm: float = REFERENCE_PIXEL_MM) -> dict:
        """{estimator: offset} for one set of images."""
        f = air_estimate.set_features(list(images), pixel_mm)
        gated = air_estimate.histogram_estimate(list(images), pixel_mm, self.fitted)
        return {"set q0.5": 1000.0 - 1000.0 * np.exp(f[2]) / self.q05_ref,
                "set GBR": air_estimate.predict(self.uniform, f),
                "set GBR prior": air_estimate.predict(self.fitted["models"]["mean"], f),
                "set GBR gated": gated.offset_hu}


def score(predictor, images, labels, pixel_mm, kind: str) -> float:
    probs, _ = predictor.classify_images(list(images), pixel_mm)
    groups = group_probabilities(probs)
    if kind == "emphysema":
        return float(np.mean(groups.argmax(1) > 0))
    called = groups[:, :3].argmax(1)          # the 3-way reading: normal / centrilobular / paraseptal
    truth = BROAD[labels]
    keep = truth < 3
    return float(np.mean(called[keep] == truth[keep]))


def run_sets(predictor, est: Estimators, cip, test: np.ndarray, n_draws: int) -> dict:
    """{set kind: {offset: {estimator: {error_mean, error_mae, error_max, accuracy}, ...}}}."""
    labels = cip.labels
    kinds = {"whole fold": ("mix", None), "normal-only all": ("normal", None), "normal-only 30": ("normal", 30),
             "normal-only 10": ("normal", 10), "emphysema-only 30": ("emphysema", 30), "mixed 30": ("mix", 30),
             "mixed 10": ("mix", 10)}
    out = {}
    rng = np.random.default_rng(5)
    for name, (kind, size) in kinds.items():
        out[name] = {}
        for offset in OFFSETS:
            rows: dict = {}
            for _ in range(1 if size is None else n_draws):
                if size is None:
                    pick = test if kind == "mix" else test[labels[test] == 0]
                else:
                    pool = test if kind == "mix" else test[(labels[test] == 0) == (kind == "normal")]
                    pick = rng.choice(pool, size, replace=False)
                shifted = air_offset(cip.images[pick], offset)
                found = {"without": None, **est.sets(shifted), "true air": float(offset)}
                if size is None or name.startswith("whole"):
                    found["per-image q1"] = est.per_image(shifted)
                for estimator, value in found.items():
                    calibrated = shifted if value is None else undo(shifted, value)
                    error = np.nan if value is None else float(np.mean(np.asarray(value) - offset))
                    abs_error = np.nan if value is None else float(np.mean(np.abs(np.asarray(value) - offset)))
                    row = rows.setdefault(estimator, {"error": [], "abs": [], "accuracy": []})
                    row["error"].append(error)
                    row["abs"].append(abs_error)
                    row["accuracy"].append(score(predictor, calibrated, labels[pick], cip.pixel_mm, kind))
            out[name][offset] = {k: {"error_mean": round(float(np.mean(v["error"])), 1),
                                     "error_mae": round(float(np.mean(v["abs"])), 1),
                                     "error_max": round(float(np.max(v["abs"])), 1) if v["abs"][0] == v["abs"][0]
                                     else None,
                                     "accuracy": round(float(np.mean(v["accuracy"])), 3)} for k, v in rows.items()}
            print(name, offset, {k: (v["error_mean"], v["accuracy"]) for k, v in out[name][offset].items()},
                  flush=True)
    return out


def run_mixed_scanners(predictor, est: Estimators, cip, test: np.ndarray) -> dict:
    offsets = np.random.default_rng([5, 1]).uniform(-80, 80, len(test))
    shifted = np.stack([air_offset(image, o) for image, o in zip(cip.images[test], offsets)])
    found = {"without": None, **est.sets(shifted), "per-image q1": est.per_image(shifted), "true air": offsets}
    out = {}
    for name, value in found.items():
        calibrated = shifted if value is None else undo(shifted, value)
        out[name] = {"error_mae": None if value is None else round(float(np.mean(np.abs(value - offsets))), 1),
                     "accuracy": round(score(predictor, calibrated, cip.labels[test], cip.pixel_mm, "mix"), 3)}
    return out


def run_real(predictor, est: Estimators) -> dict:
    """Estimates, outside-air peak and the ``patterns`` call of the shared real files."""
    from EmphysemaXAILib.model.pattern_images import read_images

    data = ROOT.parent / "shared" / "data"
    out = {}
    for name, files in {"LIDC slices": [data / "lidc-two-slices" / "0.dcm", data / "lidc-two-slices" / "1.dcm"],
                        "CIP crop 16021S": [data / "cip-copdgene" / "crop_ct_2slices.nrrd"]}.items():
        if not all(f.is_file() for f in files):
            continue
        images, size = [], None
        for f in files:
            got, size = read_images(f, None)
            images += got
        stack = np.stack(images)
        found = {"without": 0.0, **est.sets(stack, size)}
        peak = air_estimate.outside_air(images, size)
        found["outside air"] = None if peak is None else peak + 1000.0
        row = {"pixel_mm": size, "share_below_-990": round(float(np.mean(stack < -990)), 3)}
        for key, value in found.items():
            if value is None:
                continue
            probs, _ = predictor.classify_images(list(undo(stack, value)), size)
            groups = group_probabilities(probs)
            row[key] = {"air_hu": round(-1000.0 + value, 1),
                        "pattern": [list(PATTERN_GROUPS)[int(g.argmax())] for g in groups],
                        "p_normal": [round(float(g[0]), 3) for g in groups]}
        out[name] = row
        print(name, row, flush=True)
    return out


def main() -> None:
    import torch


    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_held_out_arguments(parser)
    parser.add_argument("--sets", type=int, default=25, help="random sets per kind and offset")
    parser.add_argument("--train-sets", type=int, default=4000, help="simulated training sets per regressor")
    args = parser.parse_args()
    predictor, cip, test, fold = held_out(args)
    train = np.setdiff1d(np.arange(len(cip)), test)
    est = Estimators(cip.images, cip.labels, train, args.train_sets)
    result = {"model": str(args.model), "n_test": len(test), "sets": run_sets(predictor, est, cip, test, args.sets),
              "mixed scanners": run_mixed_scanners(predictor, est, cip, test), "real": run_real(predictor, est)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    for name, block in result["sets"].items():
        estimators = list(next(iter(block.values())))
        print(f"\n{name}: estimate error mean / MAE (HU); accuracy")
        print("| offset | " + " | ".join(estimators) + " |")
        print("|---" * (len(estimators) + 1) + "|")
        for offset, rows in block.items():
            print(f"| {offset:+d} | " + " | ".join(
                (f"{r['accuracy']:.3f}" if r["error_mae"] != r["error_mae"] else
                 f"{r['error_mean']:+.0f} / {r['error_mae']:.0f}; {r['accuracy']:.3f}") for r in rows.values()) + " |")
    print("\nmixed scanners:", result["mixed scanners"])


if __name__ == "__main__":
    main()
