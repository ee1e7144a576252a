"""``explain-eval``: faithfulness and plausibility of every method over held-out phantoms (lesion
truth) or a manifest (the LAA map in place of lesions); metrics.json, cases.csv and a table PNG."""
from __future__ import annotations

import csv
import json
import time

import numpy as np

from ..io.atomic import atomic_folder

KEYS = ("pointing_game", "dice_topk", "deletion_auc", "insertion_auc", "deletion_auc_random", "deletion_auc_laa",
        "randomization_ssim", "randomization_ssim_lung", "randomization_spearman",
        "randomization_map_empty")
GOALS = {"pointing_game": (">=", 0.9), "dice_topk": (">=", 0.5), "deletion_vs_random": ("<=", 0.7),
         "randomization_ssim": ("<", 0.3)}


def _cases_from_phantoms(n: int, seed: int, size: str):
    from ..model.phantom_cohort import phantom_design
    from ..phantom.generate import generate_phantom
    from ..segmentation import segment_lungs

    design = [p for p in phantom_design(3 * n, seed, size) if p.pattern != "none" and p.extent_pct >= 2][:n]
    for params in design:
        phantom = generate_phantom(params)
        labels = segment_lungs(phantom.ct, engine="classical").labels
        yield f"phantom-{params.seed}", phantom.ct, labels, phantom.labels["emphysema"], \
            {"dose": params.dose, "kernel": params.kernel, "pattern": params.pattern,
             "extent_true": phantom.truth["extent_pct"]}


def _cases_from_manifest(manifest):
    from ..io.read import read_ct
    from ..model.manifest_cohort import read_manifest
    from ..segmentation import case_lung_labels

    for row in read_manifest(manifest):
        ct = read_ct(row["path"])
        labels = case_lung_labels(ct, row["lung_mask"])
        yield row["path"].name, ct, labels, None, {"extent_true": row["extent_pct"]}


def summarize(rows: list, methods) -> dict:
    """method -> mean of every figure over the cases (None-free), with ``n`` and the goals."""
    out = {}
    for method in methods:
        figures = {}
        for key in KEYS:
            values = [r[f"{method}.{key}"] for r in rows if r.get(f"{method}.{key}") is not None]
            figures[key] = float(np.mean(values)) if values else None
        deletion, random = figures["deletion_auc"], figures["deletion_auc_random"]
        figures["deletion_vs_random"] = deletion / random if deletion is not None and random else None
        figures["n"] = len(rows)
        figures["goals_met"] = {k: (figures[k] is not None and (figures[k] >= v if op == ">=" else
                                                                 figures[k] <= v if op == "<=" else figures[k] < v))
                                for k, (op, v) in GOALS.items()}
        out[method] = figures
    return out


def explain_eval(out, methods, *, model_path=None, phantoms: int | None = None, seed: int = 1, manifest=None,
                 size: str = "medium", top_tiles: int = 96, progress: bool = True) -> dict:
    from tqdm import tqdm

    from ..model.predictors import open_predictor
    from .faithfulness import case_faithfulness

    started = time.perf_counter()
    predictor = open_predictor(model_path, device="cpu")
    cases = _cases_from_phantoms(phantoms, seed, size) if phantoms is not None else _cases_from_manifest(manifest)
    rows = []
    for name, ct, labels, lesion, info in tqdm(cases, total=phantoms, desc="cases", disable=not progress):
        severity = predictor.predict(ct, labels, extra={"lesion": lesion} if lesion is not None else None)
        figures = case_faithfulness(predictor, severity, severity.grid.extra.get("lesion"), methods,
                                    top_tiles=top_tiles, seed=seed)
        row = {"case": name, **info, "extent_pct": severity.summary["extent_pct"]}
        for method, values in figures.items():
            row.update({f"{method}.{k}": v for k, v in values.items() if k in KEYS or k == "tiles_explained"})
        rows.append(row)
    metrics = summarize(rows, methods)
    metrics["_run"] = {"model": predictor.info, "cases": len(rows), "seconds": round(time.perf_counter() - started, 1),
                       "source": {"phantoms": phantoms, "seed": seed, "size": size} if phantoms is not None
                       else {"manifest": str(manifest)}, "top_tiles": top_tiles,
                       "plausibility_reference": ("phantom lesion masks" if phantoms is not None
                                                  else "LAA map (<= -950 HU)")}
    with atomic_folder(out) as folder:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with open(folder / "cases.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
    return metrics
