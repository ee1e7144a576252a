"""``generate_phantom(params) -> Phantom``: a synthetic chest CT with exact ground truth.

Order of construction (each step on the (z, y, x) grid, LPS mm centred on 0):
torso and lungs with lobes and fissures -> airways and aorta -> vessel trees -> lung label
(airways and aorta removed) -> emphysema lesions in eligible parenchyma -> parenchyma texture ->
vessels and airways composited with partial volume (the noise-free "ideal" image) -> scanner
(kernel edges, correlated noise, 12-bit clip, circular field of view).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..analysis.regions import lung_regions, slice_thirds
from ..analysis.severity import severity_class, zone_grade
from ..volume import CTVolume
from .body import build_torso
from .lesions import LESION_MAX_HU, LesionPlacer, default_zones, zone_targets
from .params import SIZES, SUBTYPE_CODES, SUBTYPES, Anatomy, PhantomParams
from .scanner import acquire, noise_sd
from .tubes import Grid, airway_tree, aorta, rasterize, vessel_trees

VERSION = 1
NONLESION_MIN_HU = -948.0  # parenchyma texture never dips below this (truth: >= -950)
VESSEL_ELIGIBLE = 0.0      # a voxel touched by any vessel or airway wall is not lesion-eligible


@dataclass
class Phantom:
    """A generated phantom: the scan, its label maps and the truth."""

    ct: CTVolume             # the scanner's image (int16 HU)
    labels: dict             # name -> (z, y, x) uint8: lungs, lobes, emphysema, airways, vessels
    truth: dict              # what truth.json holds
    ideal: np.ndarray | None = None  # noise-free float32 HU (kept when asked for)


def generate_phantom(params: PhantomParams, keep_ideal: bool = False) -> Phantom:
    """Generate a phantom (seeded: the same parameters give the same phantom)."""
    params.validate()
    shape, spacing = SIZES[params.size]
    rng = np.random.default_rng([params.seed, 20261122])
    grid = Grid(shape, spacing)
    z_extent = shape[0] * spacing[2]
    anatomy = Anatomy.draw(rng, params, fov_mm=shape[2] * spacing[0], z_extent=z_extent)
    torso = build_torso(shape, spacing, anatomy, table=params.table)
    hu, lungs, lobes = torso.hu, torso.lungs, torso.lobes

    z_top, z_bottom = grid.axes[2][-1], grid.axes[2][0]
    lumen_segments, wall_segments, lobar_ends = airway_tree(torso.geometry, z_top, rng)
    airway_wall = np.zeros(shape, np.float32)
    rasterize(wall_segments, grid, airway_wall)
    airway_lumen = np.zeros(shape, np.float32)
    rasterize(lumen_segments, grid, airway_lumen)
    vessels = np.zeros(shape, np.float32)
    rasterize(aorta(torso.geometry, anatomy, z_bottom, rng), grid, vessels)
    outside_lung = (airway_wall > 0.5) | (vessels > 0.5)  # airways and aorta are not lung
    lungs[outside_lung] = 0
    lobes[outside_lung] = 0
    r_min = max(0.45, 0.35 * grid.voxel)  # the smallest vessel drawn (mm radius)
    rasterize(vessel_trees(lobes, grid, lobar_ends, rng, r_min), grid, vessels)

    lung = lungs > 0
    emphysema = np.zeros(shape, np.uint8)
    eligible = lung & (vessels <= VESSEL_ELIGIBLE) & (airway_wall <= VESSEL_ELIGIBLE) & ~torso.fissure
    thirds = slice_thirds(lung)
    achieved = {}
    mix = params.subtype_mix()
    if mix:
        placer = LesionPlacer(hu, emphysema, eligible, thirds, torso.near_fissure, grid, rng)
        target_total = int(round(params.extent_pct / 100.0 * lung.sum()))
        for subtype in SUBTYPES:
            if subtype in mix:
                goal = int(round(target_total * mix[subtype]))
                done = placer.place(subtype, zone_targets(goal, default_zones(subtype, params.zones)))
                achieved[subtype] = int(sum(done))
        del placer
    _add_texture(hu, lung, emphysema, anatomy.texture_hu, grid, rng)

    # Composite vessels and airways with partial volume: the noise-free image.
    hu += vessels * (40.0 - hu)
    hu += airway_wall * (40.0 - hu)
    hu += airway_lumen * (-1000.0 - hu)
    lesion = emphysema > 0
    if lesion.any() and float(hu[lesion].max()) >= -950.0:
        raise AssertionError("a lesion voxel's noise-free HU reached -950")
    nonlesion = lung & ~lesion
    if nonlesion.any() and float(hu[nonlesion].min()) < -950.0:
        raise AssertionError("a non-lesion lung voxel's noise-free HU fell below -950")

    sd = noise_sd(params, rng)
    image = acquire(hu, spacing, params, rng, sd)
    origin = tuple(float(a[0]) for a in grid.axes)
    ct = CTVolume(hu=image, spacing=tuple(spacing), origin=origin,
                  direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), kind="phantom", modality="CT",
                  acquisition=_acquisition(params), geometry={"method": "generated"})
    labels = {"lungs": lungs, "lobes": lobes, "emphysema": emphysema,
              "airways": (airway_wall > 0.5).astype(np.uint8), "vessels": (vessels > 0.5).astype(np.uint8)}
    truth = _truth(params, anatomy, labels, hu, image, sd, achieved, mix)
    return Phantom(ct=ct, labels=labels, truth=truth, ideal=hu if keep_ideal else None)


def _add_texture(hu, lung, emphysema, amplitude, grid: Grid, rng) -> None:
    """Fine parenchyma texture (correlation about 1 mm), kept on the right side of -950 HU."""
    sigma = np.maximum(1.0 / grid.spacing[::-1], 0.5)
    field = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), sigma, truncate=3.0)
    field /= np.float32(field[:: max(1, hu.shape[0] // 16)].std() or 1.0)
    lesion = emphysema > 0
    parenchyma = lung & ~lesion
    hu[parenchyma] = np.maximum(hu[parenchyma] + amplitude * field[parenchyma], NONLESION_MIN_HU)
    hu[lesion] = np.clip(hu[lesion] + 4.0 * field[lesion], -1024.0, LESION_MAX_HU)


def _acquisition(params: PhantomParams) -> dict:
    mas = {"standard": 150.0, "low": 40.0, "ultralow": 12.0}[params.dose]
    return {"kernel": params.kernel.upper(), "kvp": 120.0, "exposure_mas": mas,
            "ctdivol": round(mas * 0.068, 2), "slice_thickness_mm": SIZES[params.size][1][2],
            "manufacturer": "EmphysemaXAI phantom", "series_uid": None, "study_date": None}


def _truth(params, anatomy, labels, ideal, image, sd, achieved, mix) -> dict:
    lungs, emphysema = labels["lungs"], labels["emphysema"]
    regions = lung_regions(lungs, labels["lobes"])
    codes = regions.gather(emphysema)
    lesion_l = codes > 0
    extent_by_region = {}
    for name, member in regions.masks.items():
        n = int(member.sum())
        extent_by_region[name] = round(100.0 * int((lesion_l & member).sum()) / n, 4) if n else None
    lung = regions.lung
    n_lung = int(codes.size)
    extent = 100.0 * int(lesion_l.sum()) / n_lung
    by_subtype = {name: round(100.0 * int((codes == code).sum()) / n_lung, 4)
                  for name, code in SUBTYPE_CODES.items()}
    if not mix:
        subtype = "none"
    elif len(mix) == 1:
        subtype = next(iter(mix))
    else:
        subtype = "mixed"
    zones = {f"{side}_{third}": zone_grade(extent_by_region[f"{side}_{third}"] or 0.0)
             for side in ("right", "left") for third in ("upper", "middle", "lower")}
    lung_image = image[lung]
    return {
        "version": VERSION,
        "extent_pct": round(extent, 4),
        "target_extent_pct": params.extent_pct,
        "extent_by_region": extent_by_region,
        "subtype": subtype,
        "subtype_extent_pct": by_subtype,
        "severity": severity_class(extent),
        "zone_grades": zones,
        "noise_hu": round(sd, 3),
        "lung_volume_ml": round(n_lung * float(np.prod(SIZES[params.size][1])) / 1000.0, 1),
        "lung_mean_hu_noise_free": round(float(ideal[lung].mean()), 2),
        "laa950_noise_free_pct": round(100.0 * float((ideal[lung] < -950).mean()), 4),
        "laa950_pct": round(100.0 * float((lung_image < -950).mean()), 4),
        "lung_mean_hu": round(float(lung_image.mean()), 2),
        "params": params.as_dict(),
        "anatomy": anatomy.as_dict(),
        "label_codes": {"lungs": {"1": "right", "2": "left"},
                        "lobes": {"1": "lul", "2": "lll", "3": "rul", "4": "rml", "5": "rll"},
                        "emphysema": {"0": "none", **{str(c): n for n, c in SUBTYPE_CODES.items()}}},
        "disclaimer": "Synthetic phantom: no real-person data.",
    }
