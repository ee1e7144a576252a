"""Checks of image-file headers that ITK would silently "fix", and a guard for ITK's output.

NRRD, MetaImage (MHA / MHD) and NIfTI-1 headers are read here before SimpleITK reads the file:
zero, negative or non-finite voxel sizes, degenerate or sheared axes, truncated data and NaN
voxels are refused with one line naming the header field; a NIfTI whose sheared sform ITK
replaces by its qform is reported (a warning), never passed over silently.
:func:`native_output_silenced` keeps ITK's and C libraries' messages off the terminal.

Voxel sizes are in mm; directions are LPS (ITK's convention), columns = index axes x, y, z.
"""
from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError, plain_numbers

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextmanager
def native_output_silenced() -> Iterator[None]:
    """Keep ITK's and the C libraries' own messages off the terminal during a SimpleITK call.

    ITK warnings are switched off (``ProcessObject.SetGlobalWarningDisplay``) and file
    descriptor 2, where C code such as niftilib prints, goes to a scratch file that is dropped
    afterwards: the reader reports what matters itself, in one-line errors or ``read_warnings``.
    """
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error to protect
        saved = None
    try:
        with tempfile.TemporaryFile() as sink:
            if saved is not None:
                os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                if saved is not None:
                    os.dup2(saved, 2)
    finally:
        if saved is not None:
            os.close(saved)
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def check_grid(path: Path, image) -> None:
    """Refuse an image whose voxel sizes (mm) are not positive and finite, or whose direction
    matrix (LPS, columns = index axes) is not finite, degenerate or sheared."""
    spacing = [float(s) for s in image.GetSpacing()]
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{path}: voxel spacing {plain_numbers(spacing)} mm: every voxel size must be "
                         "positive and finite; fix the spacing in the file's header")
    dim = image.GetDimension()
    _check_axes(path, "the direction matrix", np.asarray(image.GetDirection(), float).reshape(dim, dim).T)


def _check_axes(path: Path, field: str, vectors) -> None:
    """Refuse index-axis direction ``vectors`` (one per row, any length) that are not finite,
    have zero length, are parallel, or are further than 0.06 degrees from perpendicular
    (a sheared grid, which the volume's direction matrix cannot hold)."""
    vectors = np.asarray(vectors, float)
    if not np.all(np.isfinite(vectors)):
        raise InputError(f"{path}: {field} holds NaN or infinite numbers; fix the header")
    lengths = np.linalg.norm(vectors, axis=1)
    if np.any(lengths < 1e-9):
        axis = "xyz"[int(np.argmin(lengths))] if len(lengths) <= 3 else int(np.argmin(lengths))
        raise InputError(f"{path}: {field} gives axis {axis} a zero-length direction; every axis "
                         "needs a non-zero step: fix the header")
    unit = vectors / lengths[:, None]
    cosines = np.abs(unit @ unit.T - np.eye(len(unit)))
    worst = float(cosines.max()) if len(unit) > 1 else 0.0
    if worst > 1 - 1e-6:
        raise InputError(f"{path}: {field} has parallel axes, so the grid is degenerate; fix the "
                         "header")
    if worst > 1e-3:
        angle = 90.0 - float(np.degrees(np.arccos(min(1.0, worst))))
        raise InputError(f"{path}: {field} has axes {angle:.2f} degrees off perpendicular (a "
                         "sheared grid); resample the image onto an orthogonal grid (e.g. in 3D "
                         "Slicer) and save again")


def _header_numbers(text: str) -> list:
    """Numbers of a header field's text (commas, brackets, spaces separate); NaN for tokens
    that are not numbers, so that the checks refuse them."""
    numbers = []
    for token in re.split(r"[\s,()]+", text.strip()):
        if token:
            try:
                numbers.append(float(token))
            except ValueError:
                numbers.append(float("nan"))
    return numbers


def _text_header(path: Path, first_line: str | None, separator: str) -> dict:
    """Fields of a text header (NRRD: ``field: value`` up to a blank line; MetaImage:
    ``Key = Value`` up to ElementDataFile) as {lower-case name: value text}; {} when the file
    does not start with ``first_line``. Reads at most 64 KiB."""
    with open(path, "rb") as handle:
        lines = handle.read(1 << 16).decode("latin-1").split("\n")
    if first_line is not None and not lines[0].startswith(first_line):
        return {}
    fields = {}
    for line in lines[1 if first_line else 0:]:
        line = line.rstrip("\r")
        if not line.strip():
            if first_line:  # NRRD: a blank line ends the header
                break
            continue
        if line.startswith("#") or separator not in line:
            continue
        name, value = line.split(separator, 1)
        if first_line and name.endswith(":"):  # NRRD key:=value pairs are free text
            continue
        fields[name.strip().lower()] = value.strip()
        if name.strip().lower() == "elementdatafile":
            break
    return fields


def check_nrrd_header(path: Path) -> None:
    """Refuse an NRRD whose 'spacings' or 'space directions' give a zero, negative or
    non-finite voxel size, or degenerate / sheared axes (ITK would flip, refuse with a
    cryptic message, or keep a sheared direction matrix)."""
    fields = _text_header(path, "NRRD", ":")
    try:
        dimension = int(fields.get("dimension", "3"))
    except ValueError:
        dimension = 3
    if "space directions" in fields:
        text = fields["space directions"]
        vectors = [token for token in re.findall(r"\([^)]*\)|none", text)]
        spatial = []
        for axis, token in enumerate(vectors):
            if token == "none":
                continue
            numbers = _header_numbers(token)
            if not numbers or not all(np.isfinite(numbers)):
                raise InputError(f"{path}: NRRD field 'space directions' gives axis {axis} "
                                 f"{token}: not finite numbers; fix the header")
            spatial.append(numbers)
        if spatial and len({len(v) for v in spatial}) == 1:
            _check_axes(path, "NRRD field 'space directions'", spatial)
    if "spacings" in fields:
        text = fields["spacings"]
        for token in text.split():
            value = _header_numbers(token)[0] if _header_numbers(token) else float("nan")
            if token.lower() == "nan" and dimension > 3:
                continue  # a non-spatial axis (e.g. vector components)
            if not (np.isfinite(value) and value > 0):
                raise InputError(f"{path}: NRRD field 'spacings' is '{text}': voxel sizes must be "
                                 "positive millimetres; fix the header")
    if "space origin" in fields and not all(np.isfinite(_header_numbers(fields["space origin"]))):
        raise InputError(f"{path}: NRRD field 'space origin' is '{fields['space origin']}': not "
                         "finite numbers; fix the header")


def check_metaimage_header(path: Path) -> None:
    """Refuse a MetaImage (.mha / .mhd) whose ElementSpacing is zero, negative or not finite
    (ITK would flip the axis or refuse with a cryptic message), or whose TransformMatrix is
    not finite, degenerate or sheared."""
    fields = _text_header(path, None, "=")
    for name, shown in (("elementspacing", "ElementSpacing"), ("elementsize", "ElementSize")):
        if name in fields:
            numbers = _header_numbers(fields[name])
            if not numbers or not all(np.isfinite(n) and n > 0 for n in numbers):
                raise InputError(f"{path}: MetaImage field {shown} is '{fields[name]}': voxel "
                                 "sizes must be positive millimetres; fix the header")
    for name in ("transformmatrix", "rotation", "orientation"):
        if name in fields:
            numbers = _header_numbers(fields[name])
            size = int(round(np.sqrt(len(numbers))))
            if size * size != len(numbers) or size == 0:
                raise InputError(f"{path}: MetaImage field {name} is '{fields[name]}': not a "
                                 "square matrix; fix the header")
            _check_axes(path, f"MetaImage field {name} ('{fields[name]}')",
                        np.asarray(numbers).reshape(size, size))
    for name in ("offset", "origin", "position"):
        if name in fields and not all(np.isfinite(_header_numbers(fields[name]))):
            raise InputError(f"{path}: MetaImage field {name} is '{fields[name]}': not finite "
                             "numbers; fix the header")


#: Bytes per voxel of the NIfTI-1 datatypes ITK reads (datatype code -> bytes).
_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4,
                1024: 8, 1280: 8, 1536: 16, 1792: 16, 2048: 32, 2304: 4}


@dataclass
class _NiftiHeader:
    """The fields of a NIfTI-1 header the reader checks (NIfTI's own RAS conventions)."""

    order: str  # struct byte order, "<" or ">"
    dims: tuple  # dim[0..7]
    datatype: int
    bitpix: int
    vox_offset: float
    pixdim: tuple  # pixdim[0] = qfac, pixdim[1..3] voxel sizes (mm)
    scl_slope: float
    scl_inter: float
    qform_code: int
    sform_code: int
    quatern: tuple  # (b, c, d)
    qoffset: tuple  # (x, y, z) mm
    srow: np.ndarray  # 3 x 4: srow_x, srow_y, srow_z (mm, RAS)
    nifti: bool  # magic n+1 / ni1 (else an Analyze header: no qform / sform)


def _nifti_header(handle) -> _NiftiHeader | None:
    """The NIfTI-1 header at the start of ``handle``, or None (NIfTI-2 or not NIfTI)."""
    header = handle.read(352)
    if len(header) < 348:
        return None
    for order in "<>":
        if struct.unpack(order + "i", header[:4])[0] == 348:
            return _NiftiHeader(
                order=order, dims=struct.unpack(order + "8h", header[40:56]),
                datatype=struct.unpack(order + "h", header[70:72])[0],
                bitpix=struct.unpack(order + "h", header[72:74])[0],
                vox_offset=struct.unpack(order + "f", header[108:112])[0],
                pixdim=struct.unpack(order + "8f", header[76:108]),
                scl_slope=struct.unpack(order + "f", header[112:116])[0],
                scl_inter=struct.unpack(order + "f", header[116:120])[0],
                qform_code=struct.unpack(order + "h", header[252:254])[0],
                sform_code=struct.unpack(order + "h", header[254:256])[0],
                quatern=struct.unpack(order + "3f", header[256:268]),
                qoffset=struct.unpack(order + "3f", header[268:280]),
                srow=np.array(struct.unpack(order + "12f", header[280:328]), float).reshape(3, 4),
                nifti=header[344:347] in (b"n+1", b"ni1"))
    return None


def check_nifti(path: Path, gzipped: bool) -> list:
    """Check a NIfTI-1 file before ITK reads it; return ``read_warnings`` entries.

    Refuses a file that is truncated or holds NaN / infinite voxels (ITK's NIfTI reader pads a
    truncated file and turns NaN into 0 HU without a word, which would put silent
    water-density voxels into the lungs; the raw data are streamed in blocks, no full copy in
    memory), and a header ITK would silently reinterpret (see :func:`_nifti_geometry`).
    """
    import gzip

    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rb") as handle:
            header = _nifti_header(handle)
            if header is None:
                return []  # NIfTI-2 or not NIfTI: SimpleITK decides
            warnings = _nifti_geometry(path, header)
            dims = header.dims
            voxels = int(np.prod([max(d, 1) for d in dims[1:dims[0] + 1]])) if 0 < dims[0] <= 7 else 0
            size = _NIFTI_BYTES.get(header.datatype, max(header.bitpix, 0) // 8)
            expected = voxels * size
            float_type = {16: "f4", 64: "f8"}.get(header.datatype)
            offset = header.vox_offset
            if not (np.isfinite(offset) and 0 <= offset < 2 ** 40):
                raise InputError(f"{path}: NIfTI vox_offset is {offset:g}: not a byte offset; the "
                                 "header is damaged: export the file again")
            handle.seek(int(offset))
            seen, bad, block = 0, 0, 1 << 24
            while seen < expected:
                data = handle.read(min(block, expected - seen))
                if not data:
                    break
                if float_type:
                    usable = len(data) - len(data) % size
                    values = np.frombuffer(data[:usable], dtype=header.order + float_type)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                seen += len(data)
    except (OSError, EOFError) as error:
        raise InputError(f"{path}: cannot be read as an image ({error}); check that the file is "
                         "complete") from None
    if seen < expected:
        raise InputError(f"{path}: truncated NIfTI ({seen} of {expected} data bytes); copy or "
                         "export the file again")
    if bad:
        raise InputError(f"{path}: {bad} voxels are NaN or infinite; fill or mask them (e.g. "
                         "with -1024 HU outside the field of view) and save again")
    return warnings


def _nifti_qform(header: _NiftiHeader) -> np.ndarray:
    """The qform as a 3 x 4 matrix (index i, j, k, 1 -> RAS mm), as niftilib builds it from
    the quaternion, qoffset, pixdim[1..3] (non-positive sizes taken as 1) and qfac."""
    b, c, d = (float(v) for v in header.quatern)
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:
        scale = 1.0 / np.sqrt(b * b + c * c + d * d)
        a, b, c, d = 0.0, b * scale, c * scale, d * scale
    else:
        a = np.sqrt(a)
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    sizes = [s if s > 0 else 1.0 for s in header.pixdim[1:4]]
    if header.pixdim[0] < 0:
        sizes[2] = -sizes[2]
    return np.column_stack([rotation * np.array(sizes), np.array(header.qoffset, float)])


def _nifti_geometry(path: Path, header: _NiftiHeader) -> list:
    """Refuse NIfTI geometry ITK would silently change; return warnings for what it replaces.

    Refused (InputError): voxel sizes pixdim[1..3] of the spatial axes that are zero,
    negative or not finite (ITK takes them as 1 mm); a negative scl_slope (inverted
    densities) or a non-finite scl_inter with a scale; non-finite qform / sform numbers; a
    sheared sform without a qform (ITK cannot read it).
    Warnings: ITK uses the sform when sform_code > 0 and its 3 x 3 part is orthonormal after
    removing the voxel sizes (within 1e-4, as ITK tests it) and scanner-based or the only
    form; otherwise it uses the qform. When that substitution moves the grid (more than 0.01 mm
    at a corner) the warning says so; and when the sform's voxel sizes differ from pixdim,
    which ITK uses for the spacing.
    """
    axes = min(max(header.dims[0], 1), 3) if 0 < header.dims[0] <= 7 else 3
    for i in range(1, axes + 1):
        size = header.pixdim[i]
        if not (np.isfinite(size) and size > 0):
            raise InputError(f"{path}: NIfTI pixdim[{i}] (voxel size along {'xyz'[i - 1]}) is "
                             f"{size:g}; voxel sizes must be positive millimetres: fix the header "
                             "and save again")
    slope, inter = header.scl_slope, header.scl_inter
    if np.isfinite(slope) and slope < 0:
        raise InputError(f"{path}: NIfTI scl_slope is {slope:g}; a negative scale would invert the "
                         "densities: fix the header (1 for HU stored as is) and save again")
    if np.isfinite(slope) and slope != 0 and not np.isfinite(inter):
        raise InputError(f"{path}: NIfTI scl_inter is {inter:g}; it needs a finite number of HU: "
                         "fix the header and save again")
    if not header.nifti:
        return []
    qform_used = header.qform_code > 0
    if qform_used and not all(np.isfinite(header.quatern + header.qoffset)):
        raise InputError(f"{path}: NIfTI qform (quatern / qoffset) holds NaN or infinite numbers; "
                         "fix the header and save again")
    if header.sform_code <= 0:
        return []
    sform = header.srow
    if not np.all(np.isfinite(sform)):
        raise InputError(f"{path}: NIfTI sform (srow_x / srow_y / srow_z) holds NaN or infinite "
                         "numbers; fix the header and save again")
    sizes = np.linalg.norm(sform[:, :3], axis=0)
    unit = sform[:, :3] / np.where(sizes > 0, sizes, 1.0)
    skew = float(np.max(np.abs(unit.T @ unit - np.eye(3))))  # cosines between the axes
    sheared = bool(np.any(sizes < 1e-9)) or skew > 1e-4
    corners = np.array([[i, j, k, 1.0] for i in (0, max(header.dims[1] - 1, 0))
                        for j in (0, max(header.dims[2] - 1, 0)) for k in (0, max(header.dims[3] - 1, 0))])
    if sheared and not qform_used:
        raise InputError(f"{path}: the NIfTI sform (srow_x / srow_y / srow_z) is sheared or "
                         "degenerate (its axes are not perpendicular) and there is no qform "
                         "(qform_code 0), so the grid cannot be represented: resample the image "
                         "onto an orthogonal grid and save again")
    if qform_used:
        moved = float(np.max(np.linalg.norm(corners @ (sform - _nifti_qform(header)).T, axis=1)))
        itk_takes_sform = not sheared and (header.sform_code == 1 or moved <= 1e-3)
        if not itk_takes_sform and moved > 0.01:
            if np.any(sizes < 1e-9):
                why = "is degenerate (an axis of zero length), which ITK cannot represent"
            elif sheared:
                angle = 90.0 - float(np.degrees(np.arccos(min(1.0, skew))))
                why = (f"is sheared (its axes are {angle:.1f} degrees off perpendicular), which "
                       "ITK cannot represent")
            else:
                why = f"has sform_code {header.sform_code} (not scanner-based)"
            return [f"the NIfTI sform (srow_x / srow_y / srow_z) {why}, so ITK used the qform "
                    f"(qform_code {header.qform_code}) instead: the geometry may differ from what "
                    f"the file's sform says (by up to {moved:.1f} mm at the volume's corners); "
                    "check the position, or resample the image onto an orthogonal grid"]
        if not itk_takes_sform:
            return []
    pixdim = np.array(header.pixdim[1:axes + 1], float)
    if np.any(np.abs(sizes[:axes] - pixdim) > 1e-3):
        return [f"the NIfTI sform's voxel sizes {plain_numbers(sizes[:axes])} mm differ from pixdim "
                f"{plain_numbers(pixdim)} mm; ITK used pixdim for the spacing: check the voxel size"]
    return []
