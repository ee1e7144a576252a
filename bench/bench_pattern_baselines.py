"""Benchmark: two classical baselines for the six parenchyma patterns on CIP's expert-labelled patches.

Usage (from the project root; needs CIP's EmphysemaPatches.mat, by default in ../shared/data):
    .venv/bin/python bench/bench_pattern_baselines.py [--mat PATH] [--k 5] [--no-flat]
(about 3 minutes on 2 cores for the baselines: CIP's per-patch KDE takes ~9 ms a patch and is
recomputed per fold; about 20 more for the CNN's five trainings, --model-epochs 0 skips them).

Data: 1,337 31 x 31 HU patches (NT 370, CL1 170, CL2 287, CL3 178, PS 184, PL 148), in the k
stratified folds of ``cip_patches.patch_folds(labels, k, seed=0)``. The patches carry no subject
ids, so a test patch may come from a subject (even a lung) seen in training: the figures are
optimistic for new subjects and scanners.

Baselines (``EmphysemaXAILib.model.pattern_baselines``):
  cip-local-hist   CIP's local-histogram classifier (Castaldi et al. 2013) retrained per fold:
                   Botev-bandwidth KDE of the patch's HU on CIP's 1 HU mesh, density over
                   -1050..-450 HU as the feature, 5-NN (L1, distance-weighted) on the non-
                   paraseptal classes, then paraseptal when the density above -450 HU exceeds a
                   threshold fitted on the training folds (CIP: the constant 0.2843).
  cip-flat-knn     the same features, one 6-class 5-NN (no hierarchical paraseptal rule); --no-flat skips it.
  hu-hist-lr       fractions of pixels in 10 HU bins over -1050..-500 HU plus one bin each side,
                   StandardScaler + multinomial logistic regression.
  pattern-cnn      the project's pattern CNN (``model.pattern_training.PatternClassifier``) trained per
                   fold with the shipped recipe (scanner augmentation, 150 epochs) on the CIP
                   patches only (the shipped model adds phantom patches for its fraction output).

Measured, per fold and as the mean over folds: accuracy over the 6 classes, balanced accuracy
(mean per-class recall), and 3-way accuracy on the normal / centrilobular / paraseptal patches
only (the grouped probabilities' argmax among those three patterns; panlobular patches left out).
Robustness: the same fitted models on the test folds after a simulated change of scanner,
+60 HU and white Gaussian noise of SD 40 HU (seed = fold index), rounded to whole HU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "EmphysemaXAI"))

from EmphysemaXAILib.analysis.patterns import PATTERN_GROUPS, PATTERNS  # noqa: E402
from EmphysemaXAILib.model import pattern_baselines as PB  # noqa: E402
from EmphysemaXAILib.model.cip_patches import load_cip_patches, patch_folds  # noqa: E402

SHIFT_HU, SHIFT_NOISE_HU = 60.0, 40.0


def fit_flat_knn(images, labels):
    return PB.fit_local_histogram(images, labels, hierarchical=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mat", type=Path,
                        default=ROOT.parent / "shared" / "data" / "cip-copdgene" / "EmphysemaPatches.mat",
                        help="CIP's EmphysemaPatches.mat (default: ../shared/data/cip-copdgene/EmphysemaPatches.mat)")
    parser.add_argument("--k", type=int, default=5, help="number of stratified folds (default 5)")
    parser.add_argument("--no-flat", action="store_true", help="skip the 6-class kNN variant of CIP's classifier")
    parser.add_argument("--model-epochs", type=int, default=150,
                        help="train the pattern CNN per fold for this many epochs (CIP patches only, the shipped "
                             "recipe without phantoms; about 4 min a fold on 2 cores); 0 skips it")
    args = parser.parse_args()

    if not args.mat.is_file():
        print(f"skipped: {args.mat} not present (CIP's EmphysemaPatches.mat; see ../shared/data/README.md)")
        return
    patches = load_cip_patches(args.mat)
    folds = patch_folds(patches.labels, k=args.k, seed=0)
    print(f"{len(patches)} patches {patches.counts()}; {args.k} stratified folds (seed 0)")
    print("NOTE: the patches carry no subject ids, so training and test folds may share subjects "
          "(even lungs): the figures are optimistic for new subjects.")
    print(f"shifted = the same models on the test folds + {SHIFT_HU:.0f} HU and Gaussian noise SD "
          f"{SHIFT_NOISE_HU:.0f} HU (seed = fold), a simulated change of scanner")

    def shift(images, fold):
        return PB.scanner_shift(images, SHIFT_HU, SHIFT_NOISE_HU, seed=fold)

    baselines = [("cip-local-hist", PB.fit_local_histogram)]
    if not args.no_flat:
        baselines.append(("cip-flat-knn", fit_flat_knn))
    baselines.append(("hu-hist-lr", PB.fit_histogram_lr))
    if args.model_epochs:
        from EmphysemaXAILib.model.pattern_training import PatternClassifier, PatternTrainConfig

        config = PatternTrainConfig(epochs=args.model_epochs)
        baselines.append(("pattern-cnn", lambda images, labels: PatternClassifier(config, patches.pixel_mm).fit(
            images, labels)))

    results = {}
    for name, fit_fn in baselines:
        results[name] = PB.evaluate_folds(fit_fn, patches, folds, shift=shift)
        print(f"  {name}: {results[name]['seconds']:.1f} s", flush=True)

    columns = (("accuracy", "acc6"), ("balanced_accuracy", "bal-acc6"), ("three_way", "acc3 NT/CL/PS"))
    header = f"{'baseline':<16}" + "".join(f"{label:>15}" for _, label in columns) + \
        "".join(f"{'shifted ' + label:>23}" for _, label in columns)
    print("\nmean over folds (%)")
    print(header)
    for name, r in results.items():
        print(f"{name:<16}" + "".join(f"{100 * r[key]:15.1f}" for key, _ in columns)
              + "".join(f"{100 * r['shifted'][key]:23.1f}" for key, _ in columns))

    print("\nper fold (%): acc6 / bal-acc6 / acc3 | shifted acc6 / bal-acc6 / acc3")
    for name, r in results.items():
        print(name)
        for f, (row, moved) in enumerate(zip(r["per_fold"], r["shifted"]["per_fold"])):
            print(f"  fold {f + 1}: " + " / ".join(f"{100 * row[key]:5.1f}" for key, _ in columns) + "  |  "
                  + " / ".join(f"{100 * moved[key]:5.1f}" for key, _ in columns))
    counts = np.bincount(patches.labels, minlength=len(PATTERNS))
    three = [counts[list(PATTERN_GROUPS[g])].sum() for g in PB.THREE_WAY]
    print(f"\nchance (always the commonest class): acc6 {100 * counts.max() / counts.sum():.1f}, "
          f"bal-acc6 {100 / len(PATTERNS):.1f}, acc3 {100 * max(three) / sum(three):.1f}")


if __name__ == "__main__":
    main()
