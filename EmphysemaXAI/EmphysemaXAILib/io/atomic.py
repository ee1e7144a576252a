"""Write outputs so that no run ever loses the user's data or leaves anything half-written.

``atomic_folder(out)`` yields a temporary folder beside ``out`` and, when the block succeeds,
renames it onto ``out``; when the block fails (error, Ctrl-C, SIGTERM / SIGHUP turned into
:class:`Terminated`), the temporary folder is removed and ``out`` is untouched.
``write_atomic(path, write)`` / ``write_files_atomic({path: write})`` do the same for files.
A write that fails because the disk (or the quota) is full becomes one
:class:`~EmphysemaXAILib.errors.DiskFullError` naming the output (:mod:`.disk_full`), after the
temporary files are removed.
The final renames never delete first: an output being replaced is moved aside, the new one is
renamed in, and only then is the old one removed; a target that appeared meanwhile is replaced
only when overwriting was asked for (else :class:`InputError`). Signals are held back during
these renames and during clean-up, so a second signal cannot interrupt them half-way.

Front ends claim their outputs before any work (:mod:`.outputs`: overlap with inputs, type,
existence, writability, a lock); signals that end a run are :mod:`.signals`.

Folders and files are created with the user's normal permissions (``0o777 & ~umask`` and
``0o666 & ~umask``), not the 0700 / 0600 of :mod:`tempfile`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .disk_full import as_disk_full
from .signals import signals_deferred

if TYPE_CHECKING:
    from collections.abc import Iterator

#: resolved output path -> whether it may be replaced (set by :func:`.outputs.claim_outputs`).
CLAIMS: dict = {}
_UMASK_LOCK = threading.Lock()


# --------------------------------------------------------------------------- permissions, renames

def current_umask() -> int:
    """The process umask (read without changing it where the system allows)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def _normal_mode(path, folder: bool) -> None:
    """Give a folder from mkdtemp / a file from mkstemp the user's normal permissions."""
    try:
        os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())
    except OSError:
        pass


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_renameat2 = None


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        function = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            function = getattr(libc, "renameat2", False)
            if function:
                function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
                function.restype = ctypes.c_int
        except (OSError, AttributeError):
            function = False
        _renameat2 = function
    return _renameat2


def rename_noreplace(src, dst) -> None:
    """Rename ``src`` to ``dst``; raise FileExistsError when ``dst`` exists (atomically where
    the system offers it: renameat2(RENAME_NOREPLACE), else link + unlink for files)."""
    src, dst = os.fspath(src), os.fspath(dst)
    function = _libc_renameat2()
    if function:
        if function(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(code, os.strerror(code), dst)
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            raise OSError(code, os.strerror(code), src)
    if not os.path.isdir(src) or os.path.islink(src):
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileExistsError:
            raise
        except OSError:
            pass  # no hard links on this file system
        else:
            os.unlink(src)
            return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    try:
        os.rename(src, dst)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(error.errno, error.strerror, dst) from None
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def refuse_existing(out: Path, overwrite: bool, *, allow_empty: bool = False, noun: str = "folder",
                    hint: str | None = None) -> None:
    """The one rule for an output path that exists: refused (InputError) unless ``overwrite``;
    with ``allow_empty`` an empty folder counts as free. ``hint`` replaces the default advice."""
    if os.path.lexists(out) and not overwrite and not (allow_empty and empty_dir(Path(out))):
        advice = hint or f"choose another {noun} or pass overwrite=True (--overwrite)"
        raise InputError(f"{out} exists{' and is not empty' if allow_empty and Path(out).is_dir() else ''}: {advice}")


def _may_replace(out: Path, overwrite) -> bool:
    """Whether an existing ``out`` may be replaced: ``overwrite`` when given, else what the
    front end's claim says, else whether it existed when writing started (the caller chose)."""
    if overwrite is not None:
        return bool(overwrite)
    if out in CLAIMS:
        return CLAIMS[out]
    return os.path.lexists(out)


def _appeared(out: Path) -> InputError:
    return InputError(f"{out} appeared while this run was writing it (another program wrote there); "
                      "it was left as it is: choose another output or pass overwrite=True (--overwrite)")


def _install(new: Path, out: Path, replace: bool) -> None:
    """Rename ``new`` onto ``out``. An existing ``out`` is replaced only when ``replace`` (or
    when it is an empty folder): moved aside first, removed only once ``new`` is in place."""
    try:
        rename_noreplace(new, out)
        return
    except FileExistsError:
        if not (replace or empty_dir(out)):
            raise _appeared(out) from None
    while True:
        aside = Path(tempfile.mktemp(prefix=f".{out.name}-old-", dir=out.parent))
        try:
            rename_noreplace(out, aside)
            break
        except FileExistsError:
            continue
    try:
        rename_noreplace(new, out)
    except BaseException:
        try:
            os.rename(aside, out)
        except OSError:
            pass
        raise
    _remove(aside)


# --------------------------------------------------------------------------- atomic writers

@contextmanager
def atomic_folder(out, overwrite=None) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` when the block succeeds.

    ``overwrite``: whether an existing ``out`` may be replaced (None: as claimed by the front
    end, else only when it existed when the block started, i.e. the caller decided). The old
    folder is moved aside and removed after the new one is in place, never before.
    """
    out = Path(out).resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    except OSError as error:
        _raise_if_disk_full(error, out, None)
        raise
    replace = _may_replace(out, overwrite)
    try:
        _normal_mode(work, folder=True)
        yield work
        with signals_deferred():
            _install(work, out, replace)
    except BaseException as error:
        full = as_disk_full(error, out, work)  # asked before the clean-up frees the space taken
        with signals_deferred():
            shutil.rmtree(work, ignore_errors=True)
        if full is not None:
            raise full from error
        raise


def write_files_atomic(writers: dict, overwrite=None) -> None:
    """``{path: write}``: call every ``write(tmp_path)`` into temporary files beside the paths,
    then rename them all onto their paths (all or none: a failure removes every temporary
    file). ``overwrite`` as for :func:`atomic_folder`; an existing file is replaced in one
    rename (``os.replace``), so the old content stays whole until the new one is complete."""
    plan, path = [], None
    try:
        for path, write in writers.items():
            path = Path(path).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            replace = _may_replace(path, overwrite)
            suffix = "".join(path.suffixes) or ".tmp"
            handle, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=suffix, dir=path.parent)
            os.close(handle)
            plan.append((path, Path(tmp), replace))
            _normal_mode(tmp, folder=False)
            write(Path(tmp))
        with signals_deferred():
            for path, _tmp, replace in plan:
                if not replace and os.path.lexists(path):
                    raise _appeared(path)
            for path, tmp, replace in plan:
                if replace:
                    os.replace(tmp, path)
                else:
                    try:
                        rename_noreplace(tmp, path)
                    except FileExistsError:
                        raise _appeared(path) from None
    except BaseException as error:
        full = as_disk_full(error, path, Path(path).parent) if path is not None else None
        with signals_deferred():
            for _path, tmp, _replace in plan:
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass
        if full is not None:
            raise full from error
        raise


def _raise_if_disk_full(error: BaseException, out: Path, where) -> None:
    full = as_disk_full(error, out, where)
    if full is not None:
        raise full from error


def write_atomic(path, write, overwrite=None) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (see :func:`write_files_atomic`)."""
    write_files_atomic({path: write}, overwrite=overwrite)
