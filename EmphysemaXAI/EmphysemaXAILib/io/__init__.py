"""Reading and writing: CT volumes from DICOM / NRRD / NIfTI / MHA / 2D images, DICOM writing,
and the atomic-output machinery every front end uses.

Modules: ``read`` (:func:`~.read.read_ct`, the one entry point for a CT), ``dicom_folder`` /
``dicom_header`` / ``dicom_geometry`` / ``dicom_series`` (DICOM series: scanning, tags, slice
geometry, reading), ``image_headers`` (NRRD / MetaImage / NIfTI header checks), ``images`` (2D
TIFF / DICOM slices in HU), ``orientation`` (the canonical axial grid), ``files`` (suffix tables,
case ids, sha256), ``dicom_write``,
``pydicom_compat`` (what differs between pydicom 2.4, which 3D Slicer ships, and pydicom 3),
``atomic`` / ``outputs`` / ``signals`` (write to a temporary place, rename on success; output
claims and locks; signals that stop a run cleanly). Import from the modules: this package
imports nothing itself, so a light module (``signals``) does not load pydicom or SimpleITK.
"""

__all__ = ["atomic", "dicom_folder", "dicom_geometry", "dicom_header", "dicom_series", "dicom_write", "files",
           "image_headers", "images", "orientation", "outputs", "pydicom_compat", "read", "signals"]
