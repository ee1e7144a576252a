"""The self-contained HTML report of one case (images embedded as PNG data URIs).

Sections: severity and quality control, axial and coronal views with the lung outline and the
LAA map overlay, a coronal projection of the LAA clusters, (with a pattern model) the pattern
map beside the LAA map in the same slices with the pattern shares per region, the lung HU
histogram with the thresholds, the per-zone bar chart, the QCT table, and the
not-for-clinical-use line. The figures are drawn by :mod:`.report_figures`.
"""
from __future__ import annotations

import html
from pathlib import Path

from ..analysis.patterns import MAIN_REGIONS, PATTERNS, pattern_rows, pattern_summary
from ..notices import NOT_CLINICAL
from .report_figures import (
    MIN_SLICES_FOR_CORONAL,
    SLICER_VIEW_NAMES,
    attribution_views,
    cnn_views,
    histogram_figure,
    laa_views,
    pattern_views,
    slicer_views,
    teaching_view,
    zones_figure,
)


def write_report(result, path, views: dict | None = None) -> Path:
    """Write ``report.html`` for a :class:`~EmphysemaXAILib.pipeline.CaseResult`; ``views``: RGB
    images rendered by Slicer (3D view, slice views) when the scene was built."""
    import matplotlib

    matplotlib.use("Agg")
    ct, qc = result.ct, result.qc
    parts = [f"<h1>EmphysemaXAI report</h1><p class='warn'>{html.escape(NOT_CLINICAL)}</p>",
             f"<p>Input: {html.escape(ct.kind)} {' x '.join(map(str, ct.shape[::-1]))} voxels, "
             f"{' x '.join(f'{s:.2f}' for s in ct.spacing)} mm</p>"]
    if result.qct is not None:
        severity = result.qct.qct_severity
        whole = result.qct.region("whole")
        parts.append(f"<h2>QCT severity: {html.escape(str(severity['class']))}</h2>"
                     f"<p>extent {severity['extent_pct']:.2f}% of lung ({html.escape(severity['rule'])}); "
                     f"{_density_figures(whole)}, lung volume "
                     f"{whole['volume_l']:.2f} l. Segmentation: {html.escape(result.segmentation.engine_used)} "
                     "engine. Classes: none &lt; 5%, mild &lt; 15%, moderate &lt; 25%, severe; the bands "
                     "above 5% are conventions, not a clinical standard.</p>")
        parts.append(_calibration_paragraph(result.qct.calibration, whole))
        if result.severity is not None:
            parts.append(_cnn_section(result.severity))
        grades = severity.get("zone_grades", {})
        if ct.shape[0] < MIN_SLICES_FOR_CORONAL:
            parts.append(f"<p class='warn'>{ct.shape[0]}-slice input: the views are axial only (no coronal view) "
                         "and the zone values (upper / middle / lower thirds) come from these slices: they do "
                         "not describe the whole lung.</p>")
        key = severity.get("extent_key", "laa950_pct")
        zone_rows = [{"zone": z, "extent %": _zone_figure(result.qct, z, key), "grade": g} for z, g in grades.items()]
        parts.append(f"<p>Zone grades: from {html.escape(key)} of each zone (trace &lt; 0.5%, mild &lt; 5%, "
                     "moderate &lt; 20%, severe).</p>" + _table(zone_rows, ["zone", "extent %", "grade"]))
        parts.append(f"<h2>Images</h2><img src='{laa_views(ct, result.segmentation.labels, result.qct.laa_map)}'>")
        if result.severity is not None and result.severity.pattern_labels is not None:
            parts.append(_pattern_section(result))
        if views:
            shown = ", ".join(SLICER_VIEW_NAMES.get(key, key) for key in views)
            parts.append(f"<h2>Slicer views</h2><p>Rendered by Slicer: {shown}.</p>"
                         f"<img src='{slicer_views(views)}'>")
        cnn_summary = result.severity.summary if result.severity is not None else None
        parts.append(f"<img src='{histogram_figure(ct, result.segmentation.labels, whole)}'>"
                     f"<img src='{zones_figure(result.qct, cnn_summary, key)}'>")
        if result.explanations:
            parts.append(_explanation_section(result))
        calibrated = ["perc15_hu_calibrated", "laa950_pct_calibrated", "robust_extent_pct_calibrated"]
        raw = ["perc15_hu", "laa950_pct", "robust_extent_pct"]
        first, then = (calibrated, raw) if result.qct.calibration is not None else (raw, calibrated)
        columns = ["region", "volume_l", "mass_g", "mean_hu", *first, *then, "laa910_pct", "laa856_pct",
                   "laa_clusters", "laa_cluster_d"]
        parts.append("<h2>Densitometry</h2>" + _table(result.qct.regions, columns))
    parts.append("<h2>Quality control</h2><ul>"
                 + "".join(f"<li class='err'>{html.escape(e)}</li>" for e in qc.errors)
                 + "".join(f"<li>{html.escape(w)}</li>" for w in qc.warnings + result.warnings)
                 + "</ul>")
    parts.append(_table([{"measure": k, "value": v} for k, v in qc.measures.items()], ["measure", "value"]))
    parts.append(f"<p class='warn'>{html.escape(NOT_CLINICAL)}</p>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:"
             "collapse;font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}"
             ".warn{color:#a4161a;font-weight:bold}.err{color:#a4161a}img{max-width:100%}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>EmphysemaXAI report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def _density_figures(whole) -> str:
    """%LAA-950 and Perc15 of the whole lung: the calibrated figures first when the scan was
    calibrated (they are what the class uses), the raw ones named as raw."""
    if whole.get("laa950_pct_calibrated") is None:
        return f"%LAA-950 {whole['laa950_pct']:.2f}%, Perc15 {whole['perc15_hu']} HU"
    return (f"calibrated %LAA-950 {whole['laa950_pct_calibrated']:.2f}% (raw {whole['laa950_pct']:.2f}%), "
            f"calibrated Perc15 {whole['perc15_hu_calibrated']:.1f} HU (raw {whole['perc15_hu']} HU)")


def _zone_figure(qct, zone, key) -> str:
    """The figure (``key``, a qct row key) a zone's grade comes from, as the zone table prints it."""
    row = qct.region(zone)
    value = row.get(key, row.get("laa950_pct"))
    return "" if value is None else f"{value:.2f}"


def _calibration_paragraph(calibration, whole) -> str:
    """The calibrated figures beside the raw ones, with the references they come from."""
    if calibration is None:
        return ("<p>Calibrated densitometry: none (no air reference was measured, or the correction was "
                "not credible: see quality control).</p>")
    second = (f"unenhanced blood {calibration['reference_hu']:.0f} HU (nominal "
              f"{calibration['reference_nominal_hu']:.0f} HU)" if calibration["reference"] == "blood"
              else "water assumed at 0 HU (no unenhanced blood measured)")
    return (f"<p>Calibrated densitometry: %LAA-950 {whole['laa950_pct_calibrated']:.2f}% "
            f"(raw {whole['laa950_pct']:.2f}%), Perc15 {whole['perc15_hu_calibrated']:.1f} HU (raw "
            f"{whole['perc15_hu']} HU). References: air {calibration['air_hu']:.0f} HU "
            f"({html.escape(calibration['air_source'].replace('_', ' '))}, nominal -1000 HU) and {second}; "
            f"calibrated HU = {calibration['slope']:.4f} x HU {calibration['intercept']:+.1f}.</p>")


def _cnn_section(severity) -> str:
    cnn = severity.summary
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in cnn["notes"])
    probabilities = _table([{"class": k, "probability": f"{v:.3f}"} for k, v in cnn["probabilities"].items()],
                           ["class", "probability"])
    regions = _table([{"region": k, "extent %": f"{v:.2f}"} for k, v in cnn["extent_by_region"].items()
                      if v is not None],
                     ["region", "extent %"])
    low = "<p class='warn'>Low confidence:</p>" if cnn["low_confidence"] else ""
    return (f"<h2>CNN severity: {html.escape(cnn['class'])}</h2>"
            f"<p>extent {cnn['extent_pct']:.2f}% of lung, from {cnn['tiles']} lung tiles at "
            f"{' x '.join(f'{s:g}' for s in cnn['working_spacing'])} mm; model {html.escape(cnn['model']['name'])} "
            f"(SHA-256 {cnn['model']['sha256'][:16]}...). The class is the band of the predicted extent; the "
            "probabilities spread the model's validation error over the bands. Trained on the Chest Imaging "
            "Platform's expert-labelled COPDGene patches and on synthetic phantoms: see MODEL_CARD.md for what "
            "it was and was not tested on.</p>"
            f"{low}<ul>{notes}</ul><div style='display:flex;gap:2em'>{probabilities}{regions}</div>"
            f"<img src='{cnn_views(severity)}'>")


def map_rule_text(patterns: dict, extent: float) -> str:
    """The sentence saying how the pattern map was labelled and how its emphysema share relates
    to the model's ``extent`` (%), from ``summary.json`` ``severity.patterns``."""
    share = patterns["emphysema_share_pct"]
    if patterns.get("map_rule") == "extent" and patterns.get("extent_map") == "fused" and share < extent - 0.05:
        rule = (f"The model's extent ({extent:.1f}% of the lung) is the lung mean of its emphysema probability "
                "(texture and calibrated low attenuation, fused). The map marks as emphysema the voxels of highest "
                "probability, as many as the extent says but only those more likely emphysema than not, each "
                "with its most likely emphysema pattern (CIP's classes: centrilobular mild / moderate / severe, "
                f"paraseptal, panlobular); every other lung voxel is normal. So the map shows {share:.1f}%: the "
                f"other {extent - share:.1f} points of the extent are probability spread thinly over lung the "
                "map calls normal.")
    elif patterns.get("map_rule") == "extent":
        rule = (f"The map marks as emphysema the lung voxels with the highest emphysema fraction, as many as "
                f"the model's extent says ({extent:.1f}% of the lung), each with its most likely emphysema "
                "pattern (CIP's classes: centrilobular mild / moderate / severe, paraseptal, panlobular); "
                "every other lung voxel is normal. So the map's emphysema share "
                f"({share:.1f}%) and the extent tell one story.")
    else:
        rule = (f"The map labels every lung voxel with the most likely of six patterns; {share:.1f}% of the "
                f"lung is labelled with an emphysema pattern, while the model's extent (the mean emphysema "
                f"fraction) is {extent:.1f}%: the two differ because a voxel's most likely pattern is not its "
                "emphysema fraction.")
    return rule


def _pattern_section(result) -> str:
    """The pattern map beside the LAA map and the share of lung in each pattern per region."""
    cnn = result.severity.summary
    patterns = pattern_summary(cnn)
    rows = {r["region"]: r for r in pattern_rows(cnn)}
    order = [r for r in MAIN_REGIONS if r in rows] + [r for r in rows if r not in MAIN_REGIONS]
    columns = ["region"] + [p.replace("_", " ") + " %" for p in PATTERNS] + ["emphysema %"]
    shown = []
    for region in order:
        row = rows[region]
        values = [row[f"{p}_pct"] for p in PATTERNS] + [row["emphysema_pct"]]
        shown.append(dict(zip(columns, [region] + ["" if v is None else f"{v:.1f}" for v in values])))
    table = _table(shown, columns)
    views = pattern_views(result.ct, result.segmentation.labels, result.qct.laa_map, result.severity.pattern_labels)
    leading = patterns.get("leading_emphysema")
    heading = (f"leading pattern {leading}" if leading and cnn.get("class") != "none"
               else f"no emphysema class (extent {cnn['extent_pct']:.1f}%)")
    rule = map_rule_text(patterns, cnn["extent_pct"])
    return (f"<h2 id='patterns'>Emphysema patterns: {html.escape(heading)}</h2>"
            f"<p>{html.escape(rule)} The shares are the model's labels, not a radiologist's reading; "
            "pattern_map.nrrd holds the map (codes 1-6: normal, centrilobular mild, moderate, severe, "
            "paraseptal, panlobular; 0 outside the lung) and patterns.csv the table.</p>"
            f"<h3>Share of lung in each pattern per region (%)</h3>{table}"
            f"<img alt='pattern map beside the LAA map' src='{views}'>")


def _explanation_section(result) -> str:
    explanations = result.explanations
    methods = list(explanations)
    rows = [{"region": r, **{m: ("" if explanations[m].region_scores[r] is None
                                 else f"{explanations[m].region_scores[r]:.3f}")
                             for m in methods}} for r in next(iter(explanations.values())).region_scores]
    coverage = "".join(f"<li>{html.escape(m)}: explains {html.escape(e.explains or e.target)}; "
                       f"{html.escape(e.summary()['coverage'])}, {e.seconds:.1f} s</li>"
                       for m, e in explanations.items())
    first = methods[0]
    table = _table(rows, ["region"] + methods)
    views = attribution_views(result.ct, result.segmentation.labels, result.qct.laa_map, explanations)
    teaching = teaching_view(result.ct, result.segmentation.labels, result.qct.laa_map, first, explanations[first])
    return ("<h2>Explanations</h2><p>Attribution maps of the CNN's emphysema estimate on the CT grid "
            "(zero outside the lung). They show what the model used, not where disease is proven.</p>"
            f"<ul>{coverage}</ul><h3>Share of positive attribution per region</h3>{table}"
            f"<img src='{views}'>"
            f"<h3>Teaching view</h3><img src='{teaching}'>")


def _table(rows, columns) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>"
                                    for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
