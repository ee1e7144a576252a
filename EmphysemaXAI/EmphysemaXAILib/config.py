"""Settings in one place: ``load_settings(path) -> Settings`` from a TOML file.

Shared by every command (``--config FILE.toml``) and the Slicer module. Example::

    [segmentation]
    engine = "auto"                      # auto | lungmask | classical
    lungmask_weights = "/data/weights/unet_r231-d5d2fc3d.pth"
    lungmask_fill_weights = "/data/weights/unet_r231-d5d2fc3d.pth"

    [qc]
    profile = "default"                  # default | seeds

    [qct]
    laa_thresholds = [-950, -925, -910, -856]
    haa_thresholds = [-600, -250]
    inclusive = true                     # LAA counts HU <= T (false: HU < T, as CIP)
    cip_compatible = false               # all of CIP's conventions
    noisy_hu = 30.0                      # above this noise, severity uses the robust extent
    seeds_rule = false
    cluster_dim = 2                      # LAA clusters for D: 2 per axial slice (Mishima 1999), 3 in 3D
    class_from = "raw"                   # QCT class from raw or "calibrated" %LAA-950 (tracheal air / blood)

    [severity]
    cutpoints = [5.0, 15.0, 25.0]        # none | mild | moderate | severe (% of lung)
    zone_cutpoints = [0.5, 5.0, 20.0]    # trace | mild | moderate | severe (% of zone)

Unknown sections or keys are refused with their name, so a typo never passes silently.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .analysis.qct import QCTConfig

SCHEMA = {
    "segmentation": {"engine": str, "lungmask_weights": str, "lungmask_fill_weights": str},
    "qc": {"profile": str},
    "qct": {"laa_thresholds": list, "haa_thresholds": list, "inclusive": bool, "cip_compatible": bool,
            "noisy_hu": (int, float), "seeds_rule": bool, "cluster_dim": int, "class_from": str},
    "severity": {"cutpoints": list, "zone_cutpoints": list},
}


@dataclass
class Settings:
    """Everything a run can be told (defaults: the project's conventions)."""

    engine: str = "auto"
    lungmask_weights: str | None = None
    lungmask_fill_weights: str | None = None
    qc_profile: str = "default"
    qct: QCTConfig = field(default_factory=QCTConfig)


def load_settings(path=None) -> Settings:
    """Settings from a TOML file (``None``: the defaults)."""
    settings = Settings()
    if path is None:
        return settings
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: not valid TOML ({error}); fix the file") from None
    for section, values in data.items():
        if section not in SCHEMA or not isinstance(values, dict):
            raise InputError(f"{path}: unknown section [{section}]; known: {', '.join(SCHEMA)}")
        for key, value in values.items():
            expected = SCHEMA[section].get(key)
            if expected is None:
                raise InputError(f"{path}: unknown key {key!r} in [{section}]; known: {', '.join(SCHEMA[section])}")
            if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
                raise InputError(f"{path}: [{section}] {key} has the wrong type ({type(value).__name__})")
    seg, qc, qct, sev = (data.get(s, {}) for s in ("segmentation", "qc", "qct", "severity"))
    settings.engine = seg.get("engine", settings.engine)
    settings.lungmask_weights = seg.get("lungmask_weights")
    settings.lungmask_fill_weights = seg.get("lungmask_fill_weights")
    settings.qc_profile = qc.get("profile", settings.qc_profile)
    base = QCTConfig.cip() if qct.get("cip_compatible") else QCTConfig()
    for key in ("laa_thresholds", "haa_thresholds"):
        if key in qct:
            setattr(base, key, tuple(float(v) for v in qct[key]))
    for key in ("inclusive", "noisy_hu", "seeds_rule", "cluster_dim", "class_from"):
        if key in qct:
            setattr(base, key, qct[key])
    if base.class_from not in ("raw", "calibrated"):
        raise InputError(f"{path}: [qct] class_from {base.class_from!r}: choose raw or calibrated")
    if base.cluster_dim not in (2, 3):
        raise InputError(f"{path}: [qct] cluster_dim {base.cluster_dim}: choose 2 (per axial slice) or 3")
    for key, names in (("cutpoints", ("none", "mild", "moderate")), ("zone_cutpoints", ("trace", "mild", "moderate"))):
        if key in sev:
            bounds = [float(v) for v in sev[key]]
            if len(bounds) != 3 or bounds != sorted(bounds):
                raise InputError(f"{path}: [severity] {key} needs three increasing numbers")
            setattr(base, "severity_cutpoints" if key == "cutpoints" else "zone_cutpoints", tuple(zip(bounds, names)))
    settings.qct = base
    if settings.engine not in ("auto", "lungmask", "classical"):
        raise InputError(f"{path}: [segmentation] engine {settings.engine!r}: choose auto, lungmask or classical")
    if settings.qc_profile not in ("default", "seeds"):
        raise InputError(f"{path}: [qc] profile {settings.qc_profile!r}: choose default or seeds")
    return settings
