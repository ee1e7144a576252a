"""The one definition of severity classes and zone grades (``docs/severity.md``), configurable.

Extent E is the percentage of lung volume that is emphysematous. The bands above 5% are
conventions, not a clinical standard.
"""
from __future__ import annotations

#: The emphysema threshold (HU): %LAA-950 counts lung voxels at or below it (the extent behind the
#: classes, the robust extent, the calibrated figures, the LAA map's default; the pattern model's
#: density features). The one home of the number -950 in code.
EMPHYSEMA_HU = -950.0
#: Overall class cutpoints: (upper bound exclusive, class name); the last class is open-ended.
SEVERITY_CUTPOINTS = ((5.0, "none"), (15.0, "mild"), (25.0, "moderate"))
SEVERITY_CLASSES = ("none", "mild", "moderate", "severe")
#: Zone grade cutpoints per third of each lung (a quantitative analogue of the Fleischner scale).
ZONE_CUTPOINTS = ((0.5, "trace"), (5.0, "mild"), (20.0, "moderate"))
ZONE_GRADES = ("trace", "mild", "moderate", "severe")


def _band(value: float, cutpoints, last: str) -> str:
    for bound, name in cutpoints:
        if value < bound:
            return name
    return last


def severity_bands(cutpoints=SEVERITY_CUTPOINTS, low: float = 0.0, high: float = 100.0) -> dict:
    """{class: (lower bound, upper bound)} of the extent (% of lung) in each class of
    ``cutpoints``, the first from ``low``, the last up to ``high``."""
    bounds = [low] + [bound for bound, _ in cutpoints] + [high]
    return {name: (bounds[i], bounds[i + 1]) for i, name in enumerate(SEVERITY_CLASSES)}


def severity_class(extent_pct: float, cutpoints=SEVERITY_CUTPOINTS) -> str:
    """``none`` / ``mild`` / ``moderate`` / ``severe`` for an extent in % of lung volume."""
    return _band(float(extent_pct), cutpoints, "severe")


def zone_grade(extent_pct: float, cutpoints=ZONE_CUTPOINTS) -> str:
    """``trace`` / ``mild`` / ``moderate`` / ``severe`` for the extent (%) within one zone."""
    return _band(float(extent_pct), cutpoints, "severe")


def seeds_binary_rule(laa950_pct: float, mean_hu: float) -> bool:
    """The seed papers' label: positive when LAA-950 >= 6% and mean lung density < -850 HU."""
    return laa950_pct >= 6.0 and mean_hu < -850.0
