"""``emphysema-xai patterns``: classify 2D lung-parenchyma images (patches, ROIs) with the pattern
model, one row per image. The whole image is taken as lung.

Inputs: TIFF (signed integers or floats, HU as stored), DICOM (one frame, rescaled to HU) and
NRRD / NIfTI / MHA (every axial slice of a volume is one image, ``slice`` says which), given as
files or folders (searched recursively; other files are skipped). Pixels must be square; their
size is ``pixel_mm`` when given, else the file's own spacing (TIFF carries none: then
``pixel_mm`` is required). ``air_hu``: the air value the scanner reads (when known), mapped to
-1000 HU with water kept at 0 HU before the model sees the image; ``"auto"``: estimated from the
images (:mod:`.air_estimate`), once for all of them (``air_groups="run"``: one scanner) or once
per input file / folder (``"input"``); all images of a group are read before any is classified.

Row: ``image`` (the path as given, or relative to the folder given), ``slice``, ``p_<pattern>``
for the six patterns, ``p_centrilobular`` (sum of the three grades), ``pattern`` (the broad
pattern of highest probability: normal, centrilobular, paraseptal or panlobular), ``subclass``
(the most probable of the six), ``emphysema_pct`` (the model's emphysema fraction, % of image: the
mean of the fused texture + density map for a model with a ``fusion`` block, as on a case),
``pixel_mm``, ``air_hu`` (the air value the image was calibrated with; -1000 when it was not) and
``air_source`` (``given``, ``none``, or the estimate's source: :class:`.air_estimate.AirEstimate`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analysis.patterns import PATTERN_GROUPS, PATTERNS, group_probabilities
from ..errors import InputError
from ..io.files import DICOM_SUFFIXES, VOLUME_SUFFIXES

LUNG_HU = (-1150.0, -500.0)   # a lung image in HU has at least MIN_LUNG_SHARE of its pixels here
MIN_LUNG_SHARE = 0.05         # (an expert's paraseptal patch can be mostly chest wall: median -81 HU)


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def collect(inputs: list) -> list:
    """[(path, name shown in the table)] for files and folders (folders recursively)."""
    from ..io.images import is_image_file

    out = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted((p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                            and (is_image_file(p) or _is_volume(p))), key=lambda p: p.relative_to(path).as_posix())
            if not found:
                raise InputError(f"{path}: holds no TIFF, DICOM, NRRD or NIfTI images")
            out.extend((p, (Path(path.name) / p.relative_to(path)).as_posix()) for p in found)
        elif path.is_file():
            out.append((path, str(item)))
        else:
            raise InputError(f"{path}: no such image file or folder")
    return out


def read_images(path: Path, pixel_mm: float | None) -> tuple:
    """([(H, W) float32 HU per slice], pixel size in mm) of one file."""
    from ..io.images import read_slice

    if _is_volume(path):
        from ..io.read import read_image_file

        volume = read_image_file(path)
        sx, sy = float(volume.spacing[0]), float(volume.spacing[1])
        if pixel_mm is None and abs(sx - sy) > 0.01 * max(sx, sy):
            raise InputError(f"{path}: pixels of {sx:g} x {sy:g} mm are not square; "
                             "resample it or give pixel_mm (--pixel-mm)")
        images = [np.asarray(s, np.float32) for s in volume.hu]
        size = pixel_mm if pixel_mm is not None else sx
    else:
        images = [read_slice(path)]
        size = pixel_mm if pixel_mm is not None else (_dicom_pixel(path) if _is_dicom(path) else None)
    if size is None:
        raise InputError(f"{path}: the file carries no pixel size; give pixel_mm (--pixel-mm)")
    for image in images:
        share = float(np.mean((image >= LUNG_HU[0]) & (image <= LUNG_HU[1])))
        if share < MIN_LUNG_SHARE:
            raise InputError(f"{path}: only {100 * share:.1f}% of its pixels lie at lung densities "
                             f"({LUNG_HU[0]:g}..{LUNG_HU[1]:g} HU): not lung parenchyma in HU; give HU images "
                             "of lung (a signed TIFF or DICOM with its rescale)")
        if min(image.shape) < 8:
            raise InputError(f"{path}: an image of {image.shape[1]} x {image.shape[0]} pixels is too small; "
                             "give patches of at least 8 x 8 pixels")
    return images, float(size)


def _is_dicom(path: Path) -> bool:
    from ..io.dicom_folder import looks_like_dicom

    return path.suffix.lower() in DICOM_SUFFIXES or looks_like_dicom(path)


def _dicom_pixel(path: Path) -> float | None:
    import pydicom

    spacing = getattr(pydicom.dcmread(path, stop_before_pixels=True), "PixelSpacing", None)
    if not spacing:
        return None
    row, col = float(spacing[0]), float(spacing[1])
    if abs(row - col) > 0.01 * max(row, col):
        raise InputError(f"{path}: pixels of {row:g} x {col:g} mm are not square; "
                         "give pixel_mm (--pixel-mm) after resampling")
    return row


AIR_GROUPS = ("run", "input")   # one air estimate for all images, or one per input file / folder


def classify(inputs: list, predictor, pixel_mm: float | None = None, air_hu: float | str | None = None,
             air_groups: str = "run") -> tuple:
    """(rows (module docstring), [air estimate dicts, one per group]) for every image under
    ``inputs``. ``air_hu``: a number (what the scanner reads for air), ``"auto"`` (estimated from
    the images of each group: :func:`.air_estimate.estimate_air`) or None (no calibration)."""
    if pixel_mm is not None and not (0.05 <= pixel_mm <= 5.0):
        raise InputError(f"pixel_mm {pixel_mm:g} (--pixel-mm) is not a CT pixel size; "
                         "give it in millimetres (e.g. 0.7)")
    if air_groups not in AIR_GROUPS:
        raise InputError(f"air_groups {air_groups!r} (--air-groups): give one of {', '.join(AIR_GROUPS)}")
    if isinstance(air_hu, str) and air_hu != "auto":
        raise InputError(f"air_hu {air_hu!r} (--air-hu): give a number (HU), auto or none")
    if air_hu is not None and air_hu != "auto":
        from ..analysis.calibration import PLAUSIBLE_AIR_HU

        if not PLAUSIBLE_AIR_HU[0] <= air_hu <= PLAUSIBLE_AIR_HU[1]:
            raise InputError(f"air_hu {air_hu:g} (--air-hu) is not an air reading; give what the scanner reads for air "
                             f"({PLAUSIBLE_AIR_HU[0]:g} .. {PLAUSIBLE_AIR_HU[1]:g} HU)")
    groups: dict = {}
    for group, item in enumerate(inputs):
        for path, name in collect([item]):
            images, size = read_images(path, pixel_mm)
            groups.setdefault(0 if air_groups == "run" else group, []).append((name, images, size))
    rows, airs = [], []
    for members in groups.values():
        air = _group_air(members, air_hu)
        airs.append(air)
        scale = 1000.0 / (1000.0 - air["offset_hu"])     # the line through air -> -1000, water -> 0
        for name, images, size in members:
            calibrated = [image * np.float32(scale) for image in images]
            probs, fractions = predictor.classify_images(calibrated, size)
            if predictor.fusion:
                # a model whose extent is its fused texture + density map: the image mean of that map
                fractions = predictor.fused_images(calibrated, size)
            for index, (p, g, fraction) in enumerate(zip(probs, group_probabilities(probs), fractions)):
                rows.append({"image": name, "slice": index, **{f"p_{k}": float(v) for k, v in zip(PATTERNS, p)},
                             "p_centrilobular": float(g[1]), "pattern": list(PATTERN_GROUPS)[int(np.argmax(g))],
                             "subclass": PATTERNS[int(np.argmax(p))], "emphysema_pct": float(100.0 * fraction),
                             "pixel_mm": size, "air_hu": air["air_hu"], "air_source": air["source"]})
    return rows, airs


def _group_air(members: list, air_hu) -> dict:
    """The air estimate (dict of :class:`.air_estimate.AirEstimate`) for one group's
    [(name, images, pixel_mm)]."""
    from .air_estimate import AirEstimate, estimate_air

    count = sum(len(images) for _, images, _ in members)
    if air_hu is None:
        return AirEstimate(-1000.0, "none", 0.0, images=count).as_dict()
    if air_hu != "auto":
        return AirEstimate(float(air_hu), "given", float(air_hu) + 1000.0, images=count).as_dict()
    sizes = {size for _, _, size in members}
    images = [image for _, group, _ in members for image in group]
    # one pixel size per estimate (the dark-region sizes are in pixels); else the most common one
    size = max(sizes, key=lambda s: sum(len(g) for _, g, z in members if z == s))
    return estimate_air(images, size).as_dict()


COLUMNS = (["image", "slice"] + [f"p_{k}" for k in PATTERNS]
           + ["p_centrilobular", "pattern", "subclass", "emphysema_pct", "pixel_mm", "air_hu", "air_source"])
