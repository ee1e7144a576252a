"""The ``train`` and ``evaluate`` runs: phantoms or a manifest in, a model folder or metrics out.

``train_phantoms``: phantoms from :func:`~.fit.phantom_design`, a 70/15/15 split by phantom,
stage 1 (tiles) then stage 2 (pooling and class head), extent SD calibrated on validation,
figures on the test part. ``train_manifest``: the user's cohort (``contracts.md`` manifest), k-fold
cross-validation by subject (out-of-fold figures) plus a final 70/15/15 model, both fine-tuned
end to end from an initial model (the shipped one unless ``init`` says otherwise).
``evaluate``: a model on held-out phantoms (through the classical lung segmentation, as
``analyze`` runs it) or a manifest; naive %LAA-950 in the same lung mask is reported beside it.
Every output folder is written atomically.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_folder
from ..errors import InputError
from ..analysis.severity import SEVERITY_CLASSES, SEVERITY_CUTPOINTS, severity_class
from .fit import (fit_calibration, generate_cases, phantom_design, predict_bags, split_subjects,
                  train_case_model)
from .infer import class_probabilities
from .metrics import case_metrics, plot_confusion, plot_roc
from .train import TrainConfig, config_dict, pick_device, train_patch_model

ARCHITECTURE = {"slices": 3, "width": 16, "hidden": 64, "size": 64}


def _figures(rows: list, sigma: float, cutpoints=SEVERITY_CUTPOINTS, seed: int = 0) -> dict:
    known = [r for r in rows if r.get("label") is not None]
    if not known:
        return {"n": 0}
    proba = np.array([list(class_probabilities(r["extent_pct"], sigma, cutpoints).values()) for r in known])
    extent = [r for r in known if r.get("extent_true") is not None]
    same = len(extent) == len(known)
    out = case_metrics([r["label"] for r in known], [r["class"] for r in known], proba,
                       [r["extent_true"] for r in known] if same else None,
                       [r["extent_pct"] for r in known] if same else None, cutpoints=cutpoints, seed=seed)
    head = (np.array([r["head_probabilities"] for r in known])
            if all(r.get("head_probabilities") is not None for r in known) else None)
    if head is not None:
        truth = [SEVERITY_CLASSES.index(r["label"]) for r in known]
        out["class_head"] = {"accuracy": float(np.mean(head.argmax(1) == np.array(truth)))}
    return out


def _sigma(rows: list) -> float:
    errors = [r["extent_pct"] - r["extent_true"] for r in rows if r.get("extent_true") is not None]
    return float(max(np.sqrt(np.mean(np.square(errors))), 0.25)) if errors else 2.0


def _write_log(histories: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"stage": stage, **row} for stage, history in histories.items() for row in history]
    columns = sorted({k for row in rows for k in row}, key=lambda k: (k != "stage", k != "epoch", k))
    with open(folder / "log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.4), squeeze=False)
    for ax, (stage, history) in zip(axes[0], histories.items()):
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["train_loss"] for r in history], label="training")
        ax.plot(epochs, [r["val_loss"] for r in history], label="validation")
        best = int(np.argmin([r["val_loss"] for r in history]))
        ax.axvline(epochs[best], color="gray", ls=":", label="best (kept)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(stage, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "training_curve.png", dpi=80)
    plt.close(fig)


def _write_predictions(rows: list, path: Path) -> None:
    columns = ["name", "subject", "label", "class", "extent_true", "extent_pct", "naive_laa950_pct",
               "dose", "kernel", "pattern", "p_none", "p_mild", "p_moderate", "p_severe", "low_confidence"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})


def train_phantoms(n: int, out, *, seed: int = 0, epochs: int = 20, case_epochs: int = 30, tiles_per_case: int = 300,
                   workers: int = 2, device: str = "auto", progress: bool = True, command: str | None = None,
                   phantom_size: str = "medium") -> dict:
    """Train a model on ``n`` generated phantoms; write the model folder ``out``; return metrics."""
    import torch

    from .checkpoint import save_model
    from .data import TileDataset, TileSet
    from .network import SeverityNet

    if n < 7:
        raise InputError(f"--phantoms {n} is too few for a 70/15/15 split; use at least 7 (hundreds for a real model)")
    started = time.perf_counter()
    design = phantom_design(n, seed, phantom_size)
    split = split_subjects([p.seed for p in design], seed)
    cases = generate_cases(design, tiles_per_case, ARCHITECTURE["size"], ARCHITECTURE["slices"], workers, progress)
    generation_s = time.perf_counter() - started
    tiles = {part: TileSet.concat([cases[i][0] for i in idx]) for part, idx in split.items()}
    bags = {part: [cases[i][1] for i in idx] for part, idx in split.items()}
    torch.manual_seed(seed)
    model = SeverityNet(ARCHITECTURE["slices"], ARCHITECTURE["width"], ARCHITECTURE["hidden"])
    config = TrainConfig(epochs=epochs, batch_size=64, seed=seed, device=device)
    patch_history = train_patch_model(model, TileDataset(tiles["train"], True, seed), TileDataset(tiles["val"], False),
                                      config, progress=progress)
    dev = pick_device(device)
    case_history = train_case_model(model, bags["train"], bags["val"], epochs=case_epochs, seed=seed, device=dev,
                                    progress=progress)
    model.cpu().eval()
    calibration = fit_calibration(predict_bags(model, bags["val"]))
    rows = {part: predict_bags(model, bags[part], calibration=calibration) for part in ("val", "test")}
    sigma = _sigma(rows["val"])
    metrics = {"test": _figures(rows["test"], sigma, seed=seed), "val": _figures(rows["val"], sigma, seed=seed),
               "extent_sigma": sigma, "extent_calibration": list(calibration),
               "split": {k: len(v) for k, v in split.items()}}
    model_config = {
        "name": f"severity-phantoms-{n}-seed{seed}", "architecture": ARCHITECTURE,
        "working_spacing": [1.4, 1.4, 1.4], "extent_sigma": sigma, "extent_calibration": list(calibration),
        "cutpoints": [list(c) for c in SEVERITY_CUTPOINTS], "classes": list(SEVERITY_CLASSES),
        "training": {"source": "phantoms", "phantoms": n, "phantom_size": phantom_size, "seed": seed, "tiles_per_case": tiles_per_case,
                     "split": metrics["split"], "patch_stage": config_dict(config),
                     "patch_epochs_run": len(patch_history), "case_epochs_run": len(case_history),
                     "tiles_train": int(len(tiles["train"].images)), "generation_s": round(generation_s, 1),
                     "total_s": None, "torch": torch.__version__, "command": command},
    }
    with atomic_folder(out) as folder:
        model_config["training"]["total_s"] = round(time.perf_counter() - started, 1)
        metrics["training_s"] = model_config["training"]["total_s"]
        save_model(model, model_config, folder)
        _write_log({"stage 1: tiles (fraction + subtype)": patch_history,
                    "stage 2: cases (attention pooling + class head)": case_history}, folder)
        _write_predictions(rows["test"], folder / "predictions_test.csv")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


_PREDICTOR = None


def _init_worker(model_path, device, threads):
    import torch

    global _PREDICTOR
    torch.set_num_threads(threads)
    from .infer import open_predictor

    _PREDICTOR = open_predictor(model_path, device)


def _evaluate_phantom(params) -> dict:
    """Generate, segment (classical engine, as analyze runs without lungmask weights), predict."""
    from ..phantom.generate import generate_phantom
    from ..segmentation import segment_lungs

    phantom = generate_phantom(params)
    labels = segment_lungs(phantom.ct, engine="classical").labels
    result = _PREDICTOR.predict(phantom.ct, labels)
    lung = labels > 0
    extent = float(phantom.truth["extent_pct"])
    return {"name": f"phantom-{params.seed}", "subject": str(params.seed), "label": severity_class(extent),
            "extent_true": extent, "naive_laa950_pct": float(100.0 * (phantom.ct.hu[lung] <= -950).mean()),
            "dose": params.dose, "kernel": params.kernel, "pattern": params.pattern, **_row(result.summary)}


def _row(summary: dict) -> dict:
    return {"extent_pct": summary["extent_pct"], "class": summary["class"],
            "low_confidence": summary["low_confidence"],
            **{f"p_{k}": v for k, v in summary["probabilities"].items()},
            "head_probabilities": head_probabilities(summary)}


def head_probabilities(summary: dict):
    """The severity model's attention-pooled class head (4,), None for a pattern model."""
    return list(summary["class_head"].values()) if "class_head" in summary else None


def _by_acquisition(rows: list) -> dict:
    """Extent MAE of the model and of naive %LAA-950 per dose x kernel, and the ratio."""
    out = {}
    for dose in ("standard", "low", "ultralow"):
        for kernel in ("soft", "standard", "sharp"):
            group = [r for r in rows if r.get("dose") == dose and r.get("kernel") == kernel]
            if group:
                model = float(np.mean([abs(r["extent_pct"] - r["extent_true"]) for r in group]))
                naive = float(np.mean([abs(r["naive_laa950_pct"] - r["extent_true"]) for r in group]))
                out[f"{dose}/{kernel}"] = {"n": len(group), "model_mae": model, "naive_laa950_mae": naive,
                                           "ratio": model / naive if naive > 0 else None}
    return out


def evaluate(model_path, out, *, phantoms: int | None = None, seed: int = 1, manifest=None, device: str = "cpu",
             workers: int = 2, progress: bool = True, phantom_size: str = "medium") -> dict:
    """Evaluate a model folder (None: the shipped model) on held-out phantoms or a manifest."""
    from tqdm import tqdm

    from .checkpoint import load_model

    _, config = load_model(model_path)   # checks the folder and its digest before any work
    sigma = float(config.get("extent_sigma", 1.0))
    started = time.perf_counter()
    if phantoms is not None:
        design = phantom_design(phantoms, seed, phantom_size)
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(model_path, device, 1)) as pool:
                rows = list(tqdm(pool.map(_evaluate_phantom, design), total=len(design), desc="phantoms",
                                 disable=not progress))
        else:
            _init_worker(model_path, device, 2)
            rows = [_evaluate_phantom(p) for p in tqdm(design, desc="phantoms", disable=not progress)]
    else:
        from .cohort import evaluate_manifest_rows
        from .infer import open_predictor

        rows = evaluate_manifest_rows(open_predictor(model_path, device), manifest, progress)
    metrics = _figures(rows, sigma, seed=seed)
    metrics["model"] = {"name": config.get("name"), "sha256": config["weights_sha256"]}
    metrics["source"] = {"phantoms": phantoms, "seed": seed, "size": phantom_size} if phantoms is not None else {"manifest": str(manifest)}
    if rows and all(r.get("extent_true") is not None and r.get("naive_laa950_pct") is not None for r in rows):
        metrics["by_acquisition"] = _by_acquisition(rows)
        hard = [v for k, v in metrics["by_acquisition"].items() if k in ("low/sharp", "ultralow/sharp")]
        if hard:
            model = sum(v["model_mae"] * v["n"] for v in hard) / sum(v["n"] for v in hard)
            naive = sum(v["naive_laa950_mae"] * v["n"] for v in hard) / sum(v["n"] for v in hard)
            metrics["low_dose_sharp"] = {"n": sum(v["n"] for v in hard), "model_mae": model, "naive_laa950_mae": naive,
                                         "ratio": model / naive if naive > 0 else None}
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    known = [r for r in rows if r.get("label") is not None]
    with atomic_folder(out) as folder:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _write_predictions(rows, folder / "predictions.csv")
        if known:
            plot_confusion(metrics["confusion"], folder / "confusion.png", f"{metrics['model']['name']}: {len(known)} cases")
            plot_roc([r["label"] for r in known], [[r[f"p_{c}"] for c in SEVERITY_CLASSES] for r in known],
                     folder / "roc.png")
    return metrics


def calibrate_phantom_model(model_dir, *, workers: int = 2, progress: bool = True) -> dict:
    """Fit the extent calibration of a model trained by :func:`train_phantoms` that has none:
    regenerate its validation and test phantoms (same design, seed and split as the config
    records), fit on validation, recompute the figures; rewrites config.json and metrics.json
    (weights untouched). The same steps ``train_phantoms`` now runs itself."""
    from .checkpoint import CONFIG_FILE, load_model

    folder = Path(model_dir)
    model, config = load_model(folder)
    t = config["training"]
    design = phantom_design(t["phantoms"], t["seed"], t.get("phantom_size", "medium"))
    split = split_subjects([p.seed for p in design], t["seed"])
    arch = config["architecture"]
    wanted = split["val"] + split["test"]
    cases = generate_cases([design[i] for i in wanted], 1, arch["size"], arch["slices"], workers, progress)
    bags = dict(zip(wanted, (bag for _, bag in cases)))
    calibration = fit_calibration(predict_bags(model, [bags[i] for i in split["val"]]))
    rows = {part: predict_bags(model, [bags[i] for i in split[part]], calibration=calibration) for part in ("val", "test")}
    sigma = _sigma(rows["val"])
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update(test=_figures(rows["test"], sigma, seed=t["seed"]), val=_figures(rows["val"], sigma, seed=t["seed"]),
                   extent_sigma=sigma, extent_calibration=list(calibration))
    config.update(extent_sigma=sigma, extent_calibration=list(calibration))
    config["training"]["calibration_fitted_after_run"] = True
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _write_predictions(rows["test"], folder / "predictions_test.csv")
    return metrics
