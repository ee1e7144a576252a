"""Parameters of a synthetic chest CT phantom: what the caller sets and what the seed draws.

Coordinates are LPS millimetres with the volume centred on (0, 0, 0): x grows toward the
patient's left, y toward posterior, z toward the head.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

#: (z, y, x) voxels and (x, y, z) spacing in mm of each size (``docs/contracts.md``).
SIZES = {
    "small": ((96, 128, 128), (2.5, 2.5, 2.5)),
    "medium": ((200, 256, 256), (1.4, 1.4, 1.4)),
    "full": ((400, 512, 512), (0.7, 0.7, 1.0)),
}
SUBTYPES = ("centrilobular", "panlobular", "paraseptal", "bullous")
#: Patterns a phantom's lesions can follow with emphysema present (a subtype, or ``mixed``).
EMPHYSEMA_PATTERNS = SUBTYPES + ("mixed",)
#: Every ``PhantomParams.pattern`` (lesion patterns of the phantoms, not the six parenchyma
#: patterns of the pattern model: those are ``analysis.patterns.PATTERNS``).
LESION_PATTERNS = ("none",) + EMPHYSEMA_PATTERNS
SUBTYPE_CODES = {"centrilobular": 1, "panlobular": 2, "paraseptal": 3, "bullous": 4}
#: Default share of the extent in the upper / middle / lower third, per subtype.
DEFAULT_ZONES = {
    "centrilobular": (0.6, 0.3, 0.1),
    "panlobular": (0.1, 0.3, 0.6),
    "paraseptal": (0.5, 0.3, 0.2),
    "bullous": (0.6, 0.3, 0.1),
}
DEFAULT_MIX = {"centrilobular": 0.5, "panlobular": 0.2, "paraseptal": 0.2, "bullous": 0.1}
#: Noise SD range (HU) of each dose with the standard kernel.
DOSE_NOISE_HU = {"standard": (15.0, 25.0), "low": (40.0, 60.0), "ultralow": (75.0, 100.0)}
DOSES = tuple(DOSE_NOISE_HU)
#: Kernel: (noise factor, in-plane noise correlation sigma in voxels, edge operation).
KERNEL_SETTINGS = {"soft": (0.8, 1.3, "blur"), "standard": (1.0, 0.8, "none"), "sharp": (1.5, 0.55, "sharpen")}
KERNELS = tuple(KERNEL_SETTINGS)


@dataclass
class PhantomParams:
    """What the caller chooses (every field is recorded in ``truth.json``).

    extent_pct: target emphysema extent, % of lung volume (0-60).
    pattern: a subtype, ``mixed`` (``mix`` weights) or ``none``.
    zones: share of the extent in the upper / middle / lower third (default per subtype).
    dose / kernel: noise level and texture / edge sharpness.
    inspiration: 1.0 full inspiration (lungs at about -860 HU), down to 0.6 (denser, smaller).
    noise_hu: overrides the dose's noise SD (HU) when given; 0 gives a noise-free image.
    """

    extent_pct: float = 0.0
    pattern: str = "none"
    dose: str = "standard"
    kernel: str = "standard"
    size: str = "small"
    seed: int = 0
    inspiration: float = 1.0
    mix: dict | None = None
    zones: tuple | None = None
    noise_hu: float | None = None
    table: bool = True

    def validate(self) -> None:
        from ..errors import InputError

        if self.pattern not in LESION_PATTERNS:
            raise InputError(f"unknown pattern {self.pattern!r}; choose one of {', '.join(LESION_PATTERNS)}")
        if self.size not in SIZES:
            raise InputError(f"unknown size {self.size!r}; choose one of {', '.join(SIZES)}")
        if self.dose not in DOSE_NOISE_HU:
            raise InputError(f"unknown dose {self.dose!r}; choose one of {', '.join(DOSE_NOISE_HU)}")
        if self.kernel not in KERNELS:
            raise InputError(f"unknown kernel {self.kernel!r}; choose one of {', '.join(KERNELS)}")
        if not 0.0 <= self.extent_pct <= 60.0:
            raise InputError(f"extent {self.extent_pct}% is outside 0-60% of lung volume")
        if self.pattern == "none" and self.extent_pct > 0:
            raise InputError("pattern 'none' needs extent_pct 0; choose a subtype or 'mixed'")
        if not 0.6 <= self.inspiration <= 1.0:
            raise InputError(f"inspiration {self.inspiration} is outside 0.6-1.0")
        if self.zones is not None and (len(self.zones) != 3 or min(self.zones) < 0 or sum(self.zones) <= 0):
            raise InputError("zones must be three non-negative shares (upper, middle, lower)")

    def subtype_mix(self) -> dict:
        """Share of the extent per subtype (sums to 1; empty for ``none``)."""
        if self.pattern == "none" or self.extent_pct == 0:
            return {}
        if self.pattern == "mixed":
            mix = dict(self.mix or DEFAULT_MIX)
            total = sum(mix.values())
            return {k: v / total for k, v in mix.items() if v > 0}
        return {self.pattern: 1.0}

    def as_dict(self) -> dict:
        out = asdict(self)
        out["zones"] = list(self.zones) if self.zones is not None else None
        return out


@dataclass
class Anatomy:
    """Sizes and positions drawn from the seed (mm, LPS, volume centred on 0)."""

    body_a: float            # half width of the torso (left-right)
    body_b: float            # half depth (anterior-posterior)
    fat_mm: float
    muscle_mm: float
    z_apex: float            # top of the lungs
    lung_height: float       # apex to the lowest costophrenic recess
    dome_mm: float           # height of the diaphragm domes above the recesses
    right_dome_extra: float  # the right dome sits higher (liver)
    apex_taper_mm: float
    junction_gap_mm: float   # half-gap between the lungs at the anterior junction
    mediastinum_mm: float    # half-width of the middle mediastinum
    heart: tuple             # centre (x, y, z) and semi-axes (a, b, c)
    oblique_slope: float     # dz/dy of the oblique fissures
    horizontal_offset: float  # height of the right horizontal fissure above the recess
    gravity_hu: float        # how much denser the dependent (posterior) lung is
    texture_hu: float
    parenchyma_hu: float
    fissure_phase: tuple = field(default=(0.0, 0.0))

    @classmethod
    def draw(cls, rng: np.random.Generator, params: PhantomParams, fov_mm: float, z_extent: float):
        insp = params.inspiration
        body_a = min(rng.uniform(145.0, 165.0), 0.47 * fov_mm)
        body_b = rng.uniform(105.0, 125.0)
        height = min(rng.uniform(230.0, 270.0) * (0.7 + 0.3 * insp), 0.86 * z_extent)
        z_apex = z_extent / 2 - rng.uniform(0.03, 0.07) * z_extent
        dome = rng.uniform(35.0, 50.0) * (1.3 - 0.3 * insp)
        heart_z = z_apex - height + dome + rng.uniform(35.0, 50.0)
        return cls(
            body_a=body_a, body_b=body_b, fat_mm=rng.uniform(6.0, 18.0), muscle_mm=rng.uniform(7.0, 11.0),
            z_apex=z_apex, lung_height=height, dome_mm=dome, right_dome_extra=rng.uniform(8.0, 18.0),
            apex_taper_mm=rng.uniform(45.0, 70.0), junction_gap_mm=rng.uniform(0.3, 6.0),
            mediastinum_mm=rng.uniform(24.0, 32.0),
            heart=(rng.uniform(12.0, 28.0), rng.uniform(-40.0, -25.0), heart_z,
                   rng.uniform(50.0, 62.0), rng.uniform(40.0, 50.0), rng.uniform(48.0, 58.0)),
            oblique_slope=rng.uniform(0.9, 1.4), horizontal_offset=rng.uniform(0.42, 0.52),
            gravity_hu=rng.uniform(20.0, 50.0), texture_hu=rng.uniform(14.0, 22.0),
            parenchyma_hu=-868.0 + (1.0 - insp) * 320.0 + rng.uniform(-8.0, 8.0),
            fissure_phase=(rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)))

    def as_dict(self) -> dict:
        out = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


#: emphysema extent (% of lung) of the demo phantom (``emphysema-xai demo``, the Slicer module's sample)
DEMO_EXTENT_PCT = 12.0


def demo_params(seed: int = 0) -> PhantomParams:
    """The demo case: a medium phantom with 12 % mixed emphysema (the command line's ``demo`` and
    the Slicer module's generated sample)."""
    return PhantomParams(extent_pct=DEMO_EXTENT_PCT, pattern="mixed", size="medium", seed=seed)
