"""Quality control of a CT volume before densitometry: ``run_qc(ct) -> QCReport``.

Errors are what makes analysis impossible (not CT by its Modality tag, no lung in the field of
view; ``docs/contracts.md``); everything else is a warning with the measured value. Statistics
ignore padding (PixelPaddingValue and values below -1024 HU, outside the field of view).
The air and noise measures come from :mod:`.air`, the contrast check and unenhanced blood from
:mod:`.blood`.

Profiles: ``default`` as above; ``seeds`` adds the seed papers' exclusion rules (maximum HU
above 1600 or HU SD above 600 exclude the scan), which would exclude scans with metal or
padding that the default keeps.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from ..volume import IN_PLANE, CTVolume
from .air import MIN_AIR_VOXELS, air_mode, air_noise, trachea_air
from .anatomy import MIN_SLICES_3D, PADDING_BELOW_HU, coarse_anatomy
from .blood import check_contrast
from .qc_profiles import QC_PROFILES

PROFILES = QC_PROFILES  # the one home of the choice list: qc_profiles.py

# Thresholds in one place (units in the names); the air's and blood's are in air.py and blood.py.
INPLANE_SPACING_RANGE_MM = (0.3, 1.5)
SLICE_SPACING_RANGE_MM = (0.3, 5.0)
THICK_SLICE_MM = 2.5
AIR_EXPECTED_HU = (-1100.0, -900.0)
METAL_HU = 3000
METAL_MIN_VOXELS = 10
HIGH_NOISE_HU = 35.0
NO_LUNG_FRACTION = 0.02
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


def hu_histogram(hu: np.ndarray, padding_hu: float | None = None, chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
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
    check_contrast(ct, anatomy, report)
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
