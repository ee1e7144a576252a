"""Sub-commands that look at inputs or make them: ``info`` and ``phantom``."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..io.outputs import Output, claim_outputs
from ..options import QC_PROFILES, build_options
from .registry import add_ct_input, add_json, add_overwrite, command, numbers
from .show import print_warnings


def _info_flags(parser) -> None:
    add_ct_input(parser)
    parser.add_argument("--keep-identity", action="store_true",
                        help="include patient name / ID / birth date in the output")
    parser.add_argument("--qc-profile", choices=QC_PROFILES, default=None,
                        help="'seeds' adds the seed papers' exclusion rules (max HU > 1600, SD > 600); "
                             "default: the config file's, else default")


@command("info", "list series, geometry, acquisition facts and quality control", _info_flags, config=True)
def cmd_info(args) -> int:
    from ..analysis.qc import run_qc
    from ..app.text import info_dict, info_lines
    from ..io.read import read_ct

    options = build_options(args.config, qc_profile=args.qc_profile, series_uid=args.series)
    ct = read_ct(args.input, series_uid=options.series_uid, keep_identity=args.keep_identity)
    print_warnings(ct.read_warnings)
    info = info_dict(ct, run_qc(ct, profile=options.qc_profile))
    print(json.dumps(info) if args.json else "\n".join(info_lines(info)))
    return 0  # info reports and never excludes


def _phantom_flags(parser) -> None:
    from ..phantom.io import FORMATS
    from ..phantom.params import DOSE_NOISE_HU, KERNELS, LESION_PATTERNS, SIZES

    parser.add_argument("out_dir", help="output folder (ct, labels/, truth.json)")
    parser.add_argument("--extent", type=float, default=0.0, help="emphysema extent, %% of lung volume")
    parser.add_argument("--pattern", choices=LESION_PATTERNS, default="none")
    parser.add_argument("--dose", choices=tuple(DOSE_NOISE_HU), default="standard")
    parser.add_argument("--kernel", choices=tuple(KERNELS), default="standard")
    parser.add_argument("--size", choices=tuple(SIZES), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=FORMATS, default="dicom")
    parser.add_argument("--preview", metavar="PNG", help="write axial / coronal views with lesion outlines")
    parser.add_argument("--inspiration", type=float, default=1.0, help="1.0 full inspiration .. 0.6")
    parser.add_argument("--zones", metavar="U,M,L", help="share of the extent in upper,middle,lower thirds")
    parser.add_argument("--mix", metavar="C,P,S,B",
                        help="with --pattern mixed: weights of centrilobular,panlobular,paraseptal,bullous")
    parser.add_argument("--noise-hu", type=float, help="noise SD in HU (overrides the dose; 0 = none)")
    parser.add_argument("--no-table", action="store_true", help="no patient table under the body")
    add_overwrite(parser)
    add_json(parser, "print truth.json on stdout")


@command("phantom", "generate a synthetic chest CT with exact ground truth", _phantom_flags)
def cmd_phantom(args) -> int:
    import sys

    from ..phantom import SUBTYPES, PhantomParams, generate_phantom
    from ..phantom.io import write_phantom

    zones = numbers(args.zones, "--zones") if args.zones else None
    mix = None
    if args.mix:
        weights = numbers(args.mix, "--mix")
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
