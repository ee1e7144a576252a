"""The cohort runner: ``run_batch`` analyses every case under a folder into ``cases/<case_id>``
and writes ``cohort.csv`` and ``qc_montage.png`` (the montage only when matplotlib is installed).

A front end (it may use the core, the report and the MRML layer). Cases run one after the
other in this process, or as tasks on Dask workers (:mod:`.cohort_dask`); either way each case
folder is written atomically and cohort.csv is built from the case folders on disk. A signal
that stops a batch stops its workers too (a local cluster's); the case folders they were
writing are removed, finished ones stay.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import DiskFullError, InputError
from ..io.atomic import refuse_existing, write_atomic
from ..io.csv_table import write_csv
from ..io.signals import signals_deferred
from ..options import AnalysisOptions
from .case_files import check_report_support, has_matplotlib
from .cohort_case import COHORT_COLUMNS, failed_row, resumed_row, run_case
from .dicom_results import check_dicom_support
from .find_cases import find_cases

#: the cohort.csv error of a case not run because the batch stopped on a full disk
NOT_RUN_DISK_FULL = "not finished: the batch stopped because the disk is full"


def _final_row(case: dict, outcome: dict | None, out_root: Path, stopped: bool = False) -> dict:
    """A case's cohort.csv row from what is on disk: its summary.json when this run's attempt
    did not fail; a failed row (the attempt's reason, that the batch stopped on a full disk
    before the case (``stopped``), or that the workers' output is missing)."""
    if outcome is not None and outcome["row"]["status"] == "failed":
        return outcome["row"]
    row = resumed_row(case, out_root)
    if row is None and stopped and outcome is None:
        return failed_row(case, NOT_RUN_DISK_FULL)
    if row is None:
        return failed_row(case, f"no summary.json in {out_root / 'cases' / case['case_id']} after the run: the "
                                "workers must write to the client's output folder (a shared file system)")
    return row


def _stop_on_full_disk(full: DiskFullError, rows: list, out: Path) -> None:
    """The batch met a full disk: write cohort.csv with every case (finished ones, the failed
    case, those not finished) if the disk still allows, else keep the earlier cohort.csv as it was;
    no montage; raise one DiskFullError saying what was kept (``--resume`` goes on)."""
    finished = sum(row["status"] in ("ok", "excluded") for row in rows)
    skipped = sum(row["error"] == NOT_RUN_DISK_FULL for row in rows)
    try:
        _write_cohort(rows, out / "cohort.csv")
        table = "cohort.csv written"
    except DiskFullError:
        table = ("cohort.csv could not be written either (the earlier one is kept as it was)"
                 if (out / "cohort.csv").exists() else "cohort.csv could not be written either")
    raise DiskFullError(full.path, full.errno,
                        f"the batch stopped: {finished} finished case{'s' if finished != 1 else ''} kept, "
                        f"{skipped} not finished, {table}", again="run again with --resume") from None



def run_batch(root, out_dir, options: AnalysisOptions | None = None, *, workers: int = 1, resume: bool = False,
              report: bool = True, scene: bool = True, progress: bool = True, overwrite: bool = False,
              scheduler: str = "local", retries: int = 2, dicom: bool = False) -> list:
    """Analyse every case under ``root`` into ``out_dir`` with ``options`` (build them with
    :func:`~EmphysemaXAILib.options.build_options` to apply a config file); write ``cohort.csv``
    and ``qc_montage.png``; return the cohort rows. Failing cases are rows with their reason.

    Where the cases run: ``scheduler="local"`` with ``workers=1``: one after the other in this
    process (no Dask needed); ``workers > 1``: on a local Dask cluster of that many one-thread
    worker processes; ``scheduler="tcp://HOST:PORT"``: on the workers of that Dask scheduler
    (:mod:`.cohort_dask`). A case whose worker dies is run again on another worker at most
    ``retries`` times, then recorded as failed. cohort.csv is built from what is on disk (each
    case's ``summary.json``), so a killed run loses nothing finished and ``resume`` goes on.

    ``out_dir`` may lie under ``root`` (it is never searched for cases) but may not be ``root``,
    contain it, or lie inside a DICOM case's folder. An existing non-empty ``out_dir`` needs
    ``resume`` (finished cases are kept) or ``overwrite`` (every case is analysed again).
    A signal stops the workers too; finished cases stay (``resume`` goes on from them), the
    case being written and an output folder this run created and left empty are removed.
    A full disk (or quota) stops the batch at the case that met it (the cases running beside it
    on Dask are stopped too): finished cases stay, the failing one and those not run are
    ``failed`` rows of cohort.csv (written if the disk still allows, else the earlier one is
    kept), and :class:`~EmphysemaXAILib.errors.DiskFullError` is raised.
    """
    from .cohort_dask import check_dask, needs_dask

    check_dask(scheduler, workers)
    if retries < 0:
        raise InputError(f"--retries {retries}: give 0 or more")
    out = Path(out_dir).resolve()
    top = Path(root).resolve()
    if out == top or out in top.parents:
        raise InputError(f"out_dir {out} {'is' if out == top else 'contains'} the batch root {top}: "
                         "choose an output folder outside it or a new subfolder of it")
    refuse_existing(out, resume or overwrite, allow_empty=True,
                    hint="pass resume=True (--resume) to finish that batch, overwrite=True (--overwrite) to analyse "
                         "every case again, or choose another folder")
    check_report_support(report)
    check_dicom_support(dicom)
    cases = find_cases(root, exclude=[out])
    if not cases:
        raise InputError(f"{root}: no DICOM series or image file found")
    for case in cases:
        folder = Path(case["path"]).resolve()
        if case["series_uid"] is not None and (out == folder or folder in out.parents):
            raise InputError(f"out_dir {out} lies inside the DICOM folder of case {case['case_id']} ({folder}): "
                             "choose an output folder outside the cases")
    created = [p for p in (out, out / "cases") if not p.exists()]
    (out / "cases").mkdir(parents=True, exist_ok=True)
    options = (options or AnalysisOptions()).resolved()
    rows, outcomes, todo = {}, {}, []
    for case in cases:
        done = resumed_row(case, out) if resume and not overwrite else None
        if case.get("error"):
            rows[case["case_id"]] = failed_row(case, case["error"])
            outcomes[case["case_id"]] = {"row": rows[case["case_id"]], "thumbnail": None}
        elif done is not None:
            rows[case["case_id"]] = done
        else:
            todo.append(case)
    bar = _progress_bar(len(cases), len(rows), progress)
    try:
        if needs_dask(scheduler, workers) and todo:
            from .cohort_dask import run_on_dask

            outcomes.update(run_on_dask(todo, out, options, report=report, scene=scene, dicom=dicom,
                                        scheduler=scheduler, workers=workers, retries=retries, bar=bar))
        else:
            outcomes.update(_run_here(todo, out, options, report, scene, dicom, bar))
    except BaseException:
        with signals_deferred():
            for folder in reversed(created):  # made by this run and still empty
                try:
                    folder.rmdir()
                except OSError:
                    pass
        raise
    finally:
        bar.close()
    full = next((o["disk_full"] for o in outcomes.values() if o.get("disk_full") is not None), None)
    for case in todo:
        rows[case["case_id"]] = _final_row(case, outcomes.get(case["case_id"]), out, stopped=full is not None)
    ordered = [rows[c["case_id"]] for c in cases]
    for row in ordered:  # not cohort.csv columns: what a Dask worker measured (bench/bench_cohort.py)
        outcome = outcomes.get(row["case_id"]) or {}
        row.update({key: outcome[key] for key in ("peak_rss_mb", "seconds", "worker") if key in outcome})
    if full is not None:
        _stop_on_full_disk(full, ordered, out)
    _write_cohort(ordered, out / "cohort.csv")
    thumbs = {case_id: outcome["thumbnail"] for case_id, outcome in outcomes.items()}
    if thumbs and has_matplotlib():  # without matplotlib (inside 3D Slicer) there is no montage
        _montage(ordered, thumbs, out / "qc_montage.png")
    return ordered


def _run_here(todo: list, out: Path, options, report: bool, scene: bool, dicom: bool, bar) -> dict:
    """The cases one after the other in this process: case_id -> outcome; stops after a case
    that met a full disk (every later case would fail the same way)."""
    outcomes = {}
    for case in todo:
        outcomes[case["case_id"]] = run_case(case, str(out), options, report, scene, dicom)
        bar.update(1)
        if outcomes[case["case_id"]].get("disk_full") is not None:
            break
    return outcomes


class _CountingBar:
    """tqdm's ``update`` / ``close`` without tqdm (3D Slicer does not ship it): one
    ``cases: k/n`` line on stderr per finished case."""

    def __init__(self, total: int, done: int, show: bool) -> None:
        self.total, self.done, self.show = total, done, show

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.show:
            print(f"cases: {self.done}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _progress_bar(total: int, done: int, show: bool):
    """A tqdm bar of the cases, or :class:`_CountingBar` when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _CountingBar(total, done, show)
    return tqdm(total=total, initial=done, desc="cases", unit="case", disable=not show)


def _write_cohort(rows, path: Path) -> None:
    write_atomic(path, lambda tmp: write_csv(tmp, rows, list(COHORT_COLUMNS)), overwrite=True)


def _montage(rows, thumbs, path: Path) -> None:
    """One tile per case of this run: the axial slice with the most lung and its outline, or the
    failure in red; cases resumed from an earlier run have no thumbnail and are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["case_id"] in thumbs]
    columns = min(6, max(1, len(shown)))
    lines = int(np.ceil(len(shown) / columns))
    fig, axes = plt.subplots(lines, columns, figsize=(2.2 * columns, 2.4 * lines), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row in zip(axes.ravel(), shown):
        if thumbs[row["case_id"]] is None:
            ax.text(0.5, 0.5, (row["error"] or "")[:60], ha="center", va="center", wrap=True,
                    fontsize=6, color="#a4161a", transform=ax.transAxes)
        else:
            image, mask = thumbs[row["case_id"]]
            ax.imshow(image, cmap="gray", vmin=-1200, vmax=200)
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="#4cc9f0", linewidths=0.8)
        color = {"ok": "black", "excluded": "#e76f51", "failed": "#a4161a"}[row["status"]]
        ax.set_title(f"{row['case_id'][:22]}\n{row['status']} {row['qct_class'] or ''}", fontsize=7, color=color)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"), overwrite=True)
    plt.close(fig)
