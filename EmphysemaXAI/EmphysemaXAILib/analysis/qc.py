"""Quality control of a CT volume before densitometry: ``run_qc(ct) -> QCReport``.

Errors are what makes analysis impossible (not CT by its Modality tag, no lung in the field of
view; ``contracts.md``); everything else is a warning with the measured value. Statistics
ignore padding (PixelPaddingValue and values below -1024 HU, outside the field of view).

Profiles: ``default`` as above; ``seeds`` adds the seed papers' exclusion rules (maximum HU
above 1600 or HU SD above 600 exclude the scan), which would exclude scans with metal or
padding that the default keeps.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from .anatomy import PADDING_BELOW_HU, _steps, coarse_anatomy, robust_noise
from ..volume import IN_PLANE, CTVolume

PROFILES = ("default", "seeds")

# Thresholds in one place (units in the names).
MIN_SLICES_3D = 10
INPLANE_SPACING_RANGE_MM = (0.3, 1.5)
SLICE_SPACING_RANGE_MM = (0.3, 5.0)
THICK_SLICE_MM = 2.5
AIR_EXPECTED_HU = (-1100.0, -900.0)
METAL_HU = 3000
METAL_MIN_VOXELS = 10
HIGH_NOISE_HU = 35.0
CONTRAST_BLOOD_HU = 130.0
CONTRAST_MIN_ML = 15.0
NO_LUNG_FRACTION = 0.02
MIN_AIR_VOXELS = 2000
TRACHEA_MAX_AREA_MM2 = 800.0
SEEDS_MAX_HU = 1600
SEEDS_MAX_SD = 600

#: Reconstruction kernels known to be sharp (lung / bone / edge-enhancing), by vendor naming.
SHARP_KERNEL = re.compile(r"^(B[5-9]\d|BR[5-9]\d|BL[5-9]\d|SHARP|BONE|LUNG|YB|YC|YD|L|LA|D|E|FC(5\d|8\d))",
                          re.IGNORECASE)
SOFT_KERNEL = re.compile(r"^(B[1-3]\d|BR[1-3]\d|SOFT|STANDARD|STND|B|C|FC(0\d|1\d))", re.IGNORECASE)


@dataclass
class QCReport:
    """Quality-control result. ``excluded`` is True when any error makes analysis impossible."""

    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    measures: dict = field(default_factory=dict)
    profile: str = "default"

    @property
    def excluded(self) -> bool:
        return bool(self.errors)

    def as_dict(self) -> dict:
        """``errors``, ``warnings``, ``measures`` (JSON-ready) and ``profile``."""
        return asdict(self)


def kernel_class(kernel: str | None) -> str:
    """``sharp``, ``soft`` or ``unknown`` from a ConvolutionKernel value (first value if several)."""
    if not kernel:
        return "unknown"
    name = kernel.split("\\")[0].strip()
    if SHARP_KERNEL.match(name) and not name.upper().startswith("B3"):
        return "sharp"
    if SOFT_KERNEL.match(name):
        return "soft"
    return "unknown"


def hu_histogram(hu: np.ndarray, padding_hu: float | None = None, chunk: int = 16):
    """Histogram of valid voxels at 1 HU bins, computed slab by slab (low memory).

    Returns:
        (values, counts): HU of each non-empty bin and its voxel count; voxels below -1024 HU
        and voxels equal to ``padding_hu`` are left out.
    """
    counts = np.zeros(65536, dtype=np.int64)
    for start in range(0, hu.shape[0], chunk):
        slab = hu[start:start + chunk]
        if slab.dtype != np.int16:
            slab = np.clip(np.rint(slab), -32768, 32767).astype(np.int16)
        counts += np.bincount((slab.ravel().view(np.uint16) ^ 0x8000), minlength=65536)
    values = np.arange(65536) - 32768
    counts[: PADDING_BELOW_HU + 32768] = 0
    if padding_hu is not None and -32768 <= padding_hu <= 32767:
        counts[int(round(padding_hu)) + 32768] = 0
    nonzero = counts > 0
    return values[nonzero], counts[nonzero]


def _stats(values, counts) -> dict:
    total = int(counts.sum())
    if total == 0:
        return {"valid_voxels": 0}
    mean = float((values * counts).sum() / total)
    sd = float(np.sqrt(((values - mean) ** 2 * counts).sum() / total))
    return {"valid_voxels": total, "hu_min": int(values[0]), "hu_max": int(values[-1]),
            "hu_mean": round(mean, 2), "hu_sd": round(sd, 2),
            "metal_voxels": int(counts[values >= METAL_HU].sum())}


def run_qc(ct: CTVolume, profile: str = "default") -> QCReport:
    """Check a CT volume; return errors, warnings and measured values.

    Args:
        ct: the volume (any source; DICOM tags used when present).
        profile: ``default`` or ``seeds`` (adds the seed papers' exclusion rules).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown QC profile {profile!r}; choose one of {PROFILES}")
    report = QCReport(profile=profile)
    report.warnings.extend(ct.read_warnings)
    m = report.measures
    m.update(n_slices=ct.shape[0], spacing_mm=[round(float(s), 4) for s in ct.spacing],
             geometry=ct.geometry.get("method"))
    _check_modality(ct, report)
    _check_geometry(ct, report)

    values, counts = hu_histogram(ct.hu, ct.padding_hu)
    m.update(_stats(values, counts))
    m["padding_fraction"] = round(1.0 - m["valid_voxels"] / ct.hu.size, 4)
    if m["valid_voxels"] == 0:
        report.errors.append("no voxel inside the field of view (all below -1024 HU or padding): "
                             "check the rescale intercept of the input")
        return report
    if m["metal_voxels"] >= METAL_MIN_VOXELS:
        report.warnings.append(f"metal: {m['metal_voxels']} voxels above {METAL_HU} HU; streak "
                               "artifacts may bias densitometry near them")
    if profile == "seeds":
        if m["hu_max"] > SEEDS_MAX_HU:
            report.errors.append(f"seeds profile: maximum {m['hu_max']} HU above {SEEDS_MAX_HU}")
        if m["hu_sd"] > SEEDS_MAX_SD:
            report.errors.append(f"seeds profile: HU SD {m['hu_sd']} above {SEEDS_MAX_SD}")

    anatomy = coarse_anatomy(ct.hu, ct.spacing, ct.padding_hu)
    _check_air_and_noise(ct, anatomy, report)
    _check_lungs(ct, anatomy, report)
    _check_contrast(ct, anatomy, report)
    return report


def _check_modality(ct: CTVolume, report: QCReport) -> None:
    if ct.kind != "dicom":
        return
    if ct.modality is None:
        report.warnings.append("Modality tag missing: assumed CT")
    elif ct.modality.upper() != "CT":
        report.errors.append(f"modality is {ct.modality}, not CT: only CT can be analysed")


def _check_geometry(ct: CTVolume, report: QCReport) -> None:
    sx, sy, sz = ct.spacing
    if ct.shape[0] < MIN_SLICES_3D:
        report.warnings.append(f"only {ct.shape[0]} slices: too few for 3D analysis, "
                               "2D measurements only")
    lo, hi = INPLANE_SPACING_RANGE_MM
    if not (lo <= sx <= hi and lo <= sy <= hi):
        report.warnings.append(f"in-plane pixel size {sx:.3f} x {sy:.3f} mm is outside the usual "
                               f"{lo}-{hi} mm of chest CT: texture and small lesions are lost")
    lo, hi = SLICE_SPACING_RANGE_MM
    if ct.shape[0] > 1 and not (lo <= sz <= hi):
        report.warnings.append(f"slice spacing {sz:.3f} mm is outside the usual {lo}-{hi} mm")
    thickness = ct.acquisition.get("slice_thickness_mm") or (sz if ct.shape[0] > 1 else None)
    if thickness is not None and thickness > THICK_SLICE_MM:
        report.warnings.append(f"slices are {thickness:.2f} mm thick (> {THICK_SLICE_MM} mm): "
                               "partial volume biases %LAA-950 and Perc15")
    report.measures["slice_thickness_mm"] = thickness


def air_noise(ct: CTVolume, anatomy=None) -> tuple:
    """(air HU, noise SD HU, source) measured in air: outside the body when there is enough of
    it, else in the trachea; the noise is None when neither is found."""
    anatomy = anatomy or coarse_anatomy(ct.hu, ct.spacing, ct.padding_hu)
    outside = anatomy.outside_air
    if outside.shape[0] > 2:
        outside = ndimage.binary_erosion(outside, iterations=1)
    if outside.sum() >= MIN_AIR_VOXELS:
        air, source = anatomy.hu[outside], "outside_air"
    else:
        trachea = _trachea_air(ct, anatomy)
        if trachea.sum() >= 50:
            air, source = anatomy.hu[trachea], "trachea"
        else:
            air, source = anatomy.hu[anatomy.valid & (anatomy.hu < -900)], "darkest_voxels"
    air_hu = round(float(np.median(air)), 1) if air.size else None
    noise = round(robust_noise(air), 2) if source != "darkest_voxels" else None
    return air_hu, noise, source


def measure_air_noise(ct: CTVolume) -> float | None:
    """Noise SD (HU) of the scan measured in air (see :func:`air_noise`)."""
    return air_noise(ct)[1]


def _check_air_and_noise(ct: CTVolume, anatomy, report: QCReport) -> None:
    m = report.measures
    m["air_hu"], m["noise_hu"], m["noise_source"] = air_noise(ct, anatomy)
    m["kernel_class"] = kernel_class(ct.acquisition.get("kernel"))
    lo, hi = AIR_EXPECTED_HU
    if m["air_hu"] is None or not (lo <= m["air_hu"] <= hi):
        report.warnings.append(f"no air near -1000 HU (air measures {m['air_hu']} HU): check the "
                               "rescale slope / intercept or the scanner calibration")
    _calibration_air(ct, anatomy, report)
    noise = m["noise_hu"]
    if noise is not None and noise > HIGH_NOISE_HU:
        why = "sharp kernel" if m["kernel_class"] == "sharp" else "low dose or sharp kernel"
        report.warnings.append(f"high image noise ({noise:.0f} HU SD in air, {why}): noise "
                               "inflates %LAA-950; prefer a soft-kernel reconstruction or the "
                               "noise-robust extent")


def _calibration_air(ct: CTVolume, anatomy, report: QCReport) -> None:
    """The air reference of calibrated densitometry (``calibration.py``) and QIBA's air check.

    Measures ``trachea_air_hu`` (:func:`trachea_air`, None with ``trachea_air_note`` saying
    why) and ``outside_air_mode_hu`` (:func:`air_mode` of the outside air, None below
    :data:`MIN_AIR_VOXELS`); ``calibration_air_hu`` / ``calibration_air_source`` is the
    trachea's when measured, else outside air's. A warning when that air is more than
    ``AIR_TOLERANCE_HU`` from -1000 HU.
    """
    from .calibration import AIR_TOLERANCE_HU, NOMINAL_AIR_HU, PLAUSIBLE_AIR_HU

    m = report.measures
    trachea = trachea_air(ct, anatomy)
    m["trachea_air_hu"], m["trachea_air_voxels"] = trachea["hu"], trachea["voxels"]
    m["trachea_air_level"], m["trachea_air_note"] = trachea["level"], trachea["note"]
    lo, hi = PLAUSIBLE_AIR_HU
    if m["trachea_air_hu"] is not None and not (lo <= m["trachea_air_hu"] <= hi):
        m["trachea_air_note"] = (f"tracheal air {m['trachea_air_hu']:.0f} HU is outside {lo:.0f}..{hi:.0f} HU: "
                                 "not taken as the air reference")
        m["trachea_air_hu"] = None
    outside = anatomy.outside_air
    if outside.shape[0] > 2:
        outside = ndimage.binary_erosion(outside, iterations=1)
    mode = air_mode(anatomy.hu[outside]) if outside.sum() >= MIN_AIR_VOXELS else None
    m["outside_air_mode_hu"] = None if mode is None or not (lo <= mode <= hi) else mode
    if m["trachea_air_hu"] is not None:
        air, source, where = m["trachea_air_hu"], "trachea", "in the trachea"
    elif m["outside_air_mode_hu"] is not None:
        air, source, where = m["outside_air_mode_hu"], "outside_air", "outside the body"
        if m["trachea_air_note"]:
            report.warnings.append(f"calibration air from outside the body: {m['trachea_air_note']}")
    else:
        air = source = where = None
    m["calibration_air_hu"], m["calibration_air_source"] = air, source
    if air is not None and abs(air - NOMINAL_AIR_HU) > AIR_TOLERANCE_HU:
        report.warnings.append(f"air {where} measures {air:.0f} HU, more than {AIR_TOLERANCE_HU:.0f} HU from "
                               f"{NOMINAL_AIR_HU:.0f} HU (QIBA's check of scanner calibration): raw %LAA-950 and "
                               "Perc15 are biased; see the calibrated figures (laa950_pct_calibrated, "
                               "perc15_hu_calibrated)")


#: Tracheal air core: lumen voxels at least this far (mm, and TRACHEA_CORE_PIXELS pixels)
#: from the lumen edge, so that neither the wall's partial volume nor the blur reaches them.
TRACHEA_CORE_MM = 3.0
TRACHEA_CORE_PIXELS = 2.0
TRACHEA_MIN_CORE_SLICE = 10      # core voxels for a slice to count
TRACHEA_MIN_CORE_VOXELS = 200    # core voxels in all, else the trachea is too narrow for its voxels
TRACHEA_LUMEN_HU = -500          # lumen edge: half-way between air and the wall
TRACHEA_LUMEN_MAX_MM2 = 600.0    # a bigger air component is not the trachea (merged, larynx)
TRACHEA_SEARCH_MM = 40.0         # the trachea is looked for this far around its place above


def trachea_air(ct: CTVolume, anatomy=None) -> dict:
    """Air in the trachea at full resolution: ``{"hu", "voxels", "level", "note"}``.

    The trachea is seeded by the coarse anatomy (air in the body above the lung apices,
    :func:`_trachea_air`), followed down at full in-plane resolution (one slice per coarse
    slice) as the air component (below :data:`TRACHEA_LUMEN_HU`, at most
    :data:`TRACHEA_LUMEN_MAX_MM2`) overlapping the one above, until it divides at the carina
    or joins bigger air. Its core is the lumen at least :data:`TRACHEA_CORE_MM` mm and
    :data:`TRACHEA_CORE_PIXELS` pixels from the lumen edge (geometry, not an HU window around
    air, so a rescaled scan selects the same voxels); ``hu`` is the core's median HU. The
    intrathoracic trachea (slices with lung) is used when it has :data:`TRACHEA_MIN_CORE_VOXELS`
    core voxels (``level`` ``intrathoracic``; in the neck, the shoulders bias air upwards),
    else every slice followed (``level`` ``all``). ``hu`` is None with a ``note`` when the
    trachea is not in the scan or too narrow for the voxel size (e.g. 4 mm pixels: no voxel
    of an 18 mm trachea is clear of partial volume).
    """
    out = {"hu": None, "voxels": 0, "level": None, "note": None}
    anatomy = anatomy or coarse_anatomy(ct.hu, ct.spacing, ct.padding_hu)
    seeds = _trachea_air(ct, anatomy)
    if not seeds.any():
        out["note"] = "trachea not found above the lung apices"
        return out
    sz, sxy = _steps(ct.shape, ct.spacing)
    ny, nx = ct.shape[1:]
    rows, cols = np.arange(ny) // sxy, np.arange(nx) // sxy
    pixel_mm2 = float(ct.spacing[0] * ct.spacing[1])
    core_mm = max(TRACHEA_CORE_MM, TRACHEA_CORE_PIXELS * max(ct.spacing[0], ct.spacing[1]))
    lung_mm2 = anatomy.lung_air.sum(axis=(1, 2)) * anatomy.spacing[0] * anatomy.spacing[1]
    down = -1 if ct.direction_matrix[2, 2] > 0 else 1
    seeded = np.flatnonzero(seeds.any(axis=(1, 2)))
    k = int(seeded[0] if down < 0 else seeded[-1])  # the seed slice nearest the apices
    previous = np.zeros((ny, nx), bool)
    ys, xs = np.nonzero(seeds[k])
    previous[np.minimum(ys * sxy, ny - 1), np.minimum(xs * sxy, nx - 1)] = True
    cores = {"intrathoracic": [], "all": []}
    first = True
    margin = int(np.ceil(TRACHEA_SEARCH_MM / min(ct.spacing[0], ct.spacing[1])))
    while 0 <= k < anatomy.hu.shape[0]:
        z = min(k * sz, ct.shape[0] - 1)
        if first:  # the seed slice: the whole slice, to find the midline
            y0, y1, x0, x1 = 0, ny, 0, nx
        else:  # then a window around the trachea above (it moves a few mm per slice)
            ys, xs = np.nonzero(previous)
            y0, y1 = max(ys.min() - margin, 0), min(ys.max() + margin + 1, ny)
            x0, x1 = max(xs.min() - margin, 0), min(xs.max() + margin + 1, nx)
        image = ct.hu[z, y0:y1, x0:x1]
        body = anatomy.body[k][np.ix_(np.minimum(rows[y0:y1], anatomy.body.shape[1] - 1),
                                      np.minimum(cols[x0:x1], anatomy.body.shape[2] - 1))]
        lumen = body & (image < TRACHEA_LUMEN_HU)
        if ct.padding_hu is not None:
            lumen &= image != ct.padding_hu
        labels, _ = ndimage.label(lumen)
        touching = np.unique(labels[previous[y0:y1, x0:x1] & lumen])
        touching = touching[touching > 0]
        if first and len(touching) > 1:  # the air nearest the body's midline
            middle = np.flatnonzero(body.any(axis=0)).mean() if body.any() else nx / 2
            centres = ndimage.center_of_mass(lumen, labels, touching)
            touching = touching[[int(np.argmin([abs(c[1] - middle) for c in centres]))]]
        first = False
        if len(touching) != 1:
            break  # lost, or divided at the carina
        component = labels == touching[0]
        edge = (y0 > 0 and component[0].any()) or (y1 < ny and component[-1].any()) or \
            (x0 > 0 and component[:, 0].any()) or (x1 < nx and component[:, -1].any())
        if edge or component.sum() * pixel_mm2 > TRACHEA_LUMEN_MAX_MM2:
            break  # joined bigger air
        distance = ndimage.distance_transform_edt(component, sampling=(ct.spacing[1], ct.spacing[0]))
        core = distance >= core_mm
        if core.sum() >= TRACHEA_MIN_CORE_SLICE:
            values = image[core]
            cores["all"].append(values)
            if lung_mm2[k] > TRACHEA_MAX_AREA_MM2:
                cores["intrathoracic"].append(values)
        previous = np.zeros((ny, nx), bool)
        previous[y0:y1, x0:x1] = ndimage.binary_dilation(component, iterations=2)
        k += down
    for level in ("intrathoracic", "all"):
        values = np.concatenate(cores[level]) if cores[level] else np.zeros(0)
        if values.size >= TRACHEA_MIN_CORE_VOXELS:
            out.update(hu=round(float(np.median(values)), 1), voxels=int(values.size), level=level)
            return out
    found = sum(v.size for v in cores["all"])
    out["note"] = (f"trachea too narrow for the voxel size: {found} core voxels at {core_mm:.1f} mm or more "
                   f"from its wall (< {TRACHEA_MIN_CORE_VOXELS})")
    return out


def air_mode(values: np.ndarray, smooth_hu: float = 10.0) -> float | None:
    """The peak (HU) of the histogram of air values: the mode of a 1 HU histogram smoothed by a
    Gaussian of ``smooth_hu``, refined by a parabola through the peak's bins.

    Outside air is mixed with clothes, blankets and the table (a tail towards higher HU) and
    clipped at -1024 HU by many scanners: the peak is robust to both where a median is not
    (the clipped bin and everything above -700 HU are left out of the search).
    """
    values = np.rint(np.asarray(values, np.float64))
    lo, hi = PADDING_BELOW_HU, -700
    values = values[(values > lo) & (values <= hi)]
    if values.size < 50:
        return None
    lowest = values.min()  # a pile of clipped voxels at the scanner's lowest value is not air's peak
    if (values == lowest).sum() > max(0.01 * values.size, 5 * ((values > lowest) & (values <= lowest + 5)).sum() / 5):
        values = values[values > lowest]
    counts = np.bincount((values - lo).astype(np.int64), minlength=hi - lo + 1).astype(np.float64)
    smooth = ndimage.gaussian_filter1d(counts, smooth_hu, mode="constant")
    i = int(np.argmax(smooth))
    return round(float(lo + i + (_parabola_shift(smooth, i) if 0 < i < smooth.size - 1 else 0.0)), 1)


def _parabola_shift(smooth: np.ndarray, i: int) -> float:
    """Sub-bin offset of the peak at bin ``i`` (0 < i < size - 1) of a smoothed histogram: the
    vertex of the parabola through bins i - 1, i, i + 1 (0 when they do not curve downward)."""
    a, b, c = smooth[i - 1], smooth[i], smooth[i + 1]
    denominator = a - 2 * b + c
    return 0.5 * (a - c) / denominator if denominator < 0 else 0.0


def _trachea_air(ct: CTVolume, anatomy) -> np.ndarray:
    """Air of the trachea: air inside the body on the slices above the lung apices.

    Returns a (z, y, x) bool mask on the coarse grid, eroded in-plane so that partial-volume
    edges do not count; empty when the scan starts below the apices or is not axial.
    """
    mask = np.zeros_like(anatomy.lung_air)
    D = ct.direction_matrix
    if abs(D[2, 2]) < 0.9 or ct.shape[0] < MIN_SLICES_3D:
        return mask
    areas_mm2 = anatomy.lung_air.sum(axis=(1, 2)) * anatomy.spacing[0] * anatomy.spacing[1]
    order = range(len(areas_mm2) - 1, -1, -1) if D[2, 2] > 0 else range(len(areas_mm2))
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    for k in order:  # from the head down, while only the trachea is air
        if 0 < areas_mm2[k] <= TRACHEA_MAX_AREA_MM2:
            mask[k] = anatomy.lung_air[k]
        elif areas_mm2[k] > TRACHEA_MAX_AREA_MM2:
            break
    return ndimage.binary_erosion(mask, structure=structure)


def _check_lungs(ct: CTVolume, anatomy, report: QCReport) -> None:
    m = report.measures
    body_voxels = int(anatomy.body.sum())
    lung_voxels = int(anatomy.lung_air.sum())
    m["body_volume_ml"] = round(body_voxels * anatomy.voxel_mm3 / 1000.0, 1)
    m["lung_air_volume_ml"] = round(lung_voxels * anatomy.voxel_mm3 / 1000.0, 1)
    fraction = lung_voxels / body_voxels if body_voxels else 0.0
    m["lung_air_fraction"] = round(fraction, 4)

    edge = np.zeros_like(anatomy.body)
    edge[:, [0, -1], :] = True
    edge[:, :, [0, -1]] = True
    outside_fov = ndimage.binary_opening(~anatomy.valid, iterations=1)  # no noise speckles
    edge |= ndimage.binary_dilation(outside_fov, iterations=1)
    cut = (anatomy.body & edge).any(axis=(1, 2))
    m["fov_cut_slices"] = int(cut.sum())
    if fraction < NO_LUNG_FRACTION:
        # When the field of view cuts the body outline, lung air is not enclosed by it: then
        # parenchyma-density voxels anywhere are the evidence of lung (smoothed, so that noisy
        # air outside the body does not pass for parenchyma).
        smooth = ndimage.gaussian_filter(anatomy.hu, 1.0)
        parenchyma = anatomy.valid & (smooth > -950) & (smooth < -600)
        share = float(parenchyma.sum()) / max(int(anatomy.valid.sum()), 1)
        m["parenchyma_fraction"] = round(share, 4)
        if not cut.any() or share < NO_LUNG_FRACTION:
            report.errors.append(f"no lung in the field of view (air inside the body is "
                                 f"{100 * fraction:.1f}% of it): give a chest CT")
            return
    if cut.any():
        report.warnings.append(f"the field of view cuts the body on {int(cut.sum())} of "
                               f"{len(cut)} sampled slices: lungs may be cut")
    areas = anatomy.lung_air.sum(axis=(1, 2))
    if ct.shape[0] >= MIN_SLICES_3D and areas.max() > 0:
        ends = [name for name, area in (("first", areas[0]), ("last", areas[-1]))
                if area > 0.2 * areas.max()]
        if ends:
            report.warnings.append(f"lung reaches the {' and '.join(ends)} slice: apex or base "
                                   "may be outside the scan")


def check_lung_cut(ct: CTVolume, labels: np.ndarray, report: QCReport) -> None:
    """After segmentation: say which lung the field of view cuts, and that its values are partial.

    A lung is cut where its labels (0 / 1 right / 2 left, (z, y, x) on ``ct``'s grid) reach an
    in-plane image edge or the padding outside a circular reconstruction (HU below
    ``PADDING_BELOW_HU``); whatever engine or user drew the mask. Adds ``measures["lung_cut"]``
    (side -> slices where that lung is cut) and one warning per cut lung."""
    padding = ct.hu < PADDING_BELOW_HU
    if ct.padding_hu is not None and ct.padding_hu < PADDING_BELOW_HU:
        padding |= ct.hu == ct.padding_hu
    near = ndimage.binary_dilation(padding, structure=IN_PLANE.astype(bool)) if padding.any() else None
    cut_at = {}
    for side, code in (("right", 1), ("left", 2)):
        lung = labels == code
        if not lung.any():
            continue
        edge = lung[:, [0, -1], :].any(axis=(1, 2)) | lung[:, :, [0, -1]].any(axis=(1, 2))
        if near is not None:
            edge |= (lung & near).any(axis=(1, 2))
        if edge.any():
            cut_at[side] = int(edge.sum())
    report.measures["lung_cut"] = cut_at
    for side, slices in cut_at.items():
        report.warnings.append(f"the field of view cuts the {side} lung on {slices} of {ct.shape[0]} slices: "
                               f"its volume, densitometry and zone values cover only the part inside the image "
                               f"(partial)")


def _check_contrast(ct: CTVolume, anatomy, report: QCReport) -> None:
    """Blood pool: the largest bright (120-600 HU) blob between the lungs, anterior to the spine.

    ``blood_hu`` (the calibration's second reference) is unenhanced blood measured by
    :func:`unenhanced_blood`; None when the scan is contrast enhanced. Inputs of one or two
    slices get ``blood_hu`` only (no blood-pool measure or warning: its 3D opening needs 3
    slices), from at least :data:`THIN_BLOOD_MIN_VOXELS` soft-tissue voxels, and none when a
    bright blob of the same test in-plane (:func:`_enhanced_in_plane`) shows contrast.
    """
    m = report.measures
    m["blood_pool_hu"] = m["blood_hu"] = None
    D = ct.direction_matrix
    if abs(D[1, 1]) < 0.9 or not anatomy.lung_air.any():
        return
    lung = anatomy.lung_air
    box = np.zeros_like(lung)
    for k in np.flatnonzero(lung.sum(axis=(1, 2)) > 0.02 * lung[0].size):
        xs = np.flatnonzero(lung[k].any(axis=0))
        ys = np.flatnonzero(anatomy.body[k].any(axis=1))
        front, back = (ys[0], ys[-1]) if D[1, 1] > 0 else (ys[-1], ys[0])
        y0, y1 = sorted((int(front + 0.15 * (back - front)), int(front + 0.6 * (back - front))))
        box[k, y0:y1 + 1, xs[0]:xs[-1] + 1] = True
    box &= anatomy.body & ~ndimage.binary_dilation(lung, iterations=1)
    if ct.shape[0] < 3:
        if not _enhanced_in_plane(anatomy, box):
            m["blood_hu"] = unenhanced_blood(anatomy.hu[box], anatomy.voxel_mm3, min_voxels=THIN_BLOOD_MIN_VOXELS)
        return
    bright = ndimage.binary_opening(box & (anatomy.hu >= 120) & (anatomy.hu <= 600), iterations=1)
    labels, count = ndimage.label(bright)
    if count:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        blob = labels == int(np.argmax(sizes))
        volume_ml = sizes.max() * anatomy.voxel_mm3 / 1000.0
        if volume_ml >= CONTRAST_MIN_ML:
            m["blood_pool_hu"] = round(float(np.median(anatomy.hu[blob])), 1)
            m["blood_pool_ml"] = round(volume_ml, 1)
    if m["blood_pool_hu"] is None:
        soft = anatomy.hu[box & (anatomy.hu > -20) & (anatomy.hu < 120)]
        m["blood_pool_hu"] = round(float(np.median(soft)), 1) if soft.size else None
    if m["blood_pool_hu"] is None or m["blood_pool_hu"] <= CONTRAST_BLOOD_HU:  # not enhanced
        m["blood_hu"] = unenhanced_blood(anatomy.hu[box], anatomy.voxel_mm3)
    if m["blood_pool_hu"] is not None and m["blood_pool_hu"] > CONTRAST_BLOOD_HU:
        report.warnings.append(f"contrast enhancement: blood pool at {m['blood_pool_hu']:.0f} HU "
                               "(> 100 HU): contrast raises lung density and lowers %LAA-950")


BLOOD_SEARCH_HU = (-60.0, 150.0)   # where the soft-tissue peak is looked for (HU)
BLOOD_WINDOW_HU = 40.0             # values within this of the peak make the estimate (HU)
THIN_BLOOD_MIN_VOXELS = 1000       # soft-tissue voxels enough on a 1-2 slice input (coarse grid)


def unenhanced_blood(values: np.ndarray, voxel_mm3: float, min_voxels: int | None = None) -> float | None:
    """HU of unenhanced blood (heart and great vessels) from the values of the mediastinal box
    between the lungs: the median within :data:`BLOOD_WINDOW_HU` of the soft-tissue peak of
    their histogram (10 HU smoothing, refined by a parabola; the peak looked for in :data:`BLOOD_SEARCH_HU`, which
    leaves fat out and lets a scanner offset move the window with the tissue). None when less
    than :data:`CONTRAST_MIN_ML` of soft tissue (or, when given, fewer than ``min_voxels``
    voxels) is there, when the peak is at the edge of the
    search (no soft-tissue peak), or when it is enhanced (above :data:`CONTRAST_BLOOD_HU`)."""
    values = np.rint(np.asarray(values, np.float64))
    lo, hi = BLOOD_SEARCH_HU
    window = values[(values >= lo - BLOOD_WINDOW_HU) & (values <= hi + BLOOD_WINDOW_HU)]
    enough = window.size >= min_voxels if min_voxels is not None else \
        window.size * voxel_mm3 / 1000.0 >= CONTRAST_MIN_ML
    if not enough:
        return None
    start = int(lo - BLOOD_WINDOW_HU)
    counts = np.bincount((window - start).astype(np.int64)).astype(np.float64)
    smooth = ndimage.gaussian_filter1d(counts, 10.0, mode="constant")
    first, last = int(BLOOD_WINDOW_HU), int(BLOOD_WINDOW_HU + hi - lo)
    i = first + int(np.argmax(smooth[first:last + 1]))
    if i in (first, last):
        return None
    peak = start + i + _parabola_shift(smooth, i)
    near = window[np.abs(window - peak) <= BLOOD_WINDOW_HU]
    blood = round(float(np.median(near)), 1)
    return blood if blood <= CONTRAST_BLOOD_HU else None


def _enhanced_in_plane(anatomy, box) -> bool:
    """Contrast on a 1-2 slice input: the largest 120-600 HU blob of the mediastinal box
    (opened in-plane) covers at least 400 mm2 (an aorta's cross-section) of one slice and its
    median is above :data:`CONTRAST_BLOOD_HU`."""
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    bright = ndimage.binary_opening(box & (anatomy.hu >= 120) & (anatomy.hu <= 600), structure=structure)
    labels, count = ndimage.label(bright, structure=structure)
    if not count:
        return False
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    if sizes.max() * anatomy.spacing[0] * anatomy.spacing[1] < 400.0:
        return False
    return float(np.median(anatomy.hu[labels == int(np.argmax(sizes))])) > CONTRAST_BLOOD_HU
