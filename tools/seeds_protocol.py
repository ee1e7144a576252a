"""The seeds' embedding protocol (001 / 004) on generated phantoms, end to end.

90 medium phantoms, balanced 45 / 45 by the phantom's true extent (>= 6 % vs < 6 %), every dose x
kernel combination; per case: classical lung segmentation, the three zone patches, embeddings of
each backbone, whole-lung QCT markers. Two labelings:
- ``seed``: the seeds' weak label, measured %LAA-950 >= 6 % (computed from the scan, as the seeds
  do: circular for the fused and QCT-only models, and noisy at low dose);
- ``truth``: the phantom's true emphysema extent >= 6 % (what the seeds' label stands in for).
Then ``fit_linear`` (every variant) with stratified 5-fold CV and with leave-one-acquisition-out
(groups = the 9 dose x kernel cells). Writes into OUT: ``embeddings_<backbone>.parquet``,
``labels.csv``, ``fits/<backbone>_<labeling>_<cv>/`` (fit-linear outputs), ``summary.json`` and
``summary.md`` (a table beside the seeds' published figures).

    .venv/bin/python tools/seeds_protocol.py --out OUT [--n 90] [--seed 5] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "EmphysemaXAI"))

SEEDS_PUBLISHED = {"001 (ResNet-152, t-test top-20 + LR, 90 LIDC cases)": {"roc_auc": 0.94, "pr_auc": 0.87,
                                                                          "accuracy": 0.91},
                   "004 (+ QC, LASSO / RFE, fusion with QCT; bootstrapped)": {"roc_auc": 0.996, "pr_auc": 0.962,
                                                                             "balanced_accuracy": 0.931}}
_BACKBONES = {}


def design(n: int, seed: int) -> list:
    """n parameter sets, alternately positive (true extent 6.5-35 %) and negative (0-5.5 %; a
    third of the negatives without emphysema), dose x kernel cycling through all 9 cells."""
    from EmphysemaXAILib.phantom.params import DOSES, EMPHYSEMA_PATTERNS, KERNELS, PhantomParams

    rng = np.random.default_rng([seed, 8])
    out = []
    for i in range(n):
        positive = i % 2 == 1
        pattern = str(rng.choice(EMPHYSEMA_PATTERNS))
        extent = float(np.round(rng.uniform(6.5, 35.0) if positive else rng.uniform(0.3, 5.5), 2))
        if not positive and rng.random() < 1 / 3:
            pattern, extent = "none", 0.0
        out.append(PhantomParams(extent_pct=extent, pattern=pattern, dose=DOSES[i % 3], kernel=KERNELS[(i // 3) % 3],
                                 size="medium", seed=seed * 10000 + i,
                                 inspiration=float(np.round(rng.uniform(0.85, 1.0), 3))))
    return out


def _case(job):
    """One phantom -> (label row, {backbone: feature row})."""
    import torch

    from EmphysemaXAILib.embed import case_row, load_backbone
    from EmphysemaXAILib.phantom.generate import generate_phantom
    from EmphysemaXAILib.segmentation import segment_lungs

    params, backbones, preview_dir = job
    torch.set_num_threads(1)
    for name in backbones:   # "name" or "name:mode" (efficientnet-lite0:resize)
        if name not in _BACKBONES:
            base, _, mode = name.partition(":")
            _BACKBONES[name] = load_backbone(base, mode=mode or "lung")
    phantom = generate_phantom(params)
    labels = segment_lungs(phantom.ct, engine="classical").labels
    case = f"phantom-{params.seed}"
    rows = {}
    for k, name in enumerate(backbones):
        preview = Path(preview_dir) / f"{case}.png" if preview_dir and k == 0 and params.seed % 15 == 0 else None
        rows[name] = case_row(phantom.ct, labels, _BACKBONES[name], case, preview)
    measured = rows[backbones[0]]["qct_laa950_pct"]
    truth = phantom.truth["extent_pct"]
    label = {"id": case, "subject": case, "acquisition": f"{params.dose}-{params.kernel}",
             "pattern": params.pattern, "extent_true": truth, "laa_pct": measured,
             "label_seed": "emphysema" if measured >= 6.0 else "normal",
             "label_truth": "emphysema" if truth >= 6.0 else "normal"}
    return label, rows


def main(argv=None) -> int:
    import pandas as pd
    from tqdm import tqdm

    from EmphysemaXAILib.embed import write_embeddings
    from EmphysemaXAILib.linear import fit_linear

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=90)
    parser.add_argument("--seed", type=int, default=5, help="phantom seed (the shipped CNN saw seed 0)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backbones", default="efficientnet-lite0,efficientnet-lite0:resize,own",
                        help="backbone names, name:mode for an ImageNet backbone's input mode")
    parser.add_argument("--bootstraps", type=int, default=1000)
    args = parser.parse_args(argv)
    out = Path(args.out)
    (out / "previews").mkdir(parents=True, exist_ok=True)
    backbones = args.backbones.split(",")
    started = time.perf_counter()
    jobs = [(p, backbones, out / "previews") for p in design(args.n, args.seed)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(tqdm(pool.map(_case, jobs), total=len(jobs), desc="phantoms"))
    labels = pd.DataFrame([r[0] for r in results])
    labels.to_csv(out / "labels.csv", index=False)
    cases_s = time.perf_counter() - started
    summary = {"n": len(labels), "seed": args.seed, "cases_seconds": round(cases_s, 1),
               "label_counts": {c: labels[c].value_counts().to_dict() for c in ("label_seed", "label_truth")},
               "label_agreement": float((labels.label_seed == labels.label_truth).mean()), "fits": {}}
    for name in backbones:
        table = pd.DataFrame([r[1][name] for r in results])
        write_embeddings(table, out / f"embeddings_{name.replace(':', '-')}.parquet")
        for labeling in ("seed", "truth"):
            lab = labels.rename(columns={f"label_{labeling}": "label"})
            for cv, group in (("kfold", "subject"), ("logo", "acquisition")):
                key = f"{name.replace(':', '-')}_{labeling}_{cv}"
                metrics = fit_linear(table, lab, out / "fits" / key, model="ttest-lr", cv=cv, groups_column=group,
                                     bootstraps=args.bootstraps, seed=0)
                summary["fits"][key] = {variant: {m: figures.get(m) for m in
                                                  ("roc_auc", "pr_auc", "balanced_accuracy", "accuracy", "ci95",
                                                   "mae", "r2", "spearman")}
                                        for variant, figures in metrics["models"].items()}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["published"] = SEEDS_PUBLISHED
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


def markdown(summary: dict) -> str:
    def cell(figures, key):
        value, ci = figures.get(key), (figures.get("ci95") or {}).get(key)
        if value is None:
            return "-"
        return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    lines = [f"Phantoms: {summary['n']} (seed {summary['seed']}); labels {summary['label_counts']}; "
             f"seed label = truth label in {100 * summary['label_agreement']:.0f} % of cases.", "",
             "| backbone / label / CV | variant | ROC-AUC | PR-AUC | balanced acc. | accuracy |",
             "|---|---|---|---|---|---|"]
    for key, variants in summary["fits"].items():
        for variant, figures in variants.items():
            if variant == "laa-regression":
                lines.append(f"| {key} | {variant} (MAE {figures['mae']:.2f} points, R2 {figures['r2']:.2f}, "
                             f"Spearman {figures['spearman']:.2f}) | | | | |")
                continue
            lines.append(f"| {key} | {variant} | {cell(figures, 'roc_auc')} | {cell(figures, 'pr_auc')} | "
                         f"{cell(figures, 'balanced_accuracy')} | {cell(figures, 'accuracy')} |")
    lines += ["", "Published (real CT, not comparable data): " + "; ".join(
        f"{k}: " + ", ".join(f"{m} {v}" for m, v in figs.items()) for k, figs in summary["published"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
