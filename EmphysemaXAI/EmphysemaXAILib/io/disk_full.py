"""Is the disk full? Turning a failed write into :class:`~EmphysemaXAILib.errors.DiskFullError`.

A write on a full disk (or over the user's quota) fails in many shapes: an ``OSError`` with
errno ENOSPC / EDQUOT (Python's own writes), the same wrapped in another exception (pydicom:
``OSError("With tag (5200,9230) got exception: [Errno 28] ...")``), or a library's error that
names no errno at all (ITK: "couldn't write gzip data"; Slicer's scene writer only returns
False). :func:`disk_full_reason` recognises the first two by errno or text
(:func:`~EmphysemaXAILib.errors.disk_full_errno`), the last by looking at the folder written
into: almost no free space left there, or a small probe file that cannot be written.
The atomic writers (:mod:`.atomic`) ask it before removing their temporary files (which still
hold the space the failed write took).
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from ..errors import DISK_FULL_ERRNOS, DiskFullError, EmphysemaXAIError, disk_full_errno

#: below this many free bytes (for this user) a file system counts as full
FULL_BELOW_BYTES = 1 << 20
#: the size of the probe file written to tell a full disk (or quota) from another failure
PROBE_BYTES = 64 << 10


def _existing(folder) -> Path | None:
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path if path.is_dir() else None


def disk_full_at(folder, need_bytes: int = 0) -> int | None:
    """ENOSPC when the file system of ``folder`` (or of its nearest existing parent) has less than
    FULL_BELOW_BYTES (or ``need_bytes``, what the failed write needed at most) free for this
    user, or ENOSPC / EDQUOT when a PROBE_BYTES file cannot be written there (a full quota shows
    no shortage in ``statvfs``); None otherwise."""
    place = _existing(folder)
    if place is None:
        return None
    try:
        stats = os.statvfs(place)
        if stats.f_bavail * stats.f_frsize < max(FULL_BELOW_BYTES, need_bytes):
            return errno.ENOSPC
    except (OSError, AttributeError):
        pass
    probe = None
    try:
        handle, probe = tempfile.mkstemp(prefix=".emphysema-xai-space-", dir=place)
        with os.fdopen(handle, "wb") as file:
            file.write(b"\0" * PROBE_BYTES)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        return error.errno if error.errno in DISK_FULL_ERRNOS else None
    finally:
        if probe is not None:
            try:
                os.unlink(probe)
            except OSError:
                pass
    return None


def disk_full_reason(error: BaseException, where=None) -> int | None:
    """ENOSPC / EDQUOT when ``error`` means the disk is full: said by the error (errno, wrapped
    errors, text), or, for an error of a library that does not say why it failed, seen in the
    folder ``where`` it was writing into (:func:`disk_full_at`). Never for a signal or Ctrl-C,
    nor for the project's own one-line errors other than :class:`DiskFullError`."""
    if not isinstance(error, Exception):
        return None
    code = disk_full_errno(error)
    if code is not None:
        return code
    if isinstance(error, EmphysemaXAIError) or where is None:
        return None
    return disk_full_at(where)


def as_disk_full(error: BaseException, path=None, where=None) -> DiskFullError | None:
    """A :class:`DiskFullError` for ``error`` naming ``path`` (default: the file the error names),
    or None when the disk is not full (:func:`disk_full_reason`)."""
    code = disk_full_reason(error, where)
    if code is None:
        return None
    named = _named_file(error)
    if path is None or (named is not None and where is not None and not _within(named, where)
                        and not _within(named, path)):
        path = named or path   # a file elsewhere (e.g. the scratch folder) filled its own disk
    detail = error.detail if isinstance(error, DiskFullError) and path == error.path else None
    return DiskFullError(path, code, detail)


def _named_file(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        name = getattr(error, "filename", None) or getattr(error, "path", None)
        if isinstance(name, (str, bytes, os.PathLike)) and name:
            return os.fsdecode(name)
        error = error.__cause__ or error.__context__
    return None


def _within(path, folder) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents
