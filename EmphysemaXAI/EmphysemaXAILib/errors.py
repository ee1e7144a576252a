"""Exceptions that carry a one-line, user-facing message.

The command line turns :class:`InputError` into exit code 2, :class:`ExcludedError` into exit
code 3 and :class:`DiskFullError` (the disk or the user's quota is full: ENOSPC, EDQUOT) into
exit code 4 (see ``docs/contracts.md``); anything else is an internal error (exit 1).
"""
from __future__ import annotations

import errno
import os


class EmphysemaXAIError(Exception):
    """Base class of the project's own errors; ``str(error)`` is one line for the user."""


class InputError(EmphysemaXAIError, ValueError):
    """The input cannot be read or used: the message says what is wrong and what to do."""


class MissingPackage(InputError):
    """A Python package that an explicitly chosen feature needs is not installed (``package``
    names it; the message says what to install or choose instead)."""

    def __init__(self, package: str, message: str):
        super().__init__(message)
        self.package = package


class ExcludedError(EmphysemaXAIError):
    """Quality control excluded the case: analysis is impossible (message gives the reason)."""


#: the errno values that mean "the disk is full": no space left on the device, quota exceeded
DISK_FULL_ERRNOS = tuple(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)


class DiskFullError(EmphysemaXAIError):
    """An output could not be written because its disk (or the user's quota there) is full.
    ``path`` is the output, ``errno`` ENOSPC or EDQUOT; ``detail`` (optional) says what the run
    did about it (e.g. what a batch kept), ``again`` how to go on. Not an InputError: the input
    and options were fine."""

    def __init__(self, path, code: int = errno.ENOSPC, detail: str | None = None, again: str = "run again"):
        self.path = os.fspath(path) if path is not None else None
        self.errno = code if code in DISK_FULL_ERRNOS else errno.ENOSPC
        self.detail = detail
        self.again = again
        super().__init__(self.message())

    def __reduce__(self):  # pickled whole (a Dask worker sends it back to the client)
        return (type(self), (self.path, self.errno, self.detail, self.again))

    def message(self) -> str:
        quota = self.errno != errno.ENOSPC
        where = os.path.dirname(self.path.rstrip(os.sep)) if self.path else None
        why = ("the disk is full (disk quota exceeded" if quota else "the disk is full (no space left on device")
        why += f" in {where})" if where else ")"
        head = f"cannot write {self.path}: {why}" if self.path else why
        tail = self.detail or "unfinished files were removed and earlier outputs kept"
        return f"{head}; {tail}: free some space there or choose a folder on another disk, then {self.again}"


def disk_full_errno(error: BaseException | None) -> int | None:
    """ENOSPC or EDQUOT when ``error`` (or an exception it was raised from or during: pydicom
    re-raises an OSError as another OSError "With tag ... got exception: [Errno 28] ...") says
    the disk is full; None otherwise. By errno first, by the "[Errno 28]" text as a last resort."""
    seen, chain = set(), []
    while error is not None and id(error) not in seen and len(chain) < 20:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    for item in chain:
        code = getattr(item, "errno", None)
        if isinstance(item, (OSError, DiskFullError)) and code in DISK_FULL_ERRNOS:
            return code
    for item in chain:
        text = str(item)
        for code in DISK_FULL_ERRNOS:
            if f"[Errno {code}]" in text or os.strerror(code) in text:
                return code
    return None


def plain_numbers(values, digits: int = 4) -> str:
    """(0.7, 0, 1.5) as plain text for messages: never numpy reprs such as np.float64(0.7);
    ``digits=0`` prints integers."""
    if digits == 0:
        return "(" + ", ".join(str(int(v)) for v in values) + ")"
    return "(" + ", ".join(f"{round(float(v), digits):g}" for v in values) + ")"
