"""Density calibration from the scan's own references: air in the trachea, blood in the heart.

Scanners drift: outside air reads -910 to -930 HU on some low-dose screening scanners instead
of -1000, and a fixed -950 HU threshold then counts a different share of the lung. QIBA's
lung-density profile checks tracheal air against -1000 HU (within :data:`AIR_TOLERANCE_HU`);
the remedy of the density-correction literature (e.g. Kim S.S. et al., Eur J Radiol 2014,
air and aortic blood) maps two internal references onto their nominal values with one linear
correction, every figure in HU::

    HU_calibrated = slope * HU_raw + intercept

- air (nominal :data:`NOMINAL_AIR_HU`): tracheal air measured by quality control at full
  resolution in the lumen core of the intrathoracic trachea (``air.trachea_air``); outside air
  (the mode of its histogram) when the trachea is not in the scan or too narrow for its voxels;
- the second point: unenhanced blood (nominal :data:`NOMINAL_BLOOD_HU`) when quality control
  measured it (``blood_hu``: the soft-tissue peak between the lungs, None when contrast
  enhanced); else water, assumed right at 0 HU (the correction is then a scaling about 0 HU).

Both references are measured with voxel selections that do not depend on fixed HU levels near
them (geometric cores, histogram peaks), so a linearly mis-calibrated scan
(``HU' = a * HU + b``) yields the same calibrated figures as the original, to rounding.

A correction whose slope falls outside :data:`SLOPE_RANGE` is not credible (a reference
measured on the wrong structure): no calibrated figures then, with a warning. Densitometry
applies the correction to thresholds, not voxels: calibrated %LAA-950 is the share of raw
voxels at or below ``raw_threshold(-950)`` (:func:`share_at_or_below`, interpolated within
the 1 HU bin).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NOMINAL_AIR_HU = -1000.0
NOMINAL_BLOOD_HU = 40.0          # unenhanced blood (haematocrit-dependent, about 35-45 HU)
NOMINAL_WATER_HU = 0.0
AIR_TOLERANCE_HU = 20.0          # QIBA lung densitometry: tracheal air within -1000 +- 20 HU
SLOPE_RANGE = (0.8, 1.25)        # a credible correction (HU per HU)
#: A measured air reference outside this range (HU) is not air (wrong structure or rescale).
PLAUSIBLE_AIR_HU = (-1100.0, -800.0)
#: Measured blood is used only within this (HU) of its nominal value once air is corrected with
#: water assumed right: a mediastinal peak further off is enhanced blood (contrast), not a drift.
BLOOD_TOLERANCE_HU = 60.0
#: ... or within this (HU) once air is corrected by an offset alone (the scanner's offset drifted:
#: air -920 HU, blood 120 HU); tighter, since an offset leaves no scale error to absorb.
BLOOD_OFFSET_TOLERANCE_HU = 30.0
CLASS_FROM = ("raw", "calibrated")


@dataclass(frozen=True)
class Calibration:
    """``HU_calibrated = slope * HU + intercept`` from two references (all in HU).

    Attributes:
        air_hu: air as measured (HU); air_source: ``trachea`` or ``outside_air``.
        reference: ``blood`` (measured) or ``water`` (assumed at 0 HU, not measured).
        reference_hu: the second reference as measured (HU; 0 for water).
        reference_nominal_hu: what it should read (HU).
        slope (HU per HU), intercept (HU).
    """

    air_hu: float
    air_source: str
    reference: str
    reference_hu: float
    reference_nominal_hu: float
    slope: float
    intercept: float
    air_nominal_hu: float = NOMINAL_AIR_HU

    def apply(self, hu) -> float | np.ndarray:
        """Calibrated HU of raw ``hu`` (a number or an array)."""
        return self.slope * hu + self.intercept

    def raw_threshold(self, calibrated_hu: float) -> float:
        """The raw HU that calibrates to ``calibrated_hu``."""
        return (calibrated_hu - self.intercept) / self.slope

    def as_dict(self) -> dict:
        """JSON-ready (``summary.json`` ``qct.calibration``)."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def calibration_from_refs(air_hu: float, air_source: str, blood_hu: float | None = None) -> Calibration:
    """The line through (air, -1000) and (blood, 40) or, without blood, (0, 0) (water)."""
    if blood_hu is not None:
        reference, measured, nominal = "blood", float(blood_hu), NOMINAL_BLOOD_HU
    else:
        reference, measured, nominal = "water", NOMINAL_WATER_HU, NOMINAL_WATER_HU
    span = measured - float(air_hu)
    slope = (nominal - NOMINAL_AIR_HU) / span if span > 500 else float("nan")
    intercept = NOMINAL_AIR_HU - slope * float(air_hu)
    return Calibration(air_hu=float(air_hu), air_source=air_source, reference=reference,
                       reference_hu=measured, reference_nominal_hu=nominal, slope=float(slope),
                       intercept=float(intercept))


def calibration_from_qc(measures: dict, warnings: list | None = None) -> Calibration | None:
    """The calibration from quality control's measures, or None (with a warning appended to
    ``warnings``) when no air was measured or the correction would not be credible.

    Uses ``calibration_air_hu`` / ``calibration_air_source`` (chosen by quality control:
    tracheal air, else outside air) and ``blood_hu`` (None: water assumed at 0 HU). Blood is
    refused (water assumed, with a note) when it is more than :data:`BLOOD_TOLERANCE_HU` from
    :data:`NOMINAL_BLOOD_HU` when corrected by air and water (a drift of the scale) and more than
    :data:`BLOOD_OFFSET_TOLERANCE_HU` when corrected by air alone (a drift of the offset: a
    scanner reading air at -920 HU reads blood 80 HU high): enhanced blood whose pool escaped
    the contrast check.
    """
    air, source = measures.get("calibration_air_hu"), measures.get("calibration_air_source")
    if air is None:
        if warnings is not None:
            warnings.append("no calibrated densitometry: neither tracheal nor outside air could be measured")
        return None
    blood = measures.get("blood_hu")
    if blood is not None and air < 0:
        by_water = calibration_from_refs(air, source, None).apply(float(blood))
        by_offset = float(blood) + NOMINAL_AIR_HU - float(air)  # a drift of the offset alone
        if abs(by_water - NOMINAL_BLOOD_HU) > BLOOD_TOLERANCE_HU and \
                abs(by_offset - NOMINAL_BLOOD_HU) > BLOOD_OFFSET_TOLERANCE_HU:
            if warnings is not None:
                warnings.append(f"calibration: blood {blood:.0f} HU is not taken as a reference (reads "
                                f"{by_water:.0f} HU once air is corrected: contrast?); water assumed at 0 HU")
            blood = None
    calibration = calibration_from_refs(air, source, blood)
    if not (SLOPE_RANGE[0] <= calibration.slope <= SLOPE_RANGE[1]):
        if warnings is not None:
            warnings.append(f"no calibrated densitometry: air {air:.0f} HU ({source}) and "
                            f"{calibration.reference} {calibration.reference_hu:.0f} HU give a slope "
                            f"{calibration.slope:.3f} outside {SLOPE_RANGE}; check the scan")
        return None
    return calibration


def share_at_or_below(histogram: np.ndarray, offset: int, threshold: float, inclusive: bool = True,
                      window_hu: float = 0.0) -> float:
    """Voxels of a 1 HU histogram (bin ``v + offset`` counts integer HU ``v``) at or below a
    non-integer ``threshold`` (HU), each integer v standing for the values v - 0.5 .. v + 0.5
    (the cumulative count interpolated linearly between bin edges). At an integer threshold
    and ``window_hu`` 0 this is exactly the count of HU <= threshold (``inclusive``) or
    HU < threshold (strict: the count at or below threshold - 1), so the identity calibration
    reproduces the raw figure.

    ``window_hu`` > 0 averages the count over threshold +- window_hu (HU), a smoothing of the
    cumulative count (its own bias is second order: window_hu**2 / 6 times the slope of the
    histogram's density); densitometry uses 0. Integer HU re-rounded after a rescale
    (``rint(0.95 * HU - 40)`` of integer data) carry a rounding error that is a sawtooth of
    the raw value (period 20 HU), which no window under 20 HU evens out; a scanner rounds
    continuous values, whose rounding error is independent of the value.
    """
    t = float(threshold) - (0.0 if inclusive else 1.0)
    if window_hu > 0:
        points = t + np.linspace(-window_hu, window_hu, int(np.ceil(8 * window_hu)) + 1)
    else:
        points = np.array([t])
    lo = max(int(np.floor(points[0])) - 1 + offset, 0)
    hi = min(int(np.ceil(points[-1])) + 2 + offset, histogram.size)
    below_lo = float(histogram[:lo].sum())
    cumulative = below_lo + np.cumsum(histogram[lo:hi], dtype=np.float64)  # count <= v at v = lo..hi-1
    edges = np.arange(lo, hi) - offset + 0.5                                 # upper edge of bin v
    counts = np.interp(points + 0.5, edges, cumulative, left=below_lo,
                       right=cumulative[-1] if cumulative.size else below_lo)
    return float(counts.mean())


def percentile_interpolated(histogram: np.ndarray, offset: int, p: float) -> float | None:
    """The HU below which a share ``p`` (0-1) of the histogram's voxels lie, with each integer
    bin spread uniformly over v - 0.5 .. v + 0.5 (so a rescaled scan gives the rescaled value)."""
    n = float(histogram.sum())
    if n == 0:
        return None
    cdf = np.cumsum(histogram) / n
    i = int(np.searchsorted(cdf, p - 1e-12))
    before = cdf[i - 1] if i > 0 else 0.0
    width = cdf[i] - before
    frac = (p - before) / width if width > 0 else 0.5
    return float(i - offset - 0.5 + frac)
