"""The quality-control profiles: the one list that :func:`.qc.run_qc` accepts and ``options.py``
offers (``--qc-profile``, the Slicer panel, the config file). ``qc``'s docstring says what each
profile checks.

A module of its own that imports nothing, so that ``options.py`` takes the list from the QC
domain without loading ``qc``: ``qc`` imports ``air``, which imports ``segmentation``, whose
package imports ``options``.
"""

QC_PROFILES = ("default", "seeds")
