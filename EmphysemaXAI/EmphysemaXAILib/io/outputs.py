"""Claims on outputs, taken by the front ends before any work (:func:`claim_outputs`).

Every output is checked against every input (an output that is, contains or lies inside an
input is refused, after resolving symbolic links, whatever ``--overwrite`` says), against the
other outputs, for its type (file vs folder), for existence (refused without ``--overwrite``)
and for writability; then an exclusive lock (``.<name>.lock`` beside the output,
``fcntl.flock``, non-blocking) is held for the whole run, so a second run writing the same
output stops at once with exit code 2 and the first run's results stay intact. The atomic
writers (:mod:`.atomic`) replace an existing output only when the claim allows it.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DISK_FULL_ERRNOS, DiskFullError, InputError
from .atomic import CLAIMS, refuse_existing
from .signals import signals_deferred

if TYPE_CHECKING:
    from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the other checks still apply
    fcntl = None


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
        refuse_existing(out, overwrite, allow_empty=allow_empty, noun=noun)
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
                if error.errno in DISK_FULL_ERRNOS:
                    raise DiskFullError(self.out, error.errno, "nothing was written") from None
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
            if error.errno in DISK_FULL_ERRNOS:
                raise DiskFullError(out, error.errno, "nothing was written") from None
            raise InputError(f"cannot write {out}: the folder {path} cannot be created ({error.strerror}); "
                             "choose another output") from None
        created.append(path)
    return created


@contextmanager
def claim_outputs(inputs, outputs, overwrite: bool = False, *, allow_empty: bool = False) -> Iterator[list]:
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
            CLAIMS[out] = bool(overwrite)
        yield resolved
    finally:
        with signals_deferred():
            for out in resolved:
                CLAIMS.pop(out, None)
            for lock in reversed(locks):
                lock.release()
            for folder in reversed(created):
                try:
                    folder.rmdir()
                except OSError:
                    pass
