"""Sub-commands on one case: ``segment``, ``qct``, ``analyze`` and ``demo`` (the main job)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..errors import ExcludedError, InputError
from ..io.atomic import atomic_folder, write_files_atomic
from ..io.outputs import Output, claim_outputs
from ..notices import NOT_CLINICAL
from ..options import EXPLAIN_TARGETS, build_options
from .registry import (
    add_class_from,
    add_ct_input,
    add_engine,
    add_max_memory,
    add_model,
    add_out,
    add_overwrite,
    command,
    max_memory,
    methods,
    model_choice,
    model_input,
)
from .show import print_lines, print_warnings, progress


def _weights_inputs(options) -> list:
    return [("--lungmask-weights", options.lungmask_weights),
            ("--lungmask-fill-weights", options.lungmask_fill_weights)]


def _segment_flags(parser) -> None:
    add_ct_input(parser)
    add_out(parser, "lung label map to write (.nrrd)")
    add_engine(parser, fill=True)
    parser.add_argument("--lobes-out", metavar="PATH", help="also write the lobe map (lungmask only)")
    parser.add_argument("--download-weights", action="store_true",
                        help="fetch lungmask's published weights into the torch hub cache if missing (internet)")
    add_overwrite(parser, "replace existing output files")


@command("segment", "segment the lungs (1 right, 2 left)", _segment_flags, config=True)
def cmd_segment(args) -> int:
    from ..io.read import read_ct
    from ..phantom.io import save_label
    from ..segmentation import segment_lungs

    options = build_options(args.config, engine=args.engine, lungmask_weights=args.lungmask_weights,
                            lungmask_fill_weights=args.lungmask_fill_weights, series_uid=args.series,
                            lobes=bool(args.lobes_out))
    inputs = [("the input", args.input), ("--config", args.config)] + _weights_inputs(options)
    outputs = [Output("--out", args.out, "file"),
               Output("--lobes-out", args.lobes_out, "file") if args.lobes_out else None]
    with claim_outputs(inputs, outputs, args.overwrite):
        ct = read_ct(args.input, series_uid=options.series_uid)
        result = segment_lungs(ct, engine=options.engine, lungmask_weights=options.lungmask_weights,
                               fill_weights=options.lungmask_fill_weights, lobes=options.lobes,
                               download=args.download_weights)
        writers = {Path(args.out): lambda tmp: save_label(result.labels, ct, tmp)}
        if args.lobes_out and result.lobes is not None:
            writers[Path(args.lobes_out)] = lambda tmp: save_label(result.lobes, ct, tmp)
        write_files_atomic(writers)
    print_warnings(ct.read_warnings, result.warnings)
    summary = result.as_dict()
    summary["voxel_ml"] = float(np.prod(ct.spacing)) / 1000.0
    if args.json:
        print(json.dumps(summary))
    else:
        ml = summary["voxel_ml"]
        print(f"{args.out}: engine {result.engine_used}; right lung {summary['right_voxels'] * ml:.0f} ml, "
              f"left lung {summary['left_voxels'] * ml:.0f} ml")
    return 0


def _qct_flags(parser) -> None:
    add_ct_input(parser)
    parser.add_argument("--lung-mask", required=True, help="lung label map on the CT grid")
    parser.add_argument("--lobes", metavar="MASK", help="lobe map (LTRCLobes codes) on the CT grid")
    parser.add_argument("--label-scheme", choices=("project", "cip"), default="project",
                        help="project: 1 right, 2 left; cip: CIP region/type label map (its own thirds)")
    parser.add_argument("--cip-compatible", action="store_true", default=None,
                        help="CIP's conventions: strict thresholds, HU -1024..1024, CIP percentiles")
    parser.add_argument("--seeds-rule", action="store_true", default=None,
                        help="add the seed papers' binary label (LAA-950 >= 6%% and MLD < -850 HU)")
    add_class_from(parser)
    add_out(parser, "write the table as CSV", required=False, metavar="CSV")
    parser.add_argument("--laa-map", metavar="NRRD",
                        help="write the LAA map: voxels below -950 HU coded by cluster size (1-4)")
    add_overwrite(parser, "replace existing output files")


@command("qct", "CT densitometry per lung region", _qct_flags, config=True)
def cmd_qct(args) -> int:
    from ..analysis.calibration import calibration_from_qc
    from ..analysis.qc import run_qc
    from ..analysis.qct import measure_qct
    from ..app.text import calibration_line, table_lines
    from ..io.read import read_ct
    from ..segmentation import check_lung_labels, load_mask

    options = build_options(args.config, cip_compatible=args.cip_compatible, seeds_rule=args.seeds_rule,
                            class_from=args.class_from, series_uid=args.series)
    inputs = [("the input", args.input), ("--lung-mask", args.lung_mask), ("--lobes", args.lobes),
              ("--config", args.config)]
    outputs = [Output("--out", args.out, "file") if args.out else None,
               Output("--laa-map", args.laa_map, "file") if args.laa_map else None]
    with claim_outputs(inputs, outputs, args.overwrite):
        ct = read_ct(args.input, series_uid=options.series_uid)
        mask = load_mask(args.lung_mask, ct)
        lobes = load_mask(args.lobes, ct, "lobe map") if args.lobes else None
        config = options.qct_config()
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
            writers[Path(args.out)] = result.write_csv
        if args.laa_map:
            from ..phantom.io import save_label

            writers[Path(args.laa_map)] = lambda tmp: save_label(result.laa_map, ct, tmp)
        write_files_atomic(writers)
    print_warnings(ct.read_warnings + result.warnings)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        columns = ["region", "volume_l", "mean_hu", "perc15_hu", "laa950_pct", "perc15_hu_calibrated",
                   "laa950_pct_calibrated", "robust_extent_pct"]
        print("\n".join(table_lines(result.regions, columns)))
        print(calibration_line(result.calibration))
        sev = result.qct_severity
        print(f"QCT severity: {sev['class']} ({sev['rule']}); bands above 5% are conventions, "
              "not a clinical standard")
        print(NOT_CLINICAL)
    return 0


def _explain_flags(parser, default: str | None = None) -> None:
    parser.add_argument("--explain", metavar="LIST", default=default,
                        help="attribution maps to write: gradcam,gradcampp,ig,attention,occlusion,smoothgrad"
                             + (f" (default {default}; '' for none)" if default else ""))


def _analyze_flags(parser) -> None:
    add_ct_input(parser)
    add_out(parser, "output folder (refused if it exists)")
    add_engine(parser)
    parser.add_argument("--lung-mask", metavar="MASK", help="your lung mask (1 right, 2 left) instead of an engine")
    parser.add_argument("--acquisition", metavar="JSON",
                        help="acquisition facts (kernel, kvp, exposure_mas, ...) for an input that lacks them, e.g. "
                             "a volume exported from the DICOM files Slicer loaded")
    parser.add_argument("--no-scene", action="store_true", help="no Slicer scene (scene.mrb, lungs.seg.nrrd)")
    parser.add_argument("--no-report", action="store_true", help="no report.html")
    parser.add_argument("--dicom-out", action="store_true",
                        help="also write a DICOM SEG + SR (and a derived CT series when needed) into OUT/dicom/")
    parser.add_argument("--keep-identity", action="store_true",
                        help="with --dicom-out: copy the source's patient name, ID, birth date and sex into the "
                             "DICOM results (default: empty)")
    add_overwrite(parser)
    add_class_from(parser)
    add_model(parser)
    _explain_flags(parser)
    parser.add_argument("--explain-target", choices=EXPLAIN_TARGETS, default=None,
                        help="the output the maps explain: the emphysema estimate (default), or a pattern "
                             "(pattern model)")
    add_max_memory(parser)


@command("analyze", "read, check, segment and measure one case", _analyze_flags, config=True)
def cmd_analyze(args) -> int:
    from ..app.case_files import check_report_support, check_scene_support, write_case, zone_note
    from ..app.dicom_results import check_dicom_support
    from ..app.text import calibration_line
    from ..pipeline import analyze_case

    out = Path(args.out)
    options = build_options(args.config, engine=args.engine, lungmask_weights=args.lungmask_weights,
                            series_uid=args.series, class_from=args.class_from, model=model_choice(args),
                            device=args.device, explain=methods(args.explain), explain_target=args.explain_target,
                            max_memory=max_memory(args))
    inputs = [("the input", args.input), ("--lung-mask", args.lung_mask), ("--config", args.config),
              ("--acquisition", args.acquisition),
              ("--lungmask-weights", options.lungmask_weights), model_input(options)]
    with claim_outputs(inputs, [Output("--out", args.out)], args.overwrite):
        check_scene_support(not args.no_scene)
        check_report_support(not args.no_report)
        check_dicom_support(args.dicom_out)
        result = analyze_case(args.input, options, lung_mask=args.lung_mask, progress=None if args.json else progress,
                              acquisition=read_acquisition(args.acquisition))
        write_case(result, out, report=not args.no_report, scene=not args.no_scene, overwrite=args.overwrite,
                   dicom=args.dicom_out, keep_identity=args.keep_identity)
    summary = result.summary()
    errors = set(result.qc.errors)
    warnings = [w for w in list(result.qc.warnings) + list(result.warnings) if w not in errors]
    note = zone_note(int(result.ct.shape[0])) if not result.excluded else None
    if note and not any("zone" in w for w in warnings):
        warnings.append(note)
    print_warnings(warnings)
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
                  f"{calibration_line(result.qct.calibration)}")
        if note:
            print(f"{out}: note: {note}")
        _print_model(summary["severity"], f"{out}: ")
        _print_patterns(summary["severity"], out.resolve(), f"{out}: ")
        print(NOT_CLINICAL)
    return 0


def read_acquisition(path) -> dict | None:
    """The acquisition facts of ``--acquisition`` (a JSON object), or None."""
    if path is None:
        return None
    try:
        facts = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"--acquisition {path}: not a readable JSON file ({error})") from None
    if not isinstance(facts, dict):
        raise InputError(f"--acquisition {path}: give a JSON object of acquisition facts")
    return facts


def _print_model(model: dict | None, prefix: str = "") -> None:
    """The CNN line (prefixed) and its notes."""
    from ..app.text import model_lines

    lines = model_lines(model)
    print_lines(lines[:1], prefix)
    print_lines(lines[1:])


def _print_patterns(model: dict | None, out: Path, prefix: str = "") -> None:
    """With a pattern model's map in ``out``: the dominant pattern and where to look."""
    from ..app.text import pattern_line, where_to_look

    look = where_to_look(model, out)
    if look is not None:
        print_lines([pattern_line(model), look], prefix)


def _demo_flags(parser) -> None:
    add_out(parser, "output folder (replaced)", required=False, default="emphysema-xai-demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-scene", action="store_true", help="no Slicer scene (scene.mrb, lungs.seg.nrrd)")
    parser.add_argument("--json", action="store_true", help="print summary.json on stdout")
    _explain_flags(parser, default="gradcam")
    add_max_memory(parser)


def _is_demo_folder(folder: Path) -> bool:
    """A folder a previous ``demo`` wrote (the only kind ``demo`` replaces)."""
    return (folder / "summary.json").is_file() and (folder / "phantom" / "truth.json").is_file()


@command("demo", "analyze a generated medium phantom (the main job)", _demo_flags, config=True)
def cmd_demo(args) -> int:
    """The main job on an embedded default: ``analyze`` on a generated medium phantom."""
    from ..app.case_files import check_report_support, check_scene_support, write_case_files
    from ..phantom import DEMO_EXTENT_PCT, demo_params, generate_phantom
    from ..phantom.io import write_phantom
    from ..pipeline import analyze_case

    out = Path(args.out).resolve()
    if out.is_dir() and any(out.iterdir()) and not _is_demo_folder(out):
        raise InputError(f"{out} exists and is not a demo folder (no summary.json and phantom/truth.json): "
                         "demo replaces only its own folder; choose another --out")
    options = build_options(args.config, explain=methods(args.explain), max_memory=max_memory(args))
    check_scene_support(not args.no_scene)
    check_report_support(True)  # the demo always writes its report
    with claim_outputs([("--config", args.config)], [Output("--out", args.out)], overwrite=True), \
            atomic_folder(out) as work:  # the demo's own folder, replaced on rerun
        print(f"generating a medium phantom (mixed emphysema {DEMO_EXTENT_PCT:g}%, seed {args.seed})",
              file=sys.stderr)
        phantom = generate_phantom(demo_params(args.seed))
        write_phantom(phantom, work / "phantom", fmt="dicom", preview=work / "phantom" / "preview.png")
        result = analyze_case(work / "phantom" / "ct", options, progress=None if args.json else progress)
        write_case_files(result, work, scene=not args.no_scene)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
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
