"""One case of a cohort (``batch``): ``run_case`` analyses it into ``cases/<case_id>``, and its
cohort.csv row is made from its summary (``cohort_row``, ``resumed_row``) or its failure
(``failed_row``). Used by the cohort runner (:mod:`.batch`) in its own process and by the Dask
workers (:mod:`.cohort_dask`).

A front end (it may use the core, the report and the MRML layer).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from ..analysis.patterns import COHORT_PATTERN_COLUMNS, cohort_fields
from ..io.disk_full import as_disk_full
from ..options import AnalysisOptions
from .case_files import write_case, zone_note

COHORT_COLUMNS = ("case_id", "source", "status", "error", "laa950_pct", "perc15_hu", "volume_l",
                  "qct_class", "severity_class", "extent_pct", "laa950_pct_calibrated", "perc15_hu_calibrated",
                  "calibration_air_hu", "calibration_air_source") + COHORT_PATTERN_COLUMNS


def thumbnail(result, size: int = 96):
    """(image, lung mask) of the axial slice with the most lung, decimated to about ``size`` px."""
    hu = result.ct.hu
    labels = result.segmentation.labels if result.segmentation is not None else None
    k = int(np.argmax((labels > 0).sum(axis=(1, 2)))) if labels is not None else hu.shape[0] // 2
    step = max(1, max(hu.shape[1:]) // size)
    image = np.asarray(hu[k, ::step, ::step], dtype=np.int16)
    mask = (labels[k, ::step, ::step] > 0) if labels is not None else np.zeros(image.shape, bool)
    return image, mask


def failed_row(case: dict, reason: str) -> dict:
    """The cohort.csv row of a case that failed, with its one-line reason."""
    return dict(dict.fromkeys(COHORT_COLUMNS), case_id=case["case_id"], source=case["source"], status="failed",
                error=reason)


def run_case(case: dict, out_root: str, options: AnalysisOptions, report: bool = True, scene: bool = True,
             dicom: bool = False) -> dict:
    """Analyse one case into ``out_root/cases/<case_id>`` (atomically: whole or absent) with
    ``options`` (the case's own series on top); runs in the calling process or on a Dask worker
    (:func:`.cohort_dask.case_task`). Never raises for a failing case (a failure is a row); a
    signal (Terminated, KeyboardInterrupt) propagates, leaving nothing of the case. ``dicom``:
    also the DICOM SEG / SR (``dicom/``). A case that failed because the disk is full has the
    :class:`~EmphysemaXAILib.errors.DiskFullError` under ``disk_full`` (the runner stops)."""
    from ..pipeline import analyze_case

    try:
        result = analyze_case(case["path"], dataclasses.replace(options, series_uid=case["series_uid"]))
        write_case(result, Path(out_root) / "cases" / case["case_id"], report=report, scene=scene, overwrite=True,
                   dicom=dicom)
        return {"row": cohort_row(case, result.summary()), "thumbnail": thumbnail(result)}
    except Exception as error:  # noqa: BLE001 - a failing case is recorded, the others go on
        full = as_disk_full(error, Path(out_root) / "cases" / case["case_id"])
        if full is not None:  # the batch stops: every later case would fail the same way
            reason = f"disk full: {os.strerror(full.errno)} writing {full.path}"
            return {"row": failed_row(case, reason), "thumbnail": None, "disk_full": full}
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if isinstance(error, MemoryError):  # beyond the up-front estimate (io/memory.py)
            from ..io.memory import out_of_memory_message

            reason = f"MemoryError: {out_of_memory_message()}"
        return {"row": failed_row(case, reason), "thumbnail": None}


def resumed_row(case: dict, out_root: Path) -> dict | None:
    """The row of a case a previous run finished (its summary.json exists), else None."""
    summary_path = out_root / "cases" / case["case_id"] / "summary.json"
    if not summary_path.is_file():
        return None
    return cohort_row(case, json.loads(summary_path.read_text()))


def cohort_row(case: dict, summary: dict) -> dict:
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
