"""Plain-text summaries of results, shared by the command line and the Slicer module's results box.

Every function takes the plain data of ``summary.json`` / ``info`` (``docs/contracts.md``) or a
:class:`~EmphysemaXAILib.pipeline.CaseResult` and returns lines; none prints. Never any patient
identity (``info_dict`` adds it only when the reader kept it on request).
"""
from __future__ import annotations

from pathlib import Path

from ..analysis.patterns import PATTERN_CSV, PATTERN_FILE, pattern_summary
from ..notices import NOT_CLINICAL


def info_dict(ct, report) -> dict:
    """The ``info`` JSON object of a CTVolume and its QCReport (keys in ``docs/contracts.md``)."""
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


def info_lines(info: dict) -> list[str]:
    """``info`` as text: series (the chosen one starred), geometry, acquisition, QC findings."""
    lines = []
    if info["series"]:
        lines.append(f"{len(info['series'])} series found:")
        for s in info["series"]:
            chosen = "*" if s["uid"] == info["acquisition"].get("series_uid") else " "
            lines.append(f" {chosen} {s['uid']}  {s['modality'] or '?':3} {s['slices']:5d} slices  "
                         f"kernel {s['kernel'] or '?':8}  {s['description']}")
    z, y, x = info["shape"]
    sx, sy, sz = info["spacing"]
    lines.append(f"volume: {x} x {y} x {z} voxels, {sx:.3f} x {sy:.3f} x {sz:.3f} mm ({info['kind']}); "
                 f"HU {info['hu_min']} .. {info['hu_max']}")
    acquisition = {k: v for k, v in info["acquisition"].items() if v is not None}
    if acquisition:
        lines.append("acquisition: " + ", ".join(f"{k}={v}" for k, v in acquisition.items()))
    qc = info["qc"]
    measures = qc["measures"]
    lines.append(f"quality control ({qc['profile']}): noise {measures.get('noise_hu')} HU "
                 f"({measures.get('noise_source')}), air {measures.get('air_hu')} HU, lung air "
                 f"{measures.get('lung_air_volume_ml')} ml, blood pool {measures.get('blood_pool_hu')} HU")
    lines += [f"  ERROR   {error}" for error in qc["errors"]]
    lines += [f"  warning {warning}" for warning in qc["warnings"]]
    if not qc["errors"] and not qc["warnings"]:
        lines.append("  no problems found")
    return lines


def calibration_line(calibration: dict | None) -> str:
    """One line naming the calibration behind the *_calibrated figures."""
    if calibration is None:
        return "calibration: none (no air reference measured or not credible; see the warnings)"
    return (f"calibration: air {calibration['air_hu']:.0f} HU ({calibration['air_source']}), "
            f"{calibration['reference']} {calibration['reference_hu']:.0f} HU -> "
            f"HU x {calibration['slope']:.4f} {calibration['intercept']:+.1f}")


def model_lines(model: dict | None) -> list[str]:
    """The CNN's severity in one line, then its notes (``summary.json`` ``severity``); [] without a model."""
    if not model:
        return []
    probability = model["probabilities"][model["class"]]
    lines = [f"CNN severity {model['class']} (p {probability:.2f}; extent {model['extent_pct']:.2f}% of lung; "
             f"{model['model']['name']}){' LOW CONFIDENCE' if model['low_confidence'] else ''}"]
    return lines + [f"  note: {note}" for note in model["notes"]]


def pattern_line(model: dict | None) -> str | None:
    """The dominant pattern and the emphysema-labelled share, when a pattern model ran."""
    patterns = pattern_summary(model)
    if patterns is None:
        return None
    leading = patterns.get("leading_emphysema")
    lead = (f"leading emphysema pattern {leading}" if leading and model.get("class") != "none"
            else "no emphysema class" + (f" (the few labelled voxels mostly {leading})" if leading else ""))
    return (f"patterns: {lead}; {patterns['emphysema_share_pct']:.1f}% of the lung labelled with an "
            f"emphysema pattern (mostly {patterns['dominant'].replace('_', ' ')})")


def where_to_look(model: dict | None, out: Path) -> str | None:
    """Where a case folder shows the pattern model's work (map, attributions, report, scene)."""
    patterns = pattern_summary(model)
    if patterns is None or not (out / PATTERN_FILE).is_file():
        return None
    where = [f"{out / PATTERN_FILE} (codes 1-6: {', '.join(patterns['classes'])}; 0 outside the lung)",
             f"{out / PATTERN_CSV} (share of lung per pattern and region)"]
    where += [str(path) for path in sorted(out.glob("attribution_*.nrrd"))]
    if (out / "report.html").is_file():
        where.append(f"{out / 'report.html'} (section 'Emphysema patterns')")
    if (out / "scene.mrb").is_file():
        where.append(f"{out / 'scene.mrb'} (\"Pattern map\" label map and \"Patterns\" table)")
    return "look at: " + "; ".join(where)


def case_lines(case) -> list[str]:
    """A CaseResult as the text of the Slicer module's results box (see :func:`summary_lines`)."""
    return summary_lines(case.summary())


def summary_lines(summary: dict) -> list[str]:
    """A case's ``summary.json`` object as the text of the Slicer module's results box:
    findings, QCT, CNN, patterns, and the disclaimer."""
    qc = summary["qc"]
    lines = [f"ERROR: {e}" for e in qc["errors"]]
    lines += [f"warning: {w}" for w in qc["warnings"] + list(summary.get("warnings") or [])]
    if summary.get("qct") is not None:
        severity = summary["qct_severity"]
        whole = next(r for r in summary["qct"]["regions"] if r["region"] == "whole")
        lines += ["", f"QCT severity: {severity['class']} ({severity['rule']})",
                  f"%LAA-950 {whole['laa950_pct']:.2f}%, Perc15 {whole['perc15_hu']} HU, "
                  f"lung volume {whole['volume_l']:.2f} l"]
        calibration = summary["qct"]["calibration"]
        if calibration is not None:
            lines.append(f"calibrated: %LAA-950 {whole['laa950_pct_calibrated']:.2f}%, Perc15 "
                         f"{whole['perc15_hu_calibrated']:.1f} HU (air {calibration['air_hu']:.0f} HU "
                         f"{calibration['air_source']}, {calibration['reference']} "
                         f"{calibration['reference_hu']:.0f} HU)")
        lines.append("zones: " + ", ".join(f"{z} {g}" for z, g in severity["zone_grades"].items()))
    cnn = summary.get("severity")
    if cnn is not None:
        lines += [""] + [line.strip() for line in model_lines(cnn)]
        patterns = pattern_summary(cnn)
        if patterns:
            whole = patterns["share_by_region"]["whole"]
            lines += [pattern_line(cnn) + " (\"Pattern map\" in the slice views, \"Patterns\" table)",
                      ", ".join(f"{p.replace('_', ' ')} {v:.1f}%" for p, v in whole.items())]
    return lines + ["", NOT_CLINICAL]


def table_lines(rows: list, columns: list) -> list[str]:
    """``rows`` (dicts) under ``columns`` as a right-aligned text table (header first; floats with
    two decimals, a missing value as ``-``), without pandas (3D Slicer does not ship it)."""
    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    cells = [list(columns)] + [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return [" ".join(text.rjust(width) for text, width in zip(line, widths)) for line in cells]
