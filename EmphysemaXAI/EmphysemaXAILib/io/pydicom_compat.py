"""The two places where pydicom 2.4 (bundled with 3D Slicer 5.10) and pydicom 3 differ for us.

3D Slicer ships pydicom 2.4.4 and its DICOM browser depends on it, so the module must never
upgrade it; the command line and the tests run on pydicom 3. Everything else the library calls
(``dcmread``, ``Dataset``, ``generate_uid``, ``pixel_array``, ``pydicom.uid``) is common to both.

- :func:`save_dicom`: write a file with a 128-byte preamble, complete file meta and the encoding
  named by its TransferSyntaxUID (pydicom 3: ``enforce_file_format=True``; 2.4:
  ``write_like_original=False`` with ``is_little_endian`` / ``is_implicit_VR`` taken from the
  transfer syntax). The bytes written mean the same under both versions.
- :func:`decoder_status`: whether compressed pixel data can be decoded here and, when not, what
  to install (pydicom 3: ``pydicom.pixels.get_decoder``; 2.4: ``pydicom.config.pixel_data_handlers``).
"""
from __future__ import annotations

import numpy as np
import pydicom

#: Major version of the installed pydicom (2 inside 3D Slicer 5.10, 3 in the project's lock).
PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])


def save_dicom(ds, path) -> None:
    """Write ``ds`` to ``path`` as a DICOM file (preamble, file meta group, the dataset encoded as
    its ``file_meta.TransferSyntaxUID`` says)."""
    if PYDICOM_MAJOR >= 3:
        ds.save_as(path, enforce_file_format=True)
        return
    syntax = ds.file_meta.TransferSyntaxUID
    ds.is_little_endian = syntax.is_little_endian
    ds.is_implicit_VR = syntax.is_implicit_VR
    if getattr(ds, "preamble", None) is None:
        ds.preamble = b"\0" * 128
    ds.save_as(path, write_like_original=False)


def decoder_status(syntax) -> tuple[bool, list[str]]:
    """``(available, missing)`` for pixel data in transfer syntax ``syntax``: whether a decoder
    is installed, and otherwise what would provide one.

    Raises:
        NotImplementedError: when this pydicom has no decoder for the syntax at all.
    """
    if PYDICOM_MAJOR >= 3:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(syntax)  # NotImplementedError for an unknown syntax
        return bool(decoder.is_available), list(decoder.missing_dependencies)
    from pydicom import config

    handlers = [h for h in config.pixel_data_handlers if h.supports_transfer_syntax(syntax)]
    if not handlers:
        raise NotImplementedError(f"pydicom {pydicom.__version__} has no pixel data handler for {syntax}")
    if any(h.is_available() for h in handlers):
        return True, []
    missing = [f"{h.HANDLER_NAME}: " + ", ".join(name for _, name in getattr(h, "DEPENDENCIES", {}).values())
               for h in handlers]
    return False, missing


def import_highdicom():
    """``import highdicom``, made to work inside 3D Slicer 5.10.

    Slicer 5.10 ships pydicom 2.4.4 (never upgraded: its DICOM browser uses it) and numpy 2.0.2.
    The last highdicom for pydicom 2 is 0.22.0 (0.23 and later need pydicom 3), and 0.22.0 still
    names ``np.float_`` (in ``seg.Segmentation``'s dtype checks), which numpy 2 removed. The
    alias is restored as numpy 1 defined it (``np.float64``) before highdicom is imported; with
    numpy 1 or a newer highdicom nothing changes.
    """
    if not hasattr(np, "float_"):  # numpy 2: removed
        np.float_ = np.float64
    import highdicom

    return highdicom
