"""The six parenchyma patterns (their one home) and the pattern model's results as tables and
colours, shared by the model, the files, the report, the Slicer scene and the cohort (core: no
Slicer, VTK or Qt).

A pattern model (``architecture.kind == "pattern"``) labels every lung voxel with one of six
patterns (codes 1-6 in :data:`PATTERNS` order, 0 outside the lung) and tallies the share of lung
in each pattern per region (``severity.patterns`` in summary.json). With a severity model or no
model these functions return empty results, so every output works in all three cases.
"""
from __future__ import annotations

import numpy as np

#: The six parenchyma patterns of the pattern model (index = model output, code in label maps
#: = index + 1); CIP's expert labels map onto them (``model.cip_patches.CIP_LABELS``).
PATTERNS = ("normal", "centrilobular_mild", "centrilobular_moderate", "centrilobular_severe",
            "paraseptal", "panlobular")
#: broad pattern -> indices into PATTERNS (the centrilobular grades folded into one pattern)
PATTERN_GROUPS = {"normal": (0,), "centrilobular": (1, 2, 3), "paraseptal": (4,), "panlobular": (5,)}
#: the broad patterns of the 3-way accuracy (normal / centrilobular / paraseptal patches)
THREE_WAY = ("normal", "centrilobular", "paraseptal")

#: Label value, name, RGBA of the pattern map's colour table. "normal" keeps a grey-green
#: colour (legend, 3D) but alpha 0: overlays show only the emphysema patterns over the CT.
PATTERN_COLORS = ((0, "outside lung", (0.0, 0.0, 0.0, 0.0)),
                  (1, "normal", (0.56, 0.67, 0.56, 0.0)),
                  (2, "centrilobular mild", (1.0, 0.9, 0.3, 1.0)),
                  (3, "centrilobular moderate", (1.0, 0.55, 0.1, 1.0)),
                  (4, "centrilobular severe", (0.85, 0.1, 0.12, 1.0)),
                  (5, "paraseptal", (0.15, 0.45, 0.95, 1.0)),
                  (6, "panlobular", (0.6, 0.25, 0.8, 1.0)))
PATTERN_FILE = "pattern_map.nrrd"
PATTERN_CSV = "patterns.csv"
#: Regions the report's table shows first (lung, sides, thirds); other regions follow.
MAIN_REGIONS = ("whole", "right", "left", "upper", "middle", "lower")
#: cohort.csv columns the pattern model fills (empty without one), after the others.
COHORT_PATTERN_COLUMNS = ("pattern_dominant", "pattern_emphysema_share_pct") + tuple(f"{p}_pct" for p in PATTERNS)

assert tuple(name.replace(" ", "_") for _, name, _ in PATTERN_COLORS[1:]) == PATTERNS


def group_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """(n, 6) pattern probabilities -> (n, 4) of the broad patterns of :data:`PATTERN_GROUPS`."""
    return np.stack([probabilities[:, list(idx)].sum(axis=1) for idx in PATTERN_GROUPS.values()], axis=1)


def pattern_summary(severity_summary: dict | None) -> dict | None:
    """``summary["severity"]["patterns"]`` when a pattern model ran, else None."""
    return (severity_summary or {}).get("patterns") or None


def pattern_columns() -> list:
    """patterns.csv columns: region, one ``<pattern>_pct`` per pattern, emphysema_pct."""
    return ["region"] + [f"{p}_pct" for p in PATTERNS] + ["emphysema_pct"]


def pattern_rows(severity_summary: dict | None) -> list:
    """One row per region: the share of the region's lung (%) in each pattern (sums to 100)
    and ``emphysema_pct`` (the model's extent in that region, % of its lung); regions the
    case does not reach (no lung there) have empty values. [] without a pattern model."""
    patterns = pattern_summary(severity_summary)
    if patterns is None:
        return []
    extent = severity_summary.get("extent_by_region") or {}
    rows = []
    for region, shares in patterns["share_by_region"].items():
        row = {"region": region}
        row.update({f"{p}_pct": (None if shares is None else shares.get(p)) for p in PATTERNS})
        row["emphysema_pct"] = extent.get(region)
        rows.append(row)
    return rows


def cohort_fields(severity_summary: dict | None) -> dict:
    """The cohort.csv pattern columns of one case (all None without a pattern model)."""
    fields = dict.fromkeys(COHORT_PATTERN_COLUMNS)
    patterns = pattern_summary(severity_summary)
    if patterns is not None:
        whole = patterns["share_by_region"].get("whole") or {}
        fields.update(pattern_dominant=patterns.get("dominant"),
                      pattern_emphysema_share_pct=patterns.get("emphysema_share_pct"),
                      **{f"{p}_pct": whole.get(p) for p in PATTERNS})
    return fields
