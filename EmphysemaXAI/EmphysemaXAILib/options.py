"""Everything an analysis can be told, in one frozen object, and the one rule that merges it.

:class:`AnalysisOptions` holds every setting of :func:`~EmphysemaXAILib.pipeline.analyze_case`
(segmentation engine and weights, lobes, series, QC profile, QCT thresholds and conventions, the
LAA-map threshold, severity cutpoints, calibration choice, model, device, explanations). A field
that is ``None`` was *not given*. Options come from three places and merge in one order::

    defaults  <  config file (TOML, ``--config``)  <  explicit arguments (flags, the Slicer panel)

:func:`build_options` applies that rule; :meth:`AnalysisOptions.merged` is the rule itself (a
later object's given fields win). The choice lists (:data:`ENGINES`, :data:`QC_PROFILES`,
:data:`DEVICES`, ...) are offered here (``QC_PROFILES`` from the QC domain's
``analysis/qc_profiles.py``) and imported by the command line, the Slicer parameter node and the
config schema. This module imports nothing heavy (no torch): the Slicer module and the
command line load it before any dependency check.

A config file looks like this (every key optional; unknown sections or keys are refused by name,
so a typo never passes silently)::

    [segmentation]
    engine = "auto"                      # auto | lungmask | classical
    lungmask_weights = "/data/weights/unet_r231-d5d2fc3d.pth"
    lungmask_fill_weights = "/data/weights/unet_r231-d5d2fc3d.pth"
    lobes = false                        # lobe map too (lungmask's LTRCLobes weights)

    [qc]
    profile = "default"                  # default | seeds

    [qct]
    laa_thresholds = [-950, -925, -910, -856]
    haa_thresholds = [-600, -250]
    inclusive = true                     # LAA counts HU <= T (false: HU < T, as CIP)
    cip_compatible = false               # all of CIP's conventions (other keys here still win)
    emphysema_hu = -950.0                # threshold of the LAA map and its clusters
    noisy_hu = 30.0                      # above this noise, severity uses the robust extent
    seeds_rule = false
    cluster_dim = 2                      # LAA clusters for D: 2 per axial slice (Mishima 1999), 3 in 3D
    class_from = "calibrated"            # class, zone grades and LAA map on "calibrated" HU (when measured) or "raw"

    [severity]
    cutpoints = [5.0, 15.0, 25.0]        # none | mild | moderate | severe (% of lung)
    zone_cutpoints = [0.5, 5.0, 20.0]    # trace | mild | moderate | severe (% of zone)

    [model]
    path = "auto"                        # auto (the shipped model) | none (QCT only) | a model folder
    device = "auto"                      # auto | cpu | cuda | mps
    explain = ["gradcam"]                # attribution maps (EXPLAIN_METHODS)
    explain_target = "emphysema"         # or a pattern name (pattern model)
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .analysis.patterns import PATTERNS
from .analysis.qc_profiles import QC_PROFILES
from .errors import InputError

if TYPE_CHECKING:
    from .analysis.qct import QCTConfig

ENGINES = ("auto", "lungmask", "classical")
DEVICES = ("auto", "cpu", "cuda", "mps")
CLASS_FROM = ("raw", "calibrated")
CLUSTER_DIMS = (2, 3)
EXPLAIN_METHODS = ("gradcam", "gradcampp", "ig", "attention", "occlusion", "smoothgrad")
#: explanation targets: the emphysema estimate or one of the pattern model's six patterns
EXPLAIN_TARGETS = ("emphysema",) + PATTERNS
#: ``model`` values that are not folders: the shipped model, or no model step
MODEL_AUTO, MODEL_NONE = "auto", "none"


@dataclass(frozen=True)
class AnalysisOptions:
    """The settings of one analysis; ``None`` everywhere means "not given" (see :func:`build_options`).

    HU thresholds are in Hounsfield units; cutpoints in % of lung (severity) or % of zone.
    """

    # segmentation
    engine: str | None = None                      # ENGINES
    lungmask_weights: str | None = None            # R231 (or LTRCLobes) weights file
    lungmask_fill_weights: str | None = None       # R231 weights for lungmask's fusion mode
    lobes: bool | None = None                      # also a lobe map (lungmask only)
    series_uid: str | None = None                  # which series of a DICOM folder
    # quality control
    qc_profile: str | None = None                  # QC_PROFILES
    # densitometry (None: the convention of the base, project or CIP)
    cip_compatible: bool | None = None             # CIP's conventions as the base
    laa_thresholds: tuple[float, ...] | None = None
    haa_thresholds: tuple[float, ...] | None = None
    inclusive: bool | None = None                  # LAA counts HU <= T (False: HU < T)
    emphysema_hu: float | None = None              # the LAA map's threshold
    noisy_hu: float | None = None
    seeds_rule: bool | None = None
    cluster_dim: int | None = None                 # CLUSTER_DIMS
    class_from: str | None = None                  # CLASS_FROM: raw or calibrated %LAA-950
    severity_cutpoints: tuple[float, float, float] | None = None   # none|mild|moderate|severe bounds
    zone_cutpoints: tuple[float, float, float] | None = None       # trace|mild|moderate|severe bounds
    # model and explanations
    model: str | None = None                       # MODEL_AUTO, MODEL_NONE or a model folder
    device: str | None = None                      # DEVICES
    explain: tuple[str, ...] | None = None         # EXPLAIN_METHODS
    explain_target: str | None = None              # EXPLAIN_TARGETS
    # resources
    max_memory: int | None = None                  # bytes the analysis may use (None: what is available)

    def __post_init__(self):
        for name, choices in (("engine", ENGINES), ("qc_profile", QC_PROFILES), ("device", DEVICES),
                              ("class_from", CLASS_FROM), ("cluster_dim", CLUSTER_DIMS),
                              ("explain_target", EXPLAIN_TARGETS)):
            value = getattr(self, name)
            if value is not None and value not in choices:
                raise InputError(f"{name} {value!r}: choose one of {', '.join(map(str, choices))}")
        for name in ("laa_thresholds", "haa_thresholds", "severity_cutpoints", "zone_cutpoints", "explain"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        for name in ("severity_cutpoints", "zone_cutpoints"):
            bounds = getattr(self, name)
            if bounds is not None and (len(bounds) != 3 or list(bounds) != sorted(bounds)):
                raise InputError(f"{name} needs three increasing numbers, not {list(bounds)}")
        unknown = [m for m in self.explain or () if m not in EXPLAIN_METHODS]
        if unknown:
            raise InputError(f"unknown explanation method {', '.join(unknown)}; "
                             f"choose from {', '.join(EXPLAIN_METHODS)}")
        if self.max_memory is not None and (not isinstance(self.max_memory, int) or self.max_memory <= 0):
            raise InputError(f"max_memory {self.max_memory!r}: give a positive number of bytes")
        if self.explain and self.model == MODEL_NONE:
            raise InputError("explanations need the severity model: give a model, or no explanations")

    def given(self) -> dict:
        """The fields that were given (not ``None``), by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def merged(self, *later: "AnalysisOptions") -> "AnalysisOptions":
        """These options with every given field of ``later`` objects on top (the last one wins)."""
        values = self.given()
        for options in later:
            values.update(options.given())
        return AnalysisOptions(**values)

    def resolved(self) -> "AnalysisOptions":
        """These options over the defaults (:data:`DEFAULTS`): every field that has a default is set.
        QCT fields stay ``None`` where not given: :meth:`qct_config` takes them from its base."""
        return DEFAULTS.merged(self)

    def qct_config(self) -> QCTConfig:
        """The :class:`~EmphysemaXAILib.analysis.qct.QCTConfig` these options describe: CIP's
        conventions when ``cip_compatible``, else the project's, with every given QCT field on top."""
        from .analysis.qct import QCTConfig
        from .analysis.severity import SEVERITY_CLASSES, ZONE_GRADES

        config = QCTConfig.cip() if self.cip_compatible else QCTConfig()
        for name in ("laa_thresholds", "haa_thresholds", "inclusive", "emphysema_hu", "noisy_hu", "seeds_rule",
                     "cluster_dim", "class_from"):
            value = getattr(self, name)
            if value is not None:
                setattr(config, name, tuple(float(v) for v in value) if name.endswith("thresholds") else value)
        if self.severity_cutpoints is not None:
            config.severity_cutpoints = tuple(zip(map(float, self.severity_cutpoints), SEVERITY_CLASSES[:3]))
        if self.zone_cutpoints is not None:
            config.zone_cutpoints = tuple(zip(map(float, self.zone_cutpoints), ZONE_GRADES[:3]))
        return config

    @property
    def model_folder(self) -> str | None:
        """The model to open: a folder, ``"auto"`` (the shipped one) or ``None`` (no model step)."""
        model = self.model if self.model is not None else MODEL_AUTO
        return None if model == MODEL_NONE else model

    def as_dict(self) -> dict:
        """Plain JSON-able values (tuples as lists), every field."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


DEFAULTS = AnalysisOptions(engine="auto", lobes=False, qc_profile="default", model=MODEL_AUTO, device="auto",
                           explain=(), explain_target="emphysema")

#: TOML section -> {key: (field of AnalysisOptions, accepted types)}
SCHEMA = {
    "segmentation": {"engine": ("engine", str), "lungmask_weights": ("lungmask_weights", str),
                     "lungmask_fill_weights": ("lungmask_fill_weights", str), "lobes": ("lobes", bool)},
    "qc": {"profile": ("qc_profile", str)},
    "qct": {"laa_thresholds": ("laa_thresholds", list), "haa_thresholds": ("haa_thresholds", list),
            "inclusive": ("inclusive", bool), "cip_compatible": ("cip_compatible", bool),
            "emphysema_hu": ("emphysema_hu", (int, float)), "noisy_hu": ("noisy_hu", (int, float)),
            "seeds_rule": ("seeds_rule", bool), "cluster_dim": ("cluster_dim", int),
            "class_from": ("class_from", str)},
    "severity": {"cutpoints": ("severity_cutpoints", list), "zone_cutpoints": ("zone_cutpoints", list)},
    "model": {"path": ("model", str), "device": ("device", str), "explain": ("explain", list),
              "explain_target": ("explain_target", str)},
}


def options_from_toml(path) -> AnalysisOptions:
    """The options a TOML config file gives (only its keys are set; see the module docstring).

    Raises:
        InputError: missing file, invalid TOML, an unknown section or key, a wrong type or value.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the config file ({error}); give a UTF-8 TOML file") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: not valid TOML ({error}); fix the file") from None
    values = {}
    for section, entries in data.items():
        if section not in SCHEMA or not isinstance(entries, dict):
            raise InputError(f"{path}: unknown section [{section}]; known: {', '.join(SCHEMA)}")
        for key, value in entries.items():
            if key not in SCHEMA[section]:
                raise InputError(f"{path}: unknown key {key!r} in [{section}]; known: {', '.join(SCHEMA[section])}")
            name, expected = SCHEMA[section][key]
            if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
                raise InputError(f"{path}: [{section}] {key} has the wrong type ({type(value).__name__})")
            if isinstance(value, list):
                kind = str if name == "explain" else (int, float)
                if not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
                    raise InputError(f"{path}: [{section}] {key} must list {'names' if kind is str else 'numbers'}")
                value = tuple(v if kind is str else float(v) for v in value)
            values[name] = value
    try:
        return AnalysisOptions(**values)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def options_to_toml(options: AnalysisOptions) -> str:
    """The given fields of ``options`` as a TOML config file (:data:`SCHEMA`'s sections and keys),
    so ``options_from_toml`` of the text gives them back; ``series_uid`` has no key (it is the
    command line's ``--series``). Used to hand a run's options to another process."""
    lines = []
    given = options.given()
    for section, keys in SCHEMA.items():
        entries = [(key, given[name]) for key, (name, _) in keys.items() if name in given]
        if entries:
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in entries]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def build_options(config=None, **explicit) -> AnalysisOptions:
    """Defaults < the config file ``config`` (TOML path or None) < ``explicit`` fields that are
    not ``None``: the one merge rule of every front end. Returns resolved options."""
    unknown = sorted(set(explicit) - {f.name for f in fields(AnalysisOptions)})
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    from_file = options_from_toml(config) if config else AnalysisOptions()
    given = AnalysisOptions(**{k: v for k, v in explicit.items() if v is not None})
    return from_file.merged(given).resolved()


#: Slicer parameter-node name -> AnalysisOptions field, for the settings the module's panel shows
PANEL_FIELDS = {"engine": "engine", "lungmaskWeights": "lungmask_weights", "emphysemaThreshold": "emphysema_hu",
                "qcProfile": "qc_profile", "modelPath": "model", "device": "device", "explainMethods": "explain"}


def options_from_panel(values: dict, config_file: str | None = None) -> AnalysisOptions:
    """The options of the Slicer module's panel: defaults < ``config_file`` < the panel's values.

    ``values`` maps parameter-node names (:data:`PANEL_FIELDS`) to what the panel shows; empty
    strings mean "not set" (model: the shipped one). Every value the panel shows is explicit, so
    it wins over the file: choosing a config file loads the file's values into the panel first
    (:func:`panel_values`), and what the user then changes is what runs.
    """
    explicit = {}
    for name, field_name in PANEL_FIELDS.items():
        value = values.get(name)
        if value is None or value == "":
            continue
        if field_name == "explain":
            value = explain_methods(value)
        explicit[field_name] = float(value) if field_name == "emphysema_hu" else value
    return build_options(config_file or None, **explicit)


def explain_methods(text: str) -> tuple[str, ...]:
    """The methods of the panel's ``explainMethods`` value ("gradcam,attention": comma-separated,
    any case and spacing), in its order; ``()`` for an empty value."""
    return tuple(m.strip().lower() for m in str(text).split(",") if m.strip())


def explain_choice(ticked) -> str:
    """The panel's ``explainMethods`` value for the ``ticked`` methods (any order, e.g. the checked
    items of its checkable combo box): comma-separated in :data:`EXPLAIN_METHODS`' order; ""
    for none. Raises ValueError for a name that is not a method."""
    ticked = set(ticked)
    unknown = sorted(ticked - set(EXPLAIN_METHODS))
    if unknown:
        raise ValueError(f"unknown explanation method(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(EXPLAIN_METHODS)}")
    return ",".join(m for m in EXPLAIN_METHODS if m in ticked)


def panel_values(options: AnalysisOptions) -> dict:
    """Parameter-node values showing ``options`` (resolved first), e.g. a config file's."""
    options = options.resolved()
    values = {name: getattr(options, field_name) for name, field_name in PANEL_FIELDS.items()}
    values["emphysemaThreshold"] = float(options.qct_config().emphysema_hu)
    values["explainMethods"] = ",".join(options.explain or ())
    values["modelPath"] = "" if options.model == MODEL_AUTO else options.model
    values["lungmaskWeights"] = options.lungmask_weights or ""
    return values
