"""The ``batch`` sub-command: every case under a folder, one cohort table."""
from __future__ import annotations

import sys

from ..io.outputs import Output, claim_outputs
from ..options import build_options
from .registry import add_engine, add_max_memory, add_model, add_out, command, max_memory, model_choice, model_input


def _batch_flags(parser) -> None:
    parser.add_argument("root", help="folder of cases")
    add_out(parser, "output folder (cohort.csv, qc_montage.png, cases/)")
    parser.add_argument("--workers", type=int, default=1,
                        help="with --scheduler local: 1 runs the cases one after the other in this process; "
                             "N > 1 starts a local Dask cluster of N one-thread worker processes")
    parser.add_argument("--scheduler", default="local", metavar="local|tcp://HOST:PORT",
                        help="where the cases run: 'local' (default) or the address of a running Dask scheduler "
                             "whose workers see the same paths (shared file system)")
    parser.add_argument("--retries", type=int, default=2,
                        help="times a case whose worker died is run again on another worker (default 2)")
    parser.add_argument("--resume", action="store_true", help="skip cases a previous run finished")
    parser.add_argument("--overwrite", action="store_true",
                        help="analyse every case again in an existing output folder, replacing its results")
    add_engine(parser)
    parser.add_argument("--no-scene", action="store_true", help="no Slicer scenes")
    parser.add_argument("--no-report", action="store_true", help="no HTML reports")
    parser.add_argument("--dicom-out", action="store_true",
                        help="also write each case's DICOM SEG + SR (and a derived CT when needed) into its dicom/")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any case failed")
    add_model(parser)
    add_max_memory(parser, "the batch (shared equally by --workers; per case with --workers 1 or on a scheduler)",
                   "a failed row naming the memory")


@command("batch", "analyze every case (DICOM series or image file) under a folder", _batch_flags, config=True)
def cmd_batch(args) -> int:
    from ..app.batch import run_batch
    from ..app.case_files import check_report_support, check_scene_support
    from ..app.cohort_dask import check_dask

    # a bad config or option is refused before any case starts
    options = build_options(args.config, engine=args.engine, lungmask_weights=args.lungmask_weights,
                            model=model_choice(args), device=args.device, max_memory=max_memory(args))
    inputs = [("the batch root", args.root, True), ("--config", args.config), model_input(options)]
    with claim_outputs(inputs, [Output("--out", args.out, whole=False)], overwrite=True, allow_empty=True):
        check_scene_support(not args.no_scene)
        check_report_support(not args.no_report)
        check_dask(args.scheduler, args.workers)
        rows = run_batch(args.root, args.out, options, workers=args.workers, resume=args.resume,
                         scheduler=args.scheduler, retries=args.retries,
                         report=not args.no_report, scene=not args.no_scene, overwrite=args.overwrite,
                         dicom=args.dicom_out)
    counts = {status: sum(r["status"] == status for r in rows) for status in ("ok", "excluded", "failed")}
    print(f"{args.out}: {len(rows)} cases: {counts['ok']} ok, {counts['excluded']} excluded, "
          f"{counts['failed']} failed (cohort.csv, qc_montage.png, cases/)")
    for row in rows:
        if row["status"] == "failed":
            print(f"  failed {row['case_id']}: {row['error']}", file=sys.stderr)
        for note in row.get("notes") or ():
            print(f"  note {row['case_id']}: {note}", file=sys.stderr)
    return 1 if args.strict and counts["failed"] else 0
