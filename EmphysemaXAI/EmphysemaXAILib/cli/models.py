"""Sub-commands on models: ``train``, ``train-patterns``, ``fit-fusion``, ``patterns``, ``evaluate``,
``explain-eval``."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..io.atomic import write_files_atomic
from ..io.outputs import Output, claim_outputs
from ..notices import NOT_CLINICAL
from ..phantom.params import SIZES
from .registry import add_device, add_json, add_out, add_overwrite, command, methods
from .show import command_line, print_figures

if TYPE_CHECKING:
    from contextlib import AbstractContextManager


def manifest_inputs(manifest) -> list:
    """The manifest and the cases and masks it lists (inputs no output may overlap)."""
    if not manifest:
        return []
    path = Path(manifest)
    inputs = [("--manifest", path)]
    try:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                for column in ("path", "lung_mask"):
                    value = (row.get(column) or "").strip()
                    if value:
                        item = Path(value)
                        inputs.append((f"the manifest's {column}", item if item.is_absolute() else path.parent / item))
    except (OSError, ValueError, csv.Error):
        pass  # the reader refuses a bad manifest with its own message
    return inputs


def claim_folder(args, inputs) -> AbstractContextManager[list]:
    """claim_outputs for the commands that write one folder given by --out."""
    return claim_outputs(inputs, [Output("--out", args.out)], args.overwrite)


def _train_flags(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--phantoms", type=int, metavar="N", help="generate N medium phantoms (70/15/15 split)")
    source.add_argument("--manifest", metavar="CSV", help="your cohort: path, lung_mask, label, extent_pct, subject")
    add_out(parser, "model folder to write")
    parser.add_argument("--phantom-size", choices=tuple(SIZES), default="medium",
                        help="phantom size (medium = the model's 1.4 mm working grid; small for quick checks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20, help="tile-stage epochs (phantoms)")
    parser.add_argument("--case-epochs", type=int, default=30, help="case-stage epochs")
    parser.add_argument("--tiles-per-case", type=int, default=300, help="training tiles drawn per phantom")
    parser.add_argument("--folds", type=int, default=5, help="k-fold cross-validation on a manifest (0: none)")
    parser.add_argument("--init", metavar="MODEL_DIR",
                        help="model to fine-tune on a manifest (default: the shipped severity model v1)")
    parser.add_argument("--workers", type=int, default=2, help="processes generating phantoms")
    add_device(parser, "auto")
    add_overwrite(parser)


@command("train", "train the severity model on phantoms or fine-tune it on your cohort", _train_flags)
def cmd_train(args) -> int:
    with claim_folder(args, manifest_inputs(args.manifest) + [("--init", args.init)]):
        if args.phantoms is not None:
            from ..model.runs import train_phantoms

            metrics = train_phantoms(args.phantoms, args.out, seed=args.seed, epochs=args.epochs,
                                     case_epochs=args.case_epochs, tiles_per_case=args.tiles_per_case,
                                     workers=args.workers, device=args.device, command=command_line(),
                                     phantom_size=args.phantom_size)
        else:
            from ..model.runs import train_manifest

            metrics = train_manifest(args.manifest, args.out, init=args.init, folds=args.folds, seed=args.seed,
                                     epochs=args.case_epochs, device=args.device, command=command_line())
            print_figures(f"{args.folds}-fold cross-validation", metrics.get("cv", {}))
    print_figures("held-out test split", metrics["test"])
    print(f"{args.out}: model written (weights.pt, config.json, metrics.json, log.csv, training_curve.png)")
    return 0


def _train_patterns_flags(parser) -> None:
    parser.add_argument("--cip-patches", required=True, metavar="MAT", help="CIP's EmphysemaPatches.mat")
    add_out(parser, "model folder to write")
    parser.add_argument("--phantoms", type=int, default=24, help="phantoms giving training patches")
    parser.add_argument("--val-phantoms", type=int, default=8, help="held-out phantoms (extent calibration)")
    parser.add_argument("--per-phantom", type=int, default=400, help="2D patches drawn per phantom")
    parser.add_argument("--folds", type=int, default=5, help="k-fold figures on the CIP patches (0: none)")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--width", type=int, default=24, help="channels of the first block")
    parser.add_argument("--pixel-mm", type=float, default=1.0, help="working pixel size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="processes for the folds")
    parser.add_argument("--holdout-fold", type=int, choices=range(5), metavar="K",
                        help="keep fold K (of 5) of CIP's patches out of the final model (for benchmarks)")
    parser.add_argument("--border-aware", action="store_true",
                        help="CIP's chest-wall bands as non-lung (+200 HU) and synthetic pleural borders on other "
                             "classes (issue 25; not in the shipped recipe: it did not help in short runs)")
    parser.add_argument("--border-prob", type=float, default=0.75,
                        help="with --border-aware: share of non-paraseptal CIP patches given a synthetic border")
    parser.add_argument("--air-shift-hu", type=float, default=50.0,
                        help="scanner augmentation: air drawn in -1000 +- this (HU)")
    parser.add_argument("--map-rule", choices=("extent", "argmax"), default="extent",
                        help="pattern map labels: the extent's voxels (extent) or the plain argmax")
    add_json(parser, "print metrics.json on stdout")
    add_overwrite(parser)


@command("train-patterns", "train the pattern model on CIP's patches and phantoms", _train_patterns_flags)
def cmd_train_patterns(args) -> int:
    from ..model.pattern_augment import ScannerRanges
    from ..model.pattern_runs import train_patterns
    from ..model.pattern_training import PatternTrainConfig

    with claim_folder(args, [("--cip-patches", args.cip_patches)]):
        ranges = ScannerRanges(air_shift_hu=(-args.air_shift_hu, args.air_shift_hu))
        border = args.border_aware
        config = PatternTrainConfig(epochs=args.epochs, seed=args.seed, width=args.width, pixel_mm=args.pixel_mm,
                                    mask_chest_wall=border, border_prob=args.border_prob if border else 0.0,
                                    ranges=ranges)
        metrics = train_patterns(args.cip_patches, args.out, phantoms=args.phantoms, val_phantoms=args.val_phantoms,
                                 per_phantom=args.per_phantom, folds=args.folds, seed=args.seed,
                                 command=command_line(), config=config, workers=args.workers,
                                 holdout_fold=args.holdout_fold, map_rule=args.map_rule)
    if args.json:
        print(json.dumps(metrics))
        return 0
    for name, figures in ((f"{args.folds}-fold on CIP's patches", metrics.get("cip_kfold", {}).get("clean")),
                          ("the same folds after a scanner shift", metrics.get("cip_kfold", {}).get("scanner_shift"))):
        if figures:
            print(f"{name}: accuracy {figures['accuracy']:.3f} (6 classes), "
                  f"balanced {figures['balanced_accuracy']:.3f}, "
                  f"normal / centrilobular / paraseptal {figures['accuracy_nt_cl_ps']:.3f}")
    offsets = {k: v for k, v in metrics.get("cip_kfold", {}).items() if k.startswith("air_")}
    if offsets:
        print("the same folds read by a scanner whose air is off (no --air-hu): normal / centrilobular / paraseptal "
              + ", ".join(f"{k[4:]} HU {v['accuracy_nt_cl_ps']:.3f}" for k, v in offsets.items()))
    val = metrics.get("validation_phantoms", {})
    if val.get("extent_mae") is not None:
        print(f"held-out phantoms ({len(val['rows'])}): extent MAE {val['extent_mae']:.2f} points after calibration")
    print(f"{args.out}: model written (weights.pt, config.json, metrics.json, log.csv, training_curve.png)")
    return 0


def _fit_fusion_flags(parser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="pattern model folder")
    parser.add_argument("--cip-patches", required=True, metavar="MAT", help="CIP's EmphysemaPatches.mat")
    parser.add_argument("--phantoms", type=int, default=8, help="training phantoms giving fit voxels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", metavar="LIST",
                        help="comma-separated features of model/pattern_fusion.py "
                        "(default texture_logit,laa950_smooth_local)")
    parser.add_argument("--write", action="store_true",
                        help="write the fitted block into the model's config.json (weights unchanged)")
    add_json(parser, "print the block as JSON on stdout")


@command("fit-fusion", "fit the fused texture + calibrated density map of a pattern model", _fit_fusion_flags)
def cmd_fit_fusion(args) -> int:
    from ..model.pattern_fusion import ALL_FEATURES, FEATURES
    from ..model.pattern_fusion_fit import fit_model_fusion

    names = tuple(n.strip() for n in args.features.split(",")) if args.features else FEATURES
    unknown = [n for n in names if n not in ALL_FEATURES]
    if unknown:
        raise InputError(f"--features: {', '.join(unknown)} not one of {', '.join(ALL_FEATURES)}")
    try:
        block = fit_model_fusion(args.model, args.cip_patches, phantoms=args.phantoms, seed=args.seed, names=names,
                                 write=args.write, command=command_line())
    except ValueError as error:
        raise InputError(f"--model: {error}") from None
    if args.json:
        print(json.dumps(block))
        return 0
    terms = " ".join(f"{c:+.4f} x {n}" for c, n in zip(block["coefficients"], block["features"]))
    print(f"fused map = sigmoid({terms} {block['intercept']:+.4f}); per SD: {block['coefficients_per_sd']}")
    print(f"{args.model}: config.json " + ("updated" if args.write else "unchanged (no --write)"))
    return 0


def _patterns_flags(parser) -> None:
    parser.add_argument("images", nargs="+", help="TIFF / DICOM / NRRD / NIfTI HU images or folders of them")
    parser.add_argument("--pixel-mm", type=float, metavar="MM", help="pixel size (default: the file's own)")
    parser.add_argument("--air-hu", default="none", metavar="HU|auto|none",
                        help="what this scanner reads for air (calibrates); auto: estimated from the images (outside "
                             "air of whole slices, else the pooled histogram of patches; see MODEL_CARD.md: it can "
                             "push a normal-only set toward emphysema); none (default): no calibration")
    parser.add_argument("--air-groups", choices=("run", "input"), default="run",
                        help="with --air-hu auto: one estimate for all images (run: one scanner) or one per input "
                             "file / folder (input)")
    add_out(parser, "table to write, one row per image", metavar="CSV")
    parser.add_argument("--model", metavar="MODEL_DIR", help="pattern model folder (default: the shipped model)")
    add_device(parser, "cpu")
    add_json(parser, "print a JSON summary on stdout")
    add_overwrite(parser, "replace an existing table")


@command("patterns", "classify 2D lung patches / ROIs into emphysema patterns (CSV)", _patterns_flags)
def cmd_patterns(args) -> int:
    from ..model.pattern_images import COLUMNS, classify
    from ..model.pattern_infer import PatternPredictor

    with claim_outputs([("the input", p) for p in args.images] + [("--model", args.model)],
                       [Output("--out", args.out, "file")], args.overwrite):
        try:
            predictor = PatternPredictor(args.model, args.device)
        except ValueError as error:
            raise InputError(f"--model: {error}; give a folder written by train-patterns") from None
        rows, airs = classify(args.images, predictor, pixel_mm=args.pixel_mm, air_hu=_air_value(args.air_hu),
                              air_groups=args.air_groups)

        def write(tmp):
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, COLUMNS)
                writer.writeheader()
                writer.writerows({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}
                                 for row in rows)

        write_files_atomic({args.out: write}, overwrite=args.overwrite or None)
    counts = {p: sum(r["pattern"] == p for r in rows) for p in dict.fromkeys(r["pattern"] for r in rows)}
    if args.json:
        print(json.dumps({"out": str(args.out), "rows": len(rows), "patterns": counts, "air": airs,
                          "model": predictor.info}))
    else:
        print(f"{args.out}: {len(rows)} images classified ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
              + NOT_CLINICAL)
        for air in airs:
            print(f"air {air['air_hu']:g} HU ({air['source']}, {air['images']} images)")
    return 0


def _air_value(text: str) -> float | str | None:
    """--air-hu: a number (HU), auto or none (None)."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--air-hu {text!r}: give a number (what the scanner reads for air, HU), auto or none") \
            from None


def _held_out_source(parser, phantoms_help: str, manifest_help: str, out_help: str) -> None:
    """The options evaluate and explain-eval share: model, phantoms or manifest, seed, out."""
    parser.add_argument("--model", metavar="MODEL_DIR", help="model folder (default: the shipped model)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--phantoms", type=int, metavar="N", help=phantoms_help)
    source.add_argument("--manifest", metavar="CSV", help=manifest_help)
    parser.add_argument("--seed", type=int, default=1, help="phantom seed (use one the model was not trained on)")
    parser.add_argument("--phantom-size", choices=tuple(SIZES), default="medium")
    add_out(parser, out_help)
    add_json(parser, "print metrics.json on stdout")
    add_overwrite(parser)


def _evaluate_flags(parser) -> None:
    _held_out_source(parser, "N new phantoms (all doses and kernels)",
                     "labelled cases (path, lung_mask, label, extent_pct, subject)",
                     "folder for metrics.json, predictions.csv and plots")
    parser.add_argument("--workers", type=int, default=2, help="processes for the phantoms")
    add_device(parser, "cpu")


@command("evaluate", "figures of a severity model on held-out phantoms or your cohort", _evaluate_flags)
def cmd_evaluate(args) -> int:
    from ..model.runs import evaluate

    with claim_folder(args, manifest_inputs(args.manifest) + [("--model", args.model)]):
        metrics = evaluate(args.model, args.out, phantoms=args.phantoms, seed=args.seed, manifest=args.manifest,
                           device=args.device, workers=args.workers, phantom_size=args.phantom_size)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print_figures(f"{metrics['model']['name']}", metrics)
    hard = metrics.get("low_dose_sharp")
    if hard:
        print(f"low / ultra-low dose with a sharp kernel ({hard['n']} cases): extent MAE {hard['model_mae']:.2f} "
              f"vs naive %LAA-950 {hard['naive_laa950_mae']:.2f} (ratio {hard['ratio']:.2f})")
    print(f"{args.out}: metrics.json, predictions.csv, confusion.png, roc.png")
    return 0


def _explain_eval_flags(parser) -> None:
    _held_out_source(parser, "N new phantoms with emphysema", "your cases (the LAA map stands in for lesions)",
                     "folder for metrics.json and cases.csv")
    parser.add_argument("--methods", metavar="LIST", help="default gradcam,ig,attention,occlusion")
    parser.add_argument("--top-tiles", type=int, default=96,
                        help="expensive methods run on this many most-attended tiles")


@command("explain-eval", "faithfulness and plausibility of the attribution methods", _explain_eval_flags)
def cmd_explain_eval(args) -> int:
    from ..explain.evaluate import KEYS, explain_eval

    chosen = methods(args.methods) or ("gradcam", "ig", "attention", "occlusion")
    with claim_folder(args, manifest_inputs(args.manifest) + [("--model", args.model)]):
        metrics = explain_eval(args.out, chosen, model_path=args.model, phantoms=args.phantoms, seed=args.seed,
                               manifest=args.manifest, size=args.phantom_size, top_tiles=args.top_tiles)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"{'method':<11}" + "".join(f"{k.replace('randomization', 'rand')[:18]:>19}" for k in KEYS))
    for method in chosen:
        row = metrics[method]
        print(f"{method:<11}" + "".join(f"{row[k]:19.3f}" if row[k] is not None else f"{'n/a':>19}" for k in KEYS))
    print(f"{args.out}: metrics.json, cases.csv ({metrics['_run']['cases']} cases)")
    return 0
