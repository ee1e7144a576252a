"""Explanations of the severity CNN: attribution methods, attribution volumes on the CT grid,
per-region scores, faithfulness and plausibility figures.

Modules: ``methods`` (attribution methods on tiles), ``assemble`` (volumes on the CT grid,
region scores: :func:`~.assemble.explain_case`), ``faithfulness`` (deletion / insertion,
randomisation), ``evaluate`` (the ``explain-eval`` run). Import from them: each loads torch, so
the package itself exports nothing.
"""

__all__: list = []
