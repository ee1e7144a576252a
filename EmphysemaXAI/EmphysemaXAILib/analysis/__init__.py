"""The measurements of one case: quality control, calibration, regions, densitometry, severity.

Modules: ``qc`` (:func:`~.qc.run_qc`, with ``air`` and ``blood`` for the references it measures,
``anatomy`` for the coarse body / lung-air map), ``calibration`` (tracheal air and blood ->
calibrated HU), ``regions`` (lungs, CIP's thirds, lobes), ``qct`` (:func:`~.qct.measure_qct`:
%LAA, percentiles, clusters), ``robust_extent`` (the noise-robust extent), ``severity`` (the one
definition of classes and zone grades, ``docs/severity.md``), ``patterns`` (the pattern model's
names, tables and colours). Import from the modules (the package imports nothing itself).
"""

__all__ = ["air", "anatomy", "blood", "calibration", "patterns", "qc", "qct", "regions", "robust_extent", "severity"]
