"""The cohort runner: ``run_batch`` analyses every case under a folder into ``cases/<case_id>``
and writes ``cohort.csv`` and ``qc_montage.png`` (the montage only when matplotlib is installed).

A front end (it may use the core, the report and the MRML layer). A signal that stops a batch
stops its worker processes too: each removes the case folder it
was writing and its scratch folders before leaving; the parent removes what a worker killed
after a grace period could not.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from ..analysis.patterns import COHORT_PATTERN_COLUMNS, cohort_fields
from ..errors import InputError
from ..io.atomic import refuse_existing, write_atomic
from ..io.csv_table import write_csv
from ..io.signals import Terminated, signals_deferred
from ..options import AnalysisOptions
from .case_files import check_report_support, has_matplotlib, write_case, zone_note
from .dicom_results import check_dicom_support
from .find_cases import find_cases

COHORT_COLUMNS = ("case_id", "source", "status", "error", "laa950_pct", "perc15_hu", "volume_l",
                  "qct_class", "severity_class", "extent_pct", "laa950_pct_calibrated", "perc15_hu_calibrated",
                  "calibration_air_hu", "calibration_air_source") + COHORT_PATTERN_COLUMNS


def _thumbnail(result, size: int = 96):
    """(image, lung mask) of the axial slice with the most lung, decimated to about ``size`` px."""
    hu = result.ct.hu
    labels = result.segmentation.labels if result.segmentation is not None else None
    k = int(np.argmax((labels > 0).sum(axis=(1, 2)))) if labels is not None else hu.shape[0] // 2
    step = max(1, max(hu.shape[1:]) // size)
    image = np.asarray(hu[k, ::step, ::step], dtype=np.int16)
    mask = (labels[k, ::step, ::step] > 0) if labels is not None else np.zeros(image.shape, bool)
    return image, mask


_WORKER = {"in_worker": False, "in_case": False, "stopping": False}


def _remove_own_scratch() -> None:
    """Remove this process's Slicer scratch folders (when the MRML layer was used here)."""
    app = sys.modules.get(f"{__name__.split('.')[0]}.mrml.app")  # loaded only if a scene was written
    if app is not None:
        app.remove_scratch()


def _worker_signal(signum, frame) -> None:
    """In a worker: a signal during a case raises Terminated (the case's atomic writer removes
    its temporary folder, then the worker leaves); between cases the worker leaves at once."""
    if _WORKER["stopping"]:
        return
    _WORKER["stopping"] = True
    if _WORKER["in_case"]:
        raise Terminated(signum)
    _remove_own_scratch()
    os._exit(128 + signum)


def _worker_init() -> None:
    """Initializer of the batch's worker processes (whatever the start method)."""
    _WORKER.update(in_worker=True, in_case=False, stopping=False)
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) != signal.SIG_IGN:  # nohup stays nohup
            signal.signal(signum, _worker_signal)


def run_case(case: dict, out_root: str, options: AnalysisOptions, report: bool = True, scene: bool = True,
             dicom: bool = False) -> dict:
    """Analyse one case into ``out_root/cases/<case_id>`` with ``options`` (the case's own series
    on top); never raises for a failing case (a failure is a row). A signal (Terminated,
    KeyboardInterrupt) stops it: nothing of the case is left; in a worker process the worker then
    exits, in the main process it propagates. ``dicom``: also the DICOM SEG / SR (``dicom/``)."""
    from ..pipeline import analyze_case

    row = dict.fromkeys(COHORT_COLUMNS)
    row.update(case_id=case["case_id"], source=case["source"])
    thumb = None
    _WORKER["in_case"] = True
    try:
        result = analyze_case(case["path"], dataclasses.replace(options, series_uid=case["series_uid"]))
        write_case(result, Path(out_root) / "cases" / case["case_id"], report=report, scene=scene, overwrite=True,
                   dicom=dicom)
        thumb = _thumbnail(result)
        row = _cohort_row(case, result.summary())
    except Exception as error:  # noqa: BLE001 - a failing case is recorded, the others go on
        row.update(status="failed", error=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    except (Terminated, KeyboardInterrupt) as stop:
        if _WORKER["in_worker"]:
            _remove_own_scratch()
            os._exit(128 + getattr(stop, "signum", signal.SIGINT))
        raise
    finally:
        _WORKER["in_case"] = False
    return {"row": row, "thumbnail": thumb}


def _stop_workers(pool, processes: list, out: Path, case_ids, grace_s: float = 30.0) -> None:
    """After a signal or an error in the main process: cancel the queued cases, ask every worker
    to stop (SIGTERM: each removes the case folder it was writing), kill those still running
    after ``grace_s``, and remove what they left (temporary case folders, scratch folders)."""
    pool.shutdown(wait=False, cancel_futures=True)
    with signals_deferred():
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        killed = []
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(5)
                killed.append(process.pid)
        import glob
        import shutil
        import tempfile

        for pid in killed:  # mrml.app names its scratch folders emphysema-xai-mrml-<pid>-*
            for folder in glob.glob(os.path.join(tempfile.gettempdir(), f"emphysema-xai-mrml-{pid}-*")):
                shutil.rmtree(folder, ignore_errors=True)
        cases_dir = out / "cases"
        if cases_dir.is_dir():
            prefixes = tuple(f".{case_id}-" for case_id in case_ids)
            for entry in cases_dir.iterdir():
                if prefixes and entry.name.startswith(prefixes):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)


def _resumed(case: dict, out_root: Path) -> dict | None:
    """The row of a case a previous run finished (its summary.json exists), else None."""
    summary_path = out_root / "cases" / case["case_id"] / "summary.json"
    if not summary_path.is_file():
        return None
    return _cohort_row(case, json.loads(summary_path.read_text()))


def _cohort_row(case: dict, summary: dict) -> dict:
    """The cohort.csv row of a finished case from its summary (summary.json content); ``notes``
    (not a cohort.csv column) holds what the command line prints beside the row."""
    row = dict.fromkeys(COHORT_COLUMNS)
    row.update(case_id=case["case_id"], source=case["source"])
    if summary["qc"]["excluded"]:
        row.update(status="excluded", error="; ".join(summary["qc"]["errors"]))
        return row
    slices = ((summary["qc"].get("measures") or {}).get("n_slices")
              or (summary.get("input") or {}).get("shape", [None])[0])
    note = zone_note(slices)
    if note:
        row["notes"] = [note]
    whole = next(r for r in summary["qct"]["regions"] if r["region"] == "whole")
    qct_severity, model = summary["qct_severity"], summary.get("severity")
    row.update(status="ok", laa950_pct=whole["laa950_pct"], perc15_hu=whole["perc15_hu"],
               volume_l=whole["volume_l"], qct_class=qct_severity["class"],
               severity_class=model["class"] if model else None,
               extent_pct=model["extent_pct"] if model else qct_severity["extent_pct"],
               laa950_pct_calibrated=whole.get("laa950_pct_calibrated"),
               perc15_hu_calibrated=whole.get("perc15_hu_calibrated"))
    calibration = summary["qct"].get("calibration") or {}
    row.update(calibration_air_hu=calibration.get("air_hu"), calibration_air_source=calibration.get("air_source"))
    row.update(cohort_fields(model))
    return row


def run_batch(root, out_dir, options: AnalysisOptions | None = None, *, workers: int = 1, resume: bool = False,
              report: bool = True, scene: bool = True, progress: bool = True, overwrite: bool = False,
              dicom: bool = False) -> list:
    """Analyse every case under ``root`` into ``out_dir`` with ``options`` (build them with
    :func:`~EmphysemaXAILib.options.build_options` to apply a config file); write ``cohort.csv``
    and ``qc_montage.png``; return the cohort rows. Failing cases are rows with their reason.

    ``out_dir`` may lie under ``root`` (it is never searched for cases) but may not be ``root``,
    contain it, or lie inside a DICOM case's folder. An existing non-empty ``out_dir`` needs
    ``resume`` (finished cases are kept) or ``overwrite`` (every case is analysed again).
    A signal stops the workers too; finished cases stay (``resume`` goes on from them), the
    case being written and an output folder this run created and left empty are removed.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

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
    out.mkdir(parents=True, exist_ok=True)
    options = (options or AnalysisOptions()).resolved()
    rows, thumbs, todo = {}, {}, []
    for case in cases:
        done = _resumed(case, out) if resume and not overwrite else None
        if case.get("error"):
            rows[case["case_id"]] = dict(dict.fromkeys(COHORT_COLUMNS), case_id=case["case_id"],
                                         source=case["source"], status="failed", error=case["error"])
            thumbs[case["case_id"]] = None
        elif done is not None:
            rows[case["case_id"]] = done
        else:
            todo.append(case)
    bar = _progress_bar(len(cases), len(rows), progress)
    try:
        if workers > 1 and len(todo) > 1:
            # spawned, not forked: a fork of a process whose other threads (torch, OpenMP, tqdm)
            # hold locks can leave a worker waiting on a lock forever (seen here in a test run)
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init,
                                       mp_context=multiprocessing.get_context("spawn"))
            processes = []
            try:
                futures = [pool.submit(run_case, case, str(out), options, report, scene, dicom) for case in todo]
                processes = list((getattr(pool, "_processes", None) or {}).values())
                for future in as_completed(futures):
                    outcome = future.result()
                    rows[outcome["row"]["case_id"]] = outcome["row"]
                    thumbs[outcome["row"]["case_id"]] = outcome["thumbnail"]
                    bar.update(1)
            except BaseException:
                known = {p.pid: p for p in processes}
                known.update((getattr(pool, "_processes", None) or {}))
                processes = list(known.values())
                _stop_workers(pool, processes, out, [c["case_id"] for c in todo])
                raise
            pool.shutdown(wait=True)
        else:
            for case in todo:
                outcome = run_case(case, str(out), options, report, scene, dicom)
                rows[case["case_id"]] = outcome["row"]
                thumbs[case["case_id"]] = outcome["thumbnail"]
                bar.update(1)
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
    ordered = [rows[c["case_id"]] for c in cases]
    _write_cohort(ordered, out / "cohort.csv")
    if thumbs and has_matplotlib():  # without matplotlib (inside 3D Slicer) there is no montage
        _montage(ordered, thumbs, out / "qc_montage.png")
    return ordered


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
