"""Write outputs so that no run ever loses the user's data or leaves anything half-written.

``atomic_folder(out)`` yields a temporary folder beside ``out`` and, when the block succeeds,
renames it onto ``out``; when the block fails (error, Ctrl-C, SIGTERM / SIGHUP turned into
:class:`Terminated`), the temporary folder is removed and ``out`` is untouched.
``write_atomic(path, write)`` / ``write_files_atomic({path: write})`` do the same for files.
The final renames never delete first: an output being replaced is moved aside, the new one is
renamed in, and only then is the old one removed; a target that appeared meanwhile is replaced
only when overwriting was asked for (else :class:`InputError`). Signals are held back during
these renames and during clean-up, so a second signal cannot interrupt them half-way.

Front ends claim their outputs before any work (:func:`claim_outputs`): every output is
checked against every input (an output that is, contains or lies inside an input is refused,
after resolving symbolic links, whatever ``--overwrite`` says), against the other outputs,
for its type (file vs folder), for existence (refused without ``--overwrite``) and for
writability; then an exclusive lock (``.<name>.lock`` beside the output, ``fcntl.flock``,
non-blocking) is taken for the whole run, so a second run writing the same output stops at
once with exit code 2 and the first run's results stay intact.

Folders and files are created with the user's normal permissions (``0o777 & ~umask`` and
``0o666 & ~umask``), not the 0700 / 0600 of :mod:`tempfile`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the other checks still apply
    fcntl = None

#: resolved output path -> whether it may be replaced (set by :func:`claim_outputs`).
_CLAIMS: dict = {}
_UMASK_LOCK = threading.Lock()


class Terminated(BaseException):
    """The run was stopped by a signal (SIGTERM, SIGHUP): like KeyboardInterrupt, it is not an
    ``Exception``, so "record the failure and go on" handlers never swallow it."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        self.name = name
        super().__init__(f"stopped by {name}")


# --------------------------------------------------------------------------- signals

def _stop_signals() -> list:
    return [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]


@contextmanager
def signal_handlers():
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (once: a repeated signal
    while the run is cleaning up is ignored, so the clean-up finishes). A signal the process
    ignores (``nohup``) stays ignored. Restores the previous handlers afterwards. A no-op
    outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = []

    def handler(signum, frame):
        if stopping:
            return
        stopping.append(signum)
        raise Terminated(signum)

    previous = {}
    for signum in _stop_signals():
        try:
            if signal.getsignal(signum) == signal.SIG_IGN:
                continue
            previous[signum] = signal.signal(signum, handler)
        except (OSError, ValueError):
            pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            try:
                signal.signal(signum, old if old is not None else signal.SIG_DFL)
            except (OSError, ValueError):
                pass


@contextmanager
def signals_deferred():
    """Hold SIGINT, SIGTERM and SIGHUP back during the block (renames, clean-up); a signal that
    arrived meanwhile is delivered when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, *_stop_signals()}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


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


def _empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def _may_replace(out: Path, overwrite) -> bool:
    """Whether an existing ``out`` may be replaced: ``overwrite`` when given, else what the
    front end's claim says, else whether it existed when writing started (the caller chose)."""
    if overwrite is not None:
        return bool(overwrite)
    if out in _CLAIMS:
        return _CLAIMS[out]
    return os.path.lexists(out)


def _appeared(out: Path) -> InputError:
    return InputError(f"{out} appeared while this run was writing it (another program wrote there); "
                      "it was left as it is: choose another output or pass --overwrite")


def _install(new: Path, out: Path, replace: bool) -> None:
    """Rename ``new`` onto ``out``. An existing ``out`` is replaced only when ``replace`` (or
    when it is an empty folder): moved aside first, removed only once ``new`` is in place."""
    try:
        rename_noreplace(new, out)
        return
    except FileExistsError:
        if not (replace or _empty_dir(out)):
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
def atomic_folder(out, overwrite=None):
    """Yield a temporary folder that becomes ``out`` when the block succeeds.

    ``overwrite``: whether an existing ``out`` may be replaced (None: as claimed by the front
    end, else only when it existed when the block started, i.e. the caller decided). The old
    folder is moved aside and removed after the new one is in place, never before.
    """
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    replace = _may_replace(out, overwrite)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        _normal_mode(work, folder=True)
        yield work
        with signals_deferred():
            _install(work, out, replace)
    except BaseException:
        with signals_deferred():
            shutil.rmtree(work, ignore_errors=True)
        raise


def write_files_atomic(writers: dict, overwrite=None) -> None:
    """``{path: write}``: call every ``write(tmp_path)`` into temporary files beside the paths,
    then rename them all onto their paths (all or none: a failure removes every temporary
    file). ``overwrite`` as for :func:`atomic_folder`; an existing file is replaced in one
    rename (``os.replace``), so the old content stays whole until the new one is complete."""
    plan = []
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
    except BaseException:
        with signals_deferred():
            for _path, tmp, _replace in plan:
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass
        raise


def write_atomic(path, write, overwrite=None) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (see :func:`write_files_atomic`)."""
    write_files_atomic({path: write}, overwrite=overwrite)


# --------------------------------------------------------------------------- claims

@dataclass(frozen=True)
class Output:
    """One output of a command: the option that names it, the path, ``folder`` or ``file``, and
    whether a run replaces it as a whole (False: files are added inside it, e.g. batch)."""

    flag: str
    path: object
    kind: str = "folder"
    whole: bool = True


def _resolve(path) -> Path:
    return Path(os.path.abspath(os.fspath(path))).resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and parent in child.parents


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def companion_files(path: Path) -> list:
    """Data files an image header names (``.mhd`` ElementDataFile, ``.nhdr`` data file):
    inputs too, although the user named only the header."""
    name = path.name.lower()
    if not (name.endswith(".mhd") or name.endswith(".nhdr")) or not path.is_file():
        return []
    try:
        text = path.read_bytes()[:65536].decode("latin-1")
    except OSError:
        return []
    found = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        key, sep, value = line.partition("=" if name.endswith(".mhd") else ":")
        key = key.strip().lower().replace(" ", "")
        if not sep or key not in ("elementdatafile", "datafile", "data_file"):
            continue
        value = value.strip().lstrip("=").strip()
        if value.upper().startswith("LIST"):
            found += [path.parent / item.strip() for item in lines[index + 1:] if item.strip()]
        elif "%" in value or value.upper() == "LOCAL":
            found.append(path.parent)  # numbered file pattern: the whole folder
        elif value:
            target = Path(value.split()[0])
            found.append(target if target.is_absolute() else path.parent / target)
    return found


def _input_entries(inputs) -> list:
    """(label, resolved path, may-contain-outputs) of every given input and its companions,
    and the program's own folder (its code and shipped model: never replaced)."""
    entries = [("the program's own folder", Path(__file__).resolve().parent, True)]
    for item in inputs:
        if item is None:
            continue
        if isinstance(item, (str, os.PathLike)):
            item = ("the input", item)
        label, path, *rest = item
        if path is None or path == "":
            continue
        nested_ok = bool(rest and rest[0])
        resolved = _resolve(path)
        entries.append((label, resolved, nested_ok))
        for companion in companion_files(resolved):
            entries.append((f"the data file of {label}", _resolve(companion), False))
    return entries


def _protected() -> list:
    """Folders an output must never replace or contain: the current folder, the home folder."""
    places = []
    try:
        places.append(("the current folder", _resolve(os.getcwd())))
    except OSError:
        pass
    home = os.path.expanduser("~")
    if home and home != "~":
        places.append(("your home folder", _resolve(home)))
    return places


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def check_outputs(inputs, outputs, overwrite: bool = False, *, allow_empty: bool = False) -> list:
    """Refuse (InputError, before any work) outputs that would lose the user's data.

    Args:
        inputs: paths, or ``(label, path)`` / ``(label, path, outputs_may_lie_inside)``
            tuples (None entries skipped); header files bring their data files along.
        outputs: :class:`Output` items (or ``(flag, path, kind)`` tuples).
        overwrite: an existing output may be replaced (never an input, never a folder that
            holds the current or the home folder).
        allow_empty: an existing empty folder counts as absent (phantom, embed --preview).
    Returns:
        The resolved output paths, in order.
    """
    entries = _input_entries(inputs)
    outputs = [o if isinstance(o, Output) else Output(*o) for o in outputs if o is not None]
    outputs = [o for o in outputs if o.path is not None]
    for output in outputs:
        if not os.fspath(output.path).strip():
            raise InputError(f"{output.flag or 'the output'} is an empty path: give a "
                             f"{'folder' if output.kind == 'folder' else 'file'} path")
    resolved = [_resolve(o.path) for o in outputs]
    for index, (output, out) in enumerate(zip(outputs, resolved)):
        noun = "folder" if output.kind == "folder" else "file name"
        flag = f"{output.flag} " if output.flag else ""
        for label, path, nested_ok in entries:
            if _same(out, path):
                relation = "is"
            elif _inside(path, out):
                relation = "contains"
            elif _inside(out, path) and not nested_ok and path.is_dir():
                relation = "lies inside"
            else:
                continue
            what = f"the {label} input" if label.startswith("--") else label
            raise InputError(f"{flag}{out} {relation} {what} {path}: outputs never overlap inputs; "
                             f"choose another {noun}")
        for other, other_out in zip(outputs[:index], resolved[:index]):
            if out == other_out or _inside(out, other_out) or _inside(other_out, out):
                raise InputError(f"{flag}{out} and {other.flag} {other_out} overlap: give each output "
                                 "its own path")
        for label, place in _protected() if output.whole else ():
            if out == place or _inside(place, out):
                raise InputError(f"{flag}{out} {'is' if out == place else 'contains'} {label}: "
                                 f"writing there would replace it; choose a new {noun} inside it instead")
        if out == Path(out.anchor):
            raise InputError(f"{flag}{out} is the root of the file system: choose a new {noun}")
        exists = os.path.lexists(out)
        if exists and output.kind == "folder" and not out.is_dir():
            raise InputError(f"{flag}{out} is a file, not a folder: give a folder path "
                             "(a file is never replaced by a folder)")
        if exists and output.kind == "file" and out.is_dir():
            raise InputError(f"{flag}{out} is a folder, not a file: give a file path")
        if exists and not overwrite and not (allow_empty and _empty_dir(out)):
            raise InputError(f"{out} exists: choose another {noun} or pass --overwrite")
        base = _nearest_existing(out.parent)
        if not base.is_dir():
            raise InputError(f"cannot write {out}: {base} is a file, not a folder; choose another {noun}")
        if not os.access(base, os.W_OK | os.X_OK):
            raise InputError(f"cannot write {out}: {base} is not writable (permission denied or "
                             f"read-only); choose another {noun}")
    return resolved


class _Lock:
    """An exclusive, non-blocking ``flock`` on ``.<name>.lock`` beside an output."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out.parent / f".{out.name}.lock"
        self.fd = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            except OSError as error:
                raise InputError(f"cannot write {self.out}: no file can be created in {self.path.parent} "
                                 f"({error.strerror}); choose another output") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise InputError(f"another run is writing {self.out} (it holds {self.path}): wait "
                                     "until it has finished or choose another output") from None
                raise
            try:
                mine, now = os.fstat(fd), os.stat(self.path)
                same = (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)  # the holder removed the file meanwhile: lock the new one

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def _make_folders(folder: Path, out: Path) -> list:
    """Create ``folder`` (the parent of ``out``) and missing parents; return those created
    (deepest last)."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            for done in reversed(created):
                try:
                    done.rmdir()
                except OSError:
                    pass
            raise InputError(f"cannot write {out}: the folder {path} cannot be created ({error.strerror}); "
                             "choose another output") from None
        created.append(path)
    return created


@contextmanager
def claim_outputs(inputs, outputs, overwrite: bool = False, *, allow_empty: bool = False):
    """Check the outputs (:func:`check_outputs`), then lock each of them for the block; the
    atomic writers inside replace an existing output only when ``overwrite``. On leaving, the
    locks are released and removed, and folders created only to hold them (when nothing was
    written into them) are removed. Yields the resolved output paths."""
    resolved = check_outputs(inputs, outputs, overwrite, allow_empty=allow_empty)
    locks, created = [], []
    try:
        for out in resolved:
            created += _make_folders(out.parent, out)
            lock = _Lock(out)
            lock.acquire()
            locks.append(lock)
        for out in resolved:
            _CLAIMS[out] = bool(overwrite)
        yield resolved
    finally:
        with signals_deferred():
            for out in resolved:
                _CLAIMS.pop(out, None)
            for lock in reversed(locks):
                lock.release()
            for folder in reversed(created):
                try:
                    folder.rmdir()
                except OSError:
                    pass
