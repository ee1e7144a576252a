"""Sub-commands of the seed papers' second method: ``embed`` (pretrained CNN embeddings) and
``fit-linear`` (interpretable linear models on them, optionally fused with QCT markers)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ..errors import InputError
from ..io.atomic import atomic_folder
from ..io.outputs import Output, claim_outputs
from ..options import ENGINES
from .models import claim_folder
from .registry import add_backbone, add_json, add_out, add_overwrite, command


def _embed_flags(parser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="CT cases (DICOM folders, NRRD, NIfTI)")
    parser.add_argument("--images", metavar="DIR",
                        help="a folder of 2D HU images (16-bit signed TIFF, DICOM slices) instead")
    add_out(parser, "the embeddings table", metavar="EMB.{parquet,csv}")
    add_backbone(parser)
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="lung segmentation for cases without --lung-mask")
    parser.add_argument("--lung-mask", nargs="+", metavar="MASK", help="lung masks, one per input, same order")
    parser.add_argument("--preview", metavar="DIR", help="write <id>.png previews of each case's zone patches")
    add_json(parser)
    add_overwrite(parser, "replace an existing table and preview folder")


@command("embed", "pretrained CNN embeddings of three lung-zone 2.5D patches per case", _embed_flags)
def cmd_embed(args) -> int:
    from ..embed import embed_cases, embed_images, load_backbone, table_suffix, write_embeddings

    out = Path(args.out)
    table_suffix(out)
    if args.lung_mask and len(args.lung_mask) != len(args.inputs):
        raise InputError(f"{len(args.lung_mask)} --lung-mask files for {len(args.inputs)} inputs; give one per input")
    inputs = [("the input", p) for p in args.inputs] + [("--lung-mask", p) for p in args.lung_mask or ()]
    inputs += [("--images", args.images), ("--weights", args.weights)]
    outputs = [Output("--out", args.out, "file"),
               Output("--preview", args.preview) if args.preview and not args.images else None]
    with claim_outputs(inputs, outputs, args.overwrite, allow_empty=True):  # refuses a non-empty --preview
        backbone = load_backbone(args.backbone, weights=args.weights)
        if args.images:
            if args.inputs:
                raise InputError("give either CT inputs or --images DIR, not both")
            table = embed_images(args.images, backbone)
            write_embeddings(table, out)
        else:
            if not args.inputs:
                raise InputError("no inputs: give CT files / DICOM folders, or --images DIR for 2D images")
            # previews go to a temporary folder that becomes --preview only when every case worked
            # and the table is written
            with atomic_folder(args.preview) if args.preview else contextlib.nullcontext() as preview_dir:
                table = embed_cases(args.inputs, backbone, engine=args.engine, lung_masks=args.lung_mask,
                                    preview_dir=preview_dir)
                write_embeddings(table, out)
    info = {"out": str(out), "rows": len(table), "features": table.shape[1] - 1, "backbone": backbone.info()}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{out}: {len(table)} rows x {table.shape[1] - 1} columns "
              f"({backbone.name}, {backbone.dim} per zone or image)")
    return 0


def _fit_linear_flags(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", metavar="EMB", help="a table written by embed (.parquet or .csv)")
    source.add_argument("--images", metavar="DIR",
                        help="a folder of 2D HU images (the labels CSV names them by path)")
    parser.add_argument("--labels", required=True, metavar="CSV",
                        help="id (or path) , label, optional group column and laa_pct")
    parser.add_argument("--groups-column", metavar="NAME", help="patient / group column: no group straddles folds")
    parser.add_argument("--cv", choices=("kfold", "logo"), default="kfold",
                        help="stratified (group) k-fold or leave-one-group-out")
    parser.add_argument("--folds", type=int, default=5, help="k of the k-fold (clipped to the smallest class)")
    parser.add_argument("--model", choices=("ttest-lr", "lasso", "rfe"), default="ttest-lr",
                        help="the variant metrics.json reports at the top level (all are fitted)")
    parser.add_argument("--fuse-qct", action="store_true", help="the top-level model uses the QCT markers too")
    parser.add_argument("--zones", metavar="LIST", help="only these zones' embeddings, e.g. upper or upper,lower "
                                                        "(default: all three concatenated)")
    parser.add_argument("--k", type=int, default=20, help="features kept by the t-test / RFE")
    parser.add_argument("--bootstraps", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    parser.add_argument("--seed", type=int, default=0)
    add_backbone(parser)
    add_out(parser, "folder for metrics.json, the fitted model and the plots")
    add_json(parser, "print metrics.json on stdout")
    add_overwrite(parser)


@command("fit-linear", "interpretable linear models on embeddings (+ QCT markers), cross-validated", _fit_linear_flags)
def cmd_fit_linear(args) -> int:
    import pandas as pd

    from ..linear import fit_linear
    from ..linear.features import labelled_image_embeddings, zone_columns

    inputs = [("--embeddings", args.embeddings), ("--images", args.images), ("--labels", args.labels),
              ("--weights", args.weights)]
    with claim_folder(args, inputs):
        try:
            labels = pd.read_csv(args.labels, dtype={"id": str, "path": str})
        except (OSError, ValueError) as error:
            raise InputError(f"{args.labels}: cannot read the labels CSV "
                             f"({str(error).splitlines()[0][:100]})") from None
        if args.images:
            from ..embed import load_backbone

            features = labelled_image_embeddings(args.images, labels,
                                                 load_backbone(args.backbone, weights=args.weights))
        else:
            from ..embed import read_embeddings

            features = read_embeddings(args.embeddings)
            if args.zones:
                features = zone_columns(features, args.zones)
        metrics = fit_linear(features, labels, args.out, model=args.model, cv=args.cv, groups_column=args.groups_column,
                             fuse_qct=args.fuse_qct, k=args.k, n_splits=args.folds, bootstraps=args.bootstraps,
                             seed=args.seed)
    if args.json:
        print(json.dumps(metrics))
        return 0
    keys = ("roc_auc", "pr_auc", "balanced_accuracy", "accuracy")
    print(f"{'variant':<16}" + "".join(f"{k:>26}" for k in keys))
    for name, figures in metrics["models"].items():
        if "accuracy" not in figures:
            continue
        cells = []
        for key in keys:
            value, ci = figures.get(key), figures.get("ci95", {}).get(key)
            cells.append("n/a" if value is None else f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        print(f"{name:<16}" + "".join(f"{c:>26}" for c in cells))
    if "circularity_note" in metrics.get("_run", {}):
        print(f"note: {metrics['_run']['circularity_note']}")
    print(f"{args.out}: metrics.json (top level: {metrics.get('model')}), oof_predictions.csv, model.joblib, "
          "model.json, pca.png, tsne.png, coefficients.png, roc.png")
    return 0
