"""Explanations of the severity CNN: attribution methods, attribution volumes on the CT grid,
per-region scores, faithfulness and plausibility figures."""
