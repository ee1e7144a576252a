"""Opening a model folder as a predictor of the right kind (the one entry point for cases).

``open_predictor(path)`` reads the folder's ``config.json``: a pattern model gives a
:class:`~.pattern_infer.PatternPredictor`, anything else a :class:`~.severity_infer.SeverityPredictor`.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .checkpoint import CONFIG_FILE, model_dir

if TYPE_CHECKING:
    from .pattern_infer import PatternPredictor
    from .severity_infer import SeverityPredictor


def open_predictor(model_path=None, device: str = "auto") -> PatternPredictor | SeverityPredictor:
    """The predictor for a model folder (default: the shipped model): a
    :class:`~.pattern_infer.PatternPredictor` when its ``config.json`` names a pattern model,
    else a :class:`~.severity_infer.SeverityPredictor`. Both give ``predict`` ->
    :class:`~.case_extent.SeverityResult`, ``run_tiles``, ``model``, ``info``."""
    # the predictors are imported here, not above: importing the model package must not load torch
    try:
        kind = json.loads((model_dir(model_path) / CONFIG_FILE).read_text())["architecture"].get("kind")
    except (OSError, ValueError, KeyError, AttributeError):
        kind = None   # the loader names what is wrong with the folder
    if kind == "pattern":
        from .pattern_infer import PatternPredictor

        return PatternPredictor(model_path, device)
    from .severity_infer import SeverityPredictor

    return SeverityPredictor(model_path, device)
