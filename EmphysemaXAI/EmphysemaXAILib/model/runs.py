"""The severity model's runs: ``train`` on phantoms or a manifest, ``evaluate``, and the
calibration of an older phantom-trained model; each writes one folder, atomically.

``train_phantoms``: phantoms from :func:`~.phantom_cohort.phantom_design`, a 70/15/15 split by
phantom, stage 1 (tiles) then stage 2 (pooling and class head), extent calibration and SD fitted
on validation, figures on the test part. ``train_manifest``: the user's cohort (``docs/contracts.md``
manifest), k-fold cross-validation by subject (out-of-fold figures) plus a final 70/15/15 model,
both fine-tuned end to end from an initial model (the shipped severity model v1 unless ``init``
says otherwise). ``evaluate``: a model on held-out phantoms (through the classical lung
segmentation, as ``analyze`` runs it) or a manifest; naive %LAA-950 in the same lung mask is
reported beside it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..analysis.robust_extent import naive_laa950_pct
from ..analysis.severity import SEVERITY_CLASSES, SEVERITY_CUTPOINTS, severity_class
from ..errors import InputError
from ..io.atomic import atomic_folder
from ..phantom.generate import generate_phantom
from ..segmentation import segment_lungs
from .case_extent import extent_sigma, fit_calibration, model_extent_sigma
from .checkpoint import CONFIG_FILE, SEVERITY_V1_DIR, load_model, pick_device, save_model
from .figures import by_acquisition, case_figures, summary_fields, write_predictions, write_training_log
from .manifest_cohort import evaluate_manifest_rows, manifest_bags, read_manifest
from .metrics import plot_confusion, plot_roc
from .phantom_cohort import generate_cases, phantom_design, split_subjects
from .predictors import open_predictor
from .severity_dataset import TileDataset, TileSet
from .severity_net import SeverityNet
from .severity_training import TrainConfig, config_dict, predict_bags, train_case_model, train_patch_model

#: the architecture of the phantom-trained severity model (and of the shipped severity model v1)
ARCHITECTURE = {"slices": 3, "width": 16, "hidden": 64, "size": 64}


def train_phantoms(n: int, out, *, seed: int = 0, epochs: int = 20, case_epochs: int = 30, tiles_per_case: int = 300,
                   workers: int = 2, device: str = "auto", progress: bool = True, command: str | None = None,
                   phantom_size: str = "medium") -> dict:
    """Train a model on ``n`` generated phantoms; write the model folder ``out``; return metrics."""
    import torch

    if n < 7:
        raise InputError(f"phantoms={n} (--phantoms) is too few for a 70/15/15 split; "
                         "use at least 7 (hundreds for a real model)")
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
    sigma = extent_sigma(rows["val"])
    metrics = {"test": case_figures(rows["test"], sigma, seed=seed), "val": case_figures(rows["val"], sigma, seed=seed),
               "extent_sigma": sigma, "extent_calibration": list(calibration),
               "split": {k: len(v) for k, v in split.items()}}
    model_config = {
        "name": f"severity-phantoms-{n}-seed{seed}", "architecture": ARCHITECTURE,
        "working_spacing": [1.4, 1.4, 1.4], "extent_sigma": sigma, "extent_calibration": list(calibration),
        "cutpoints": [list(c) for c in SEVERITY_CUTPOINTS], "classes": list(SEVERITY_CLASSES),
        "training": {"source": "phantoms", "phantoms": n, "phantom_size": phantom_size, "seed": seed,
                     "tiles_per_case": tiles_per_case,
                     "split": metrics["split"], "patch_stage": config_dict(config),
                     "patch_epochs_run": len(patch_history), "case_epochs_run": len(case_history),
                     "tiles_train": int(len(tiles["train"].images)), "generation_s": round(generation_s, 1),
                     "total_s": None, "torch": torch.__version__, "command": command},
    }
    with atomic_folder(out) as folder:
        model_config["training"]["total_s"] = round(time.perf_counter() - started, 1)
        metrics["training_s"] = model_config["training"]["total_s"]
        save_model(model, model_config, folder)
        write_training_log({"stage 1: tiles (fraction + subtype)": patch_history,
                            "stage 2: cases (attention pooling + class head)": case_history}, folder)
        write_predictions(rows["test"], folder / "predictions_test.csv")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _fine_tune(init, bags_train, bags_val, epochs, seed, device, progress):
    model, config = load_model(init if init is not None else SEVERITY_V1_DIR)
    if config["architecture"].get("kind") == "pattern":
        raise InputError(f"init {init} (--init): a pattern model cannot be fine-tuned on case labels yet; "
                         "omit init (the shipped severity model v1) or give a severity model folder")
    history = train_case_model(model, bags_train, bags_val, epochs=epochs, freeze_encoder=False, lr=3e-4,
                               seed=seed, device=device, progress=progress)
    return model.cpu().eval(), config, history


def train_manifest(manifest, out, *, init=None, folds: int = 5, seed: int = 0, epochs: int = 20, device: str = "auto",
                   progress: bool = True, command: str | None = None) -> dict:
    """Fine-tune ``init`` (None: the shipped severity model v1) on a cohort: k-fold out-of-fold figures
    (``folds`` >= 2; 0 skips) and a final model on a 70/15/15 split by subject."""
    from sklearn.model_selection import StratifiedGroupKFold

    started = time.perf_counter()
    _, init_config = load_model(init if init is not None else SEVERITY_V1_DIR)
    arch = init_config["architecture"]
    if arch != ARCHITECTURE and init is None:
        raise InputError("the shipped model's architecture does not match this version; reinstall the package")
    bags = manifest_bags(read_manifest(manifest), arch["size"], arch["slices"], progress)
    subjects = [b.subject for b in bags]
    dev = pick_device(device)
    metrics = {"cases": len(bags), "subjects": len(set(subjects))}
    if folds:
        if len(set(subjects)) < folds:
            raise InputError(f"{len(set(subjects))} subjects cannot make {folds} folds; "
                             f"use folds={len(set(subjects))} (--folds) or fewer")
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        labels = [b.label for b in bags]
        oof = []
        for fold, (train_idx, test_idx) in enumerate(splitter.split(np.zeros(len(bags)), labels, subjects)):
            inner = split_subjects([subjects[i] for i in train_idx], seed + fold, (0.85, 0.15, 0.0))
            train = [bags[train_idx[i]] for i in inner["train"]]
            val = [bags[train_idx[i]] for i in inner["val"]]
            model, _, _ = _fine_tune(init, train, val, epochs, seed + fold, dev, progress)
            rows = predict_bags(model, [bags[i] for i in test_idx])
            oof.extend({**r, "fold": fold} for r in rows)
        metrics["cv"] = {"folds": folds, **case_figures(oof, extent_sigma(oof) if oof[0]["extent_true"] is not None
                                                        else init_config.get("extent_sigma", 1.0), seed=seed)}
    split = split_subjects(subjects, seed)
    parts = {k: [bags[i] for i in v] for k, v in split.items()}
    model, _, history = _fine_tune(init, parts["train"], parts["val"], epochs, seed, dev, progress)
    calibration = fit_calibration(predict_bags(model, parts["val"]))   # identity without known extents
    rows = {k: predict_bags(model, parts[k], calibration=calibration) for k in ("val", "test")}
    known = [r for r in rows["val"] if r["extent_true"] is not None]
    sigma = extent_sigma(known) if known else float(init_config.get("extent_sigma", 1.0))
    metrics["test"] = case_figures(rows["test"], sigma, seed=seed)
    metrics["split"] = {k: len(v) for k, v in split.items()}
    config = {**{k: v for k, v in init_config.items() if k not in ("weights_sha256", "training")},
              "name": f"severity-{Path(manifest).stem}-seed{seed}", "extent_sigma": sigma,
              "extent_calibration": list(calibration),
              "training": {"source": "manifest", "manifest": str(manifest), "init": init_config.get("name"),
                           "init_sha256": init_config["weights_sha256"], "seed": seed, "folds": folds,
                           "epochs": epochs, "split": metrics["split"], "command": command}}
    with atomic_folder(out) as folder:
        metrics["training_s"] = round(time.perf_counter() - started, 1)
        save_model(model, config, folder)
        write_training_log({"cases (end to end)": history}, folder)
        write_predictions(rows["test"], folder / "predictions_test.csv")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


_PREDICTOR = None


def _init_worker(model_path, device, threads):
    import torch

    global _PREDICTOR
    torch.set_num_threads(threads)
    _PREDICTOR = open_predictor(model_path, device)


def _evaluate_phantom(params) -> dict:
    """Generate, segment (classical engine, as analyze runs without lungmask weights), predict."""
    phantom = generate_phantom(params)
    labels = segment_lungs(phantom.ct, engine="classical").labels
    result = _PREDICTOR.predict(phantom.ct, labels)
    lung = labels > 0
    extent = float(phantom.truth["extent_pct"])
    return {"name": f"phantom-{params.seed}", "subject": str(params.seed), "label": severity_class(extent),
            "extent_true": extent, "naive_laa950_pct": naive_laa950_pct(phantom.ct.hu, lung),
            "dose": params.dose, "kernel": params.kernel, "pattern": params.pattern, **summary_fields(result.summary)}


def evaluate(model_path, out, *, phantoms: int | None = None, seed: int = 1, manifest=None, device: str = "cpu",
             workers: int = 2, progress: bool = True, phantom_size: str = "medium") -> dict:
    """Evaluate a model folder (None: the shipped model) on held-out phantoms or a manifest."""
    from tqdm import tqdm

    _, config = load_model(model_path)   # checks the folder and its digest before any work
    sigma = model_extent_sigma(config)
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
        rows = evaluate_manifest_rows(open_predictor(model_path, device), manifest, progress)
    metrics = case_figures(rows, sigma, seed=seed)
    metrics["model"] = {"name": config.get("name"), "sha256": config["weights_sha256"]}
    metrics["source"] = ({"phantoms": phantoms, "seed": seed, "size": phantom_size} if phantoms is not None
                         else {"manifest": str(manifest)})
    if rows and all(r.get("extent_true") is not None and r.get("naive_laa950_pct") is not None for r in rows):
        metrics["by_acquisition"] = by_acquisition(rows)
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
        write_predictions(rows, folder / "predictions.csv")
        if known:
            plot_confusion(metrics["confusion"], folder / "confusion.png",
                           f"{metrics['model']['name']}: {len(known)} cases")
            plot_roc([r["label"] for r in known], [[r[f"p_{c}"] for c in SEVERITY_CLASSES] for r in known],
                     folder / "roc.png")
    return metrics


def calibrate_phantom_model(model_dir, *, workers: int = 2, progress: bool = True) -> dict:
    """Fit the extent calibration of a model trained by :func:`train_phantoms` that has none:
    regenerate its validation and test phantoms (same design, seed and split as the config
    records), fit on validation, recompute the figures; rewrites config.json and metrics.json
    (weights untouched). The same steps ``train_phantoms`` now runs itself."""
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
    rows = {part: predict_bags(model, [bags[i] for i in split[part]], calibration=calibration)
            for part in ("val", "test")}
    sigma = extent_sigma(rows["val"])
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update(test=case_figures(rows["test"], sigma, seed=t["seed"]),
                   val=case_figures(rows["val"], sigma, seed=t["seed"]),
                   extent_sigma=sigma, extent_calibration=list(calibration))
    config.update(extent_sigma=sigma, extent_calibration=list(calibration))
    config["training"]["calibration_fitted_after_run"] = True
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_predictions(rows["test"], folder / "predictions_test.csv")
    return metrics
