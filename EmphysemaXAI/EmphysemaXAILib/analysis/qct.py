"""Quantitative CT densitometry per lung region: ``measure_qct(ct, labels) -> QCTResult``.

One histogram per region (1 HU bins) gives every density metric; regions are whole lung,
right, left, upper / middle / lower thirds of each lung and of both (cut by
:func:`~EmphysemaXAILib.analysis.regions.cip_thirds`) and lobes when a lobe map is given.

Conventions (``QCTConfig``; the project's defaults, with ``cip_compatible`` switching to those of
the Chest Imaging Platform's GenerateParenchymaPhenotypes, which its ct-64 baseline reproduces):

| what | project default | CIP-compatible |
| --- | --- | --- |
| %LAA below T | HU <= T (COPDGene) | HU < T (strict) |
| %HAA above T | HU >= T | HU > T (strict) |
| HU range counted | every lung voxel | -1024..1024 (others dropped) |
| percentiles, median | smallest HU with CDF >= p | largest HU with CDF <= p |

Both use population SD, biased skewness, Pearson (non-excess) kurtosis, the lowest HU among
tied histogram modes, mass = sum((HU + 1000) / 1000 x voxel volume in cm3) in g.

Noise: ``noise_hu`` is the scan's noise SD measured in air (as quality control measures it).
``robust_extent_pct`` is %LAA-950 as the region would show at a standard noise of 20 HU
(:mod:`~EmphysemaXAILib.analysis.robust_extent`: the whole lung's histogram deconvolved with a censored
Gaussian mixture, the noise removed bounded by what the histogram allows); its threshold is
-950 HU whatever ``QCTConfig.emphysema_hu`` (the LAA map's) says.

Calibration: given a :class:`~EmphysemaXAILib.analysis.calibration.Calibration` (from quality control's
tracheal / outside air and unenhanced blood), ``laa950_pct_calibrated`` is the share of voxels
whose calibrated HU (``slope * HU + intercept``) is at or below -950 (the raw histogram counted
up to the raw threshold, interpolated within its 1 HU bin), ``perc15_hu_calibrated`` and
``mean_hu_calibrated`` the calibrated Perc15 (interpolated percentile) and mean; None without a
calibration. ``QCTConfig.class_from`` (``raw`` or ``calibrated``) chooses the %LAA-950 of the
QCT class; a noisy scan's class uses the robust extent either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from ..io.csv_table import write_csv
from ..volume import IN_PLANE
from .regions import REGION_NAMES, LungRegions, lung_regions
from .severity import EMPHYSEMA_HU, SEVERITY_CUTPOINTS, ZONE_CUTPOINTS, seeds_binary_rule, severity_class, zone_grade

if TYPE_CHECKING:
    import pandas as pd

METRIC_KEYS = ("voxels", "volume_l", "mass_g", "mean_hu", "sd_hu", "skewness", "kurtosis", "mode_hu",
               "median_hu", "perc10_hu", "perc15_hu", "laa950_pct", "laa925_pct", "laa910_pct",
               "laa856_pct", "haa600_pct", "haa250_pct", "laa_clusters", "laa_cluster_d", "noise_hu",
               "robust_extent_pct", "laa950_pct_calibrated", "perc15_hu_calibrated", "mean_hu_calibrated",
               "robust_extent_pct_calibrated")
#: Densitometry after the scan's calibration (``calibration.py``), beside the raw figures (HU, %).
CALIBRATED_KEYS = ("laa950_pct_calibrated", "perc15_hu_calibrated", "mean_hu_calibrated",
                   "robust_extent_pct_calibrated")
OFFSET = 32768           # histogram bin of HU v is v + OFFSET
NOISY_HU = 30.0          # above this noise SD, severity uses the noise-robust extent
#: The noise correction is not trusted when it alone takes the class to "none" from a %LAA-950
#: at or above this (%): the class then uses %LAA-950 (same scale), and says so.
UNTRUSTED_LAA_PCT = 15.0
CLUSTER_CLASSES_MM = (5.0, 10.0, 20.0)  # LAA map codes by cluster equivalent diameter
#: CIP region codes (low byte of its label values) of each region (type byte ignored).
CIP_REGIONS = {"right": (2, 4, 5, 6, 12, 13, 14), "left": (3, 7, 8, 9, 10, 11),
               "upper": (9, 12, 20), "middle": (10, 13, 21), "lower": (11, 14, 22),
               "left_upper": (9,), "left_middle": (10,), "left_lower": (11,),
               "right_upper": (12,), "right_middle": (13,), "right_lower": (14,)}


@dataclass
class QCTConfig:
    """Thresholds and conventions (HU)."""

    laa_thresholds: tuple = (int(EMPHYSEMA_HU), -925, -910, -856)
    haa_thresholds: tuple = (-600, -250)
    inclusive: bool = True            # LAA counts HU <= T (COPDGene); False: HU < T (CIP)
    hu_range: tuple | None = None     # (lo, hi) HU counted; CIP: (-1024, 1024)
    percentile_rule: str = "ge"       # "ge": smallest HU with CDF >= p; "cip": largest with CDF <= p
    emphysema_hu: float = EMPHYSEMA_HU  # threshold of the LAA map and its clusters (the panel's setting)
    noisy_hu: float = NOISY_HU
    seeds_rule: bool = False          # add the seeds' binary label (LAA-950 >= 6% and MLD < -850)
    severity_cutpoints: tuple = SEVERITY_CUTPOINTS   # ((bound, class), ...) of docs/severity.md
    zone_cutpoints: tuple = ZONE_CUTPOINTS
    cluster_dim: int = 2              # LAA clusters for D: 2 = per axial slice (Mishima 1999), 3 = 3D
    class_from: str = "calibrated"    # class, zone grades and LAA map on "calibrated" HU when measured, or "raw"

    @classmethod
    def cip(cls, **overrides) -> "QCTConfig":
        settings = dict(inclusive=False, hu_range=(-1024, 1024), percentile_rule="cip")
        settings.update(overrides)
        return cls(**settings)


@dataclass
class QCTResult:
    regions: list                        # one dict per region: {"region": name, metric: value}
    qct_severity: dict
    laa_map: np.ndarray                  # uint8 (z, y, x): cluster size class of LAA voxels
    noise_hu: float | None
    config: QCTConfig
    warnings: list = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)  # step -> seconds (noise, histograms, clusters, robust)
    calibration: dict | None = None      # Calibration.as_dict() behind the *_calibrated figures, or None
    laa_map_threshold: dict | None = None  # the LAA map's threshold: {"hu", "scale" raw|calibrated, "raw_hu"}

    def region(self, name: str) -> dict:
        return next(r for r in self.regions if r["region"] == name)

    def as_dict(self) -> dict:
        return {"regions": self.regions, "qct_severity": self.qct_severity, "noise_hu": self.noise_hu,
                "calibration": self.calibration, "laa_map_threshold": self.laa_map_threshold,
                "warnings": self.warnings}

    def table(self) -> tuple[list, list]:
        """``(columns, rows)`` of ``qct.csv``: one row per region (units in the column names),
        with the calibration's references (``calibration_*`` columns, empty without one)."""
        extra = calibration_columns(self.calibration)
        return ["region", *self.metric_keys(), *extra], [{**row, **extra} for row in self.regions]

    def write_csv(self, path) -> None:
        """Write :meth:`table` as CSV (standard library: no pandas needed, as inside 3D Slicer)."""
        columns, rows = self.table()
        write_csv(path, rows, columns)

    def dataframe(self) -> pd.DataFrame:
        """:meth:`table` as a pandas DataFrame (needs pandas, which 3D Slicer does not ship)."""
        import pandas as pd

        columns, rows = self.table()
        return pd.DataFrame(rows, columns=columns)

    def metric_keys(self) -> list:
        return [k for k in self.regions[0] if k != "region"] if self.regions else list(METRIC_KEYS)


def cip_lung_regions(label_map: np.ndarray) -> LungRegions:
    """Regions of a CIP region/type label map (value = region + 256 x type; the type is ignored).

    whole is every voxel with a non-zero region byte; the other regions are the region codes
    CIP's GenerateParenchymaPhenotypes aggregates (``CIP_REGIONS``), thirds included.
    """
    region = (label_map.astype(np.int64) % 256).astype(np.uint8)
    regions = LungRegions(lung=region > 0, flip=False, masks={})
    codes = regions.gather(region)
    regions.masks = {"whole": np.ones(codes.size, bool)}
    for name in REGION_NAMES[1:]:
        regions.masks[name] = np.isin(codes, CIP_REGIONS[name])
    return regions


def measure_qct(ct, labels=None, lobes=None, config: QCTConfig | None = None, cip_label_map=None,
                noise_hu: float | None = None, calibration=None) -> QCTResult:
    """Densitometry of every lung region.

    Args:
        ct: :class:`~EmphysemaXAILib.volume.CTVolume` (HU).
        labels: lung labels (1 right, 2 left) on the CT grid; or give ``cip_label_map``.
        lobes: optional LTRCLobes lobe map (adds rul, rml, rll, lul, lll).
        config: conventions and thresholds (``QCTConfig.cip()`` for CIP's).
        cip_label_map: a CIP region/type label map used instead of ``labels`` (its own thirds).
        noise_hu: noise SD; measured in air by quality control when not given.
        calibration: a :class:`~EmphysemaXAILib.analysis.calibration.Calibration` (quality control's
            air and blood, :func:`~EmphysemaXAILib.analysis.calibration.calibration_from_qc`): fills the
            ``*_calibrated`` figures; None leaves them None.
    """
    config = config or QCTConfig()
    warnings = []
    clock = _Clock()
    if cip_label_map is not None:
        regions = cip_lung_regions(cip_label_map)
    else:
        regions = lung_regions(labels, lobes, ct.direction_matrix[2, 2] >= 0)
    lung = regions.lung
    if noise_hu is None:
        from .air import measure_air_noise

        noise_hu = measure_air_noise(ct)
    clock.lap("noise")
    voxel_mm3 = float(np.prod(ct.spacing))
    hu_lung = regions.gather(ct.hu)
    if config.hu_range is not None:
        lo, hi = config.hu_range
        in_range = (hu_lung >= lo) & (hu_lung <= hi)
    else:
        in_range = np.ones(hu_lung.shape, bool)
    values = np.clip(np.rint(hu_lung), -OFFSET, OFFSET - 1).astype(np.int64) + OFFSET
    del hu_lung

    clock.lap("histograms")
    map_threshold = laa_map_threshold(config, calibration)
    t = map_threshold["raw_hu"]
    laa = lung & (ct.hu <= t if config.inclusive else ct.hu < t)
    clusters, n_clusters = ndimage.label(laa)  # 3D clusters: the LAA map's size classes
    cluster_sizes = np.bincount(clusters.ravel(), minlength=n_clusters + 1)
    laa_map = _laa_map(clusters, cluster_sizes, voxel_mm3)
    if config.cluster_dim == 2:  # D as published: clusters within each axial slice
        del clusters
        clusters, _ = ndimage.label(laa, structure=IN_PLANE)
    elif config.cluster_dim != 3:
        raise ValueError(f"cluster_dim is 2 (per axial slice) or 3, not {config.cluster_dim}")
    del laa
    cluster_of_voxel = regions.gather(clusters)
    del clusters
    clock.lap("clusters")

    rows, histograms = [], {}
    for name, mask in regions.masks.items():
        member = mask & in_range
        histograms[name] = np.bincount(values[member], minlength=2 * OFFSET)
        row = {"region": name}
        row.update(_histogram_metrics(histograms[name], voxel_mm3, config))
        row.update(_cluster_metrics(cluster_of_voxel[member]))
        row["noise_hu"] = None if noise_hu is None else round(float(noise_hu), 2)
        rows.append(row)
    clock.lap("histograms")
    extents = _robust_extent(histograms, noise_hu)
    for row in rows:
        row["robust_extent_pct"] = extents[row["region"]]
    for row in rows:
        row.update(calibrated_metrics(histograms[row["region"]], row, calibration, config))
    if calibration is not None:
        extents = _robust_extent(histograms, noise_hu, calibration)
        for row in rows:
            row["robust_extent_pct_calibrated"] = extents[row["region"]]
    clock.lap("robust_extent")
    severity = qct_severity(rows, noise_hu, config)
    return QCTResult(rows, severity, laa_map, noise_hu, config, warnings, clock.laps,
                     calibration.as_dict() if calibration is not None else None, map_threshold)


def laa_map_threshold(config: QCTConfig, calibration=None) -> dict:
    """The LAA map's threshold: ``config.emphysema_hu`` on calibrated HU when a calibration is
    given and ``class_from`` is ``calibrated`` (``raw_hu``: the raw HU it corresponds to), else
    on raw HU."""
    if calibration is not None and config.class_from == "calibrated":
        return {"hu": float(config.emphysema_hu), "scale": "calibrated",
                "raw_hu": round(float(calibration.raw_threshold(config.emphysema_hu)), 3)}
    return {"hu": float(config.emphysema_hu), "scale": "raw", "raw_hu": float(config.emphysema_hu)}


class _Clock:
    """Accumulates wall-clock seconds per named step."""

    def __init__(self):
        import time

        self._time = time.perf_counter
        self._last = self._time()
        self.laps = {}

    def lap(self, name: str) -> None:
        now = self._time()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._last, 4)
        self._last = now


def _percentile(cdf, hu, p, rule):
    if rule == "cip":
        below = np.flatnonzero(cdf <= p)
        return int(hu[below[-1]]) if len(below) else None
    return int(hu[np.searchsorted(cdf, p - 1e-12)])


def region_metrics(hu_values, voxel_mm3: float = 1.0, config: QCTConfig | None = None) -> dict:
    """The histogram metrics of :func:`measure_qct` (``laa950_pct``, ``perc15_hu``, ``volume_l``
    ...) for the HU values of one region (any shape), without noise, clusters or sub-regions."""
    values = np.clip(np.rint(np.asarray(hu_values, np.float64).ravel()), -OFFSET, OFFSET - 1).astype(np.int64)
    return _histogram_metrics(np.bincount(values + OFFSET, minlength=2 * OFFSET), voxel_mm3, config or QCTConfig())


def _histogram_metrics(histogram, voxel_mm3, config) -> dict:
    nonzero = np.flatnonzero(histogram)
    n = int(histogram.sum())
    out = {"voxels": n, "volume_l": round(n * voxel_mm3 / 1e6, 6)}
    if n == 0:
        out.update({k: None for k in METRIC_KEYS if k not in out and k not in
                    ("laa_clusters", "laa_cluster_d", "noise_hu", "robust_extent_pct", *CALIBRATED_KEYS)})
        return out
    h = histogram[nonzero[0]:nonzero[-1] + 1].astype(np.float64)
    hu = np.arange(nonzero[0], nonzero[-1] + 1) - OFFSET
    mean = float((h * hu).sum() / n)
    d = hu - mean
    m2 = float((h * d ** 2).sum() / n)
    m3 = float((h * d ** 3).sum() / n)
    m4 = float((h * d ** 4).sum() / n)
    cdf = np.cumsum(h) / n
    out.update({
        "mass_g": round(float((h * (hu + 1000.0) / 1000.0).sum() * voxel_mm3 / 1000.0), 4),
        "mean_hu": round(mean, 4),
        "sd_hu": round(np.sqrt(m2), 4),
        "skewness": round(m3 / m2 ** 1.5, 5) if m2 > 0 else None,
        "kurtosis": round(m4 / m2 ** 2, 5) if m2 > 0 else None,
        "mode_hu": int(hu[int(np.argmax(h))]),
        "median_hu": _percentile(cdf, hu, 0.5, config.percentile_rule),
        "perc10_hu": _percentile(cdf, hu, 0.10, config.percentile_rule),
        "perc15_hu": _percentile(cdf, hu, 0.15, config.percentile_rule),
    })
    for t in config.laa_thresholds:
        below = h[hu <= t].sum() if config.inclusive else h[hu < t].sum()
        out[f"laa{abs(int(t))}_pct"] = round(100.0 * float(below) / n, 5)
    for t in config.haa_thresholds:
        above = h[hu >= t].sum() if config.inclusive else h[hu > t].sum()
        out[f"haa{abs(int(t))}_pct"] = round(100.0 * float(above) / n, 5)
    return out


def calibrated_metrics(histogram, row, calibration, config) -> dict:
    """%LAA-950, Perc15 and mean density (HU, %) after ``calibration`` (``slope * HU +
    intercept``), from the region's raw 1 HU histogram: a voxel is at or below -950 calibrated
    when its raw HU is at or below ``calibration.raw_threshold(-950)`` (interpolated within the
    bin, so a rescaled scan gives the same share); None for each without a calibration."""
    from .calibration import percentile_interpolated, share_at_or_below

    n = int(histogram.sum())
    if calibration is None or n == 0:
        return dict.fromkeys(CALIBRATED_KEYS)
    below = share_at_or_below(histogram, OFFSET, calibration.raw_threshold(EMPHYSEMA_HU), config.inclusive)
    perc15 = percentile_interpolated(histogram, OFFSET, 0.15)
    return {"laa950_pct_calibrated": round(100.0 * below / n, 5),
            "perc15_hu_calibrated": round(float(calibration.apply(perc15)), 2),
            "mean_hu_calibrated": None if row.get("mean_hu") is None
            else round(float(calibration.apply(row["mean_hu"])), 4),
            "robust_extent_pct_calibrated": None}  # filled by measure_qct


def calibration_columns(calibration: dict | None) -> dict:
    """The ``qct.csv`` columns naming the calibration's references (None without one)."""
    keys = ("air_hu", "air_source", "reference", "reference_hu", "slope", "intercept")
    return {f"calibration_{k}": (calibration or {}).get(k) for k in keys}


def _cluster_metrics(cluster_ids) -> dict:
    """Number of LAA clusters meeting the region and the slope D of their size distribution.

    D: minus the slope of log(number of clusters of size >= s) against log(s) (Mishima M. et
    al., PNAS 1999;96:8829), sizes in voxels counted inside the region; the clusters are 2D
    (per axial slice, as published) or 3D (``QCTConfig.cluster_dim``). None with fewer than 3
    distinct sizes.
    """
    ids = cluster_ids[cluster_ids > 0]
    if not ids.size:
        return {"laa_clusters": 0, "laa_cluster_d": None}
    sizes = np.bincount(ids)
    sizes = sizes[sizes > 0]
    distinct = np.unique(sizes)
    if len(distinct) < 3:
        return {"laa_clusters": int(len(sizes)), "laa_cluster_d": None}
    sorted_sizes = np.sort(sizes)
    at_least = len(sorted_sizes) - np.searchsorted(sorted_sizes, distinct, side="left")
    slope = np.polyfit(np.log(distinct), np.log(at_least), 1)[0]
    return {"laa_clusters": int(len(sizes)), "laa_cluster_d": round(float(-slope), 4)}


def _laa_map(clusters, sizes, voxel_mm3) -> np.ndarray:
    """uint8 map of LAA voxels coded by their cluster's equivalent diameter:
    1 < 5 mm, 2 5-10 mm, 3 10-20 mm, 4 >= 20 mm (bulla-sized); 0 elsewhere."""
    diameter = (6.0 * sizes * voxel_mm3 / np.pi) ** (1.0 / 3.0)
    code = (np.searchsorted(CLUSTER_CLASSES_MM, diameter, side="right") + 1).astype(np.uint8)
    code[0] = 0
    return code[clusters]


def _robust_extent(histograms, noise_hu, calibration=None) -> dict:
    """Noise-robust %LAA-950 of every region (:mod:`~EmphysemaXAILib.analysis.robust_extent`): the noise
    bound and the noise-free mixture come from the whole lung, each region refits the weights;
    its threshold is -950 HU whatever ``QCTConfig.emphysema_hu`` (the LAA map's threshold) says.
    With a ``calibration``, -950 HU, air and the reference noise are calibrated ones (the raw
    histogram is deconvolved at the raw HU they correspond to)."""
    from .robust_extent import AIR_HU, DENSE_HU, REFERENCE_NOISE_HU, THRESHOLD_HU, fit_extent_model

    if calibration is None:
        model = fit_extent_model(histograms["whole"], noise_hu, OFFSET)
    else:
        model = fit_extent_model(histograms["whole"], noise_hu, OFFSET,
                                 reference_noise_hu=REFERENCE_NOISE_HU / calibration.slope,
                                 threshold_hu=calibration.raw_threshold(THRESHOLD_HU),
                                 air_hu=calibration.raw_threshold(AIR_HU),
                                 dense_hu=calibration.raw_threshold(DENSE_HU))
    extents = {name: model.extent_pct(h) for name, h in histograms.items()}
    return {name: None if extent is None else round(extent, 4) for name, extent in extents.items()}


def qct_severity(rows, noise_hu, config: QCTConfig) -> dict:
    """Overall class and zone grades from QCT (``docs/severity.md``), saying which extent was used.

    The extent is %LAA-950, or on a noisy scan (noise SD above ``config.noisy_hu``) the
    noise-robust extent; both on calibrated HU when ``class_from`` is ``calibrated`` and the scan
    was calibrated (``docs/severity.md``: why calibrated is the default), else on raw HU."""
    by_name = {r["region"]: r for r in rows}
    noisy = noise_hu is not None and noise_hu > config.noisy_hu
    calibrated = config.class_from == "calibrated" and \
        by_name.get("whole", {}).get("laa950_pct_calibrated") is not None
    key = "robust_extent_pct" if noisy else "laa950_pct"
    if calibrated:
        key += "_calibrated"

    def extent(name):
        row = by_name.get(name)
        if row is None:
            return None
        value = row.get(key)
        return row.get("laa950_pct") if value is None else value

    whole = extent("whole")
    named = key  # the rule names the figure used, and why raw when calibrated was asked for
    if config.class_from == "calibrated" and not calibrated:
        named = f"{key} (no calibration measured)"
    plain = "laa950_pct_calibrated" if calibrated else "laa950_pct"
    laa = by_name.get("whole", {}).get(plain)
    if noisy and whole is not None and laa is not None and laa >= UNTRUSTED_LAA_PCT and \
            severity_class(whole, config.severity_cutpoints) == "none":
        named = (f"{plain} (noise correction not trusted: it took {laa:.1f} % to {whole:.1f} %, "
                 f"'none'; noise inflates this figure)")
        key = plain
        whole = extent("whole")
    out = {"class": severity_class(whole, config.severity_cutpoints) if whole is not None else None,
           "extent_pct": whole,
           "extent_key": key,  # the qct row figure of the class and of every zone grade
           "rule": f"{named} (noise {noise_hu:.0f} HU {'>' if noisy else '<='} {config.noisy_hu:.0f})"
           if noise_hu is not None else named,
           "zone_grades": {f"{s}_{t}": zone_grade(extent(f"{s}_{t}"), config.zone_cutpoints)
                           for s in ("right", "left") for t in ("upper", "middle", "lower")
                           if extent(f"{s}_{t}") is not None}}
    if config.seeds_rule and by_name.get("whole", {}).get("mean_hu") is not None:
        out["seeds_positive"] = bool(seeds_binary_rule(by_name["whole"]["laa950_pct"], by_name["whole"]["mean_hu"]))
    return out
