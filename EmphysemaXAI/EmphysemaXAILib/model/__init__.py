"""The two CNNs (severity and pattern): opening a model folder, its predictions on a case, and
where training and evaluation live.

Public API (importing it does not load torch): :func:`open_predictor` (a model folder -> a
predictor of the right kind), :class:`SeverityResult` (what it says about a case),
:func:`load_model` / :func:`save_model` and the shipped model folders.

Modules by role:
- networks: ``severity_net`` (2.5D tiles, attention pooling), ``pattern_net`` (dense 2D patterns);
- a case: ``tiles`` (working grid, 2.5D tiles), ``case_extent`` (extent, classes, calibration),
  ``severity_infer`` / ``pattern_infer`` (the predictors), ``predictors`` (choosing one),
  ``checkpoint`` (model folders, devices);
- training: ``severity_dataset``, ``severity_training``, ``pattern_augment``, ``pattern_training``;
- cohorts: ``phantom_cohort`` (phantom design and split), ``manifest_cohort`` (users' CSV),
  ``cip_patches`` (CIP's expert-labelled patches);
- evaluation figures: ``metrics`` (case metrics, bootstrap), ``figures`` (prediction rows ->
  figures and files), ``pattern_baselines`` (classical pattern baselines);
- runs (one output folder each): ``runs`` (``train``, ``evaluate``), ``pattern_runs``
  (``train-patterns``), ``pattern_images`` (``patterns``: classify 2D images), ``air_estimate``
  (``patterns --air-hu auto``: the scanner's air from the images).
"""
from .case_extent import SeverityResult
from .checkpoint import (
                         CONFIG_FILE,
                         SEVERITY_V1_DIR,
                         SHIPPED_DIR,
                         WEIGHTS_FILE,
                         load_model,
                         model_dir,
                         pick_device,
                         save_model,
                         shipped_available,
)
from .predictors import open_predictor

__all__ = ["CONFIG_FILE", "SEVERITY_V1_DIR", "SHIPPED_DIR", "WEIGHTS_FILE", "SeverityResult", "load_model", "model_dir",
           "open_predictor", "pick_device", "save_model", "shipped_available"]
