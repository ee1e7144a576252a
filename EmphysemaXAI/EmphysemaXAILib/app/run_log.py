"""The run's log: what the libraries say goes there, not to the user's terminal.

Nothing reaches the terminal that the project did not write. During a command
(:func:`library_messages_to_log`):

- file descriptor 2 (where C and C++ code writes: VTK's output window, ITK, fontconfig, the
  Dask workers this process starts) is the log file; the project writes its own lines to the
  terminal through ``sys.stderr``, which is a copy of the original standard error;
- Python ``logging`` at WARNING and above (slicer-core's ``Failed to save scene ...``,
  distributed, matplotlib's cache warning ...) goes to the log: a handler on the root logger,
  and any stream handler a library set up on the terminal stream is redirected to the log while
  the run lasts;
- ``warnings`` (torch, numpy, pydicom ...) are logged there once per place (``captureWarnings``).

The log is ``$TMPDIR/emphysema-xai-<uid>.log`` (one per user, appended by every run under a
header line naming the command; emptied when it passes :data:`MAX_LOG_BYTES`). A run whose
libraries said nothing takes its header out again, and removes the file when that leaves it
empty: a quiet run leaves nothing in the temporary folder. After an internal
error (exit 1) one more line names it when this run wrote to it. ``--debug`` leaves everything on
the terminal. Everything is put back on exit (the command line may run inside a test process).

:func:`usable_caches` makes the run work when the home folder is read-only: matplotlib gets a
private cache folder in ``$TMPDIR`` instead of warning and rebuilding its font cache every run.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

#: the log is emptied at the start of a run when it is larger than this
MAX_LOG_BYTES = 20 * 2**20


def log_path() -> Path:
    """``$TMPDIR/emphysema-xai-<uid>.log``: where the libraries' messages of every run go."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"emphysema-xai-{uid}.log"


class RunLog:
    """The open log of one run: ``path`` (None when it could not be opened: messages are dropped);
    ``before`` its size before this run's header line, ``start`` after it."""

    def __init__(self, path: Path | None, handle, start: int, before: int = 0) -> None:
        self.path, self.handle, self.start, self.before = path, handle, start, before

    def tidy(self) -> None:
        """After the run: a log this run only added its header to loses that header again, and is
        removed when nothing else is in it (a quiet run leaves nothing in the temporary folder)."""
        if self.path is None or self.wrote():
            return
        with suppress(OSError):
            if self.before == 0:
                self.path.unlink()
            else:
                os.truncate(self.path, self.before)

    def wrote(self) -> bool:
        """Whether anything was logged since this run's header line (by this run, or by another
        run of the same user at the same time: they share the file)."""
        if self.path is None:
            return False
        with suppress(OSError, ValueError):
            if not self.handle.closed:
                self.handle.flush()
        try:
            return self.path.stat().st_size > self.start
        except OSError:
            return False

    def finish(self, code: int) -> int:
        """``code``, after naming the log on the terminal when an internal error (1) ended a run
        whose libraries wrote to it."""
        if code == 1 and self.wrote():
            print(f"emphysema-xai: messages of the libraries during this run are in {self.path}", file=sys.stderr)
        return code


def _open_log(command: str):
    path = log_path()
    try:  # never through a symbolic link planted in a shared temporary folder
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        if os.fstat(fd).st_size > MAX_LOG_BYTES:
            os.ftruncate(fd, 0)
        before = os.fstat(fd).st_size
        handle = open(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        handle.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: emphysema-xai {command}\n")
        handle.flush()
        return RunLog(path, handle, path.stat().st_size, before)
    except OSError:  # no writable temporary folder: the libraries' messages are dropped
        return RunLog(None, open(os.devnull, "w"), 0)


def _stderr_fd() -> int | None:
    """2 when ``sys.stderr`` writes to file descriptor 2 (not a test's capture object)."""
    try:
        return 2 if sys.stderr.fileno() == 2 else None
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


@contextmanager
def library_messages_to_log(debug: bool = False, command: str = "") -> Iterator[RunLog]:
    """Route the libraries' messages to the run's log for the duration of a command (see the
    module's docstring); ``debug``: leave them on the terminal (warnings shown once per place)."""
    with warnings.catch_warnings(), usable_caches():
        if debug:
            warnings.simplefilter("default")
            yield RunLog(None, None, 0)
            return
        warnings.simplefilter("default")
        log = _open_log(command)
        original, fd = sys.stderr, _stderr_fd()
        terminal = original
        saved = None
        if fd is not None:
            original.flush()
            saved = os.dup(fd)
            terminal = io.TextIOWrapper(io.FileIO(saved, "w", closefd=False), encoding=original.encoding,
                                        errors="backslashreplace", line_buffering=True)
            os.dup2(log.handle.fileno(), fd)
            sys.stderr = terminal
        handler = logging.StreamHandler(log.handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        handler.setLevel(logging.WARNING)   # warnings and errors; not Dask's start-up chatter (INFO)
        root = logging.getLogger()
        root.addHandler(handler)
        captured = logging._warnings_showwarning is not None  # noqa: SLF001 - restore the caller's choice
        logging.captureWarnings(True)
        emit = logging.StreamHandler.emit

        def rerouted(self, record):
            # a library's handler made on the terminal stream (distributed's, basicConfig's) logs to the run's log
            if self is not handler and self.stream in (terminal, original) and type(self) is logging.StreamHandler:
                self.stream, kept = log.handle, self.stream
                try:
                    return emit(self, record)
                finally:
                    self.stream = kept
            return emit(self, record)

        logging.StreamHandler.emit = rerouted
        try:
            yield log
        finally:
            logging.StreamHandler.emit = emit
            if not captured:
                logging.captureWarnings(False)
            root.removeHandler(handler)
            if saved is not None:
                with suppress(OSError, ValueError):
                    terminal.flush()
                os.dup2(saved, fd)
                os.close(saved)
                sys.stderr = original
            with suppress(OSError, ValueError):
                log.handle.close()
            log.tidy()


@contextmanager
def usable_caches() -> Iterator[None]:
    """Give matplotlib a writable config / cache folder when its default one (under the home
    folder) is not writable: ``MPLCONFIGDIR`` = ``$TMPDIR/emphysema-xai-matplotlib-<uid>`` for the
    run (kept between runs, so its font cache is built once). Put back on exit."""
    previous = os.environ.get("MPLCONFIGDIR")
    if previous is None and not _matplotlib_dir_writable():
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        folder = Path(tempfile.gettempdir()) / f"emphysema-xai-matplotlib-{uid}"
        with suppress(OSError):
            folder.mkdir(mode=0o700, exist_ok=True)
            if os.access(folder, os.W_OK) and not folder.is_symlink():
                os.environ["MPLCONFIGDIR"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MPLCONFIGDIR", None)


def _matplotlib_dir_writable() -> bool:
    """Whether matplotlib's default config folder ($XDG_CONFIG_HOME or ~/.config /matplotlib)
    exists and is writable, or can be created."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    folder = Path(base) / "matplotlib"
    try:
        if folder.is_dir():
            return os.access(folder, os.W_OK | os.X_OK) and _can_write_in(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return True
    except OSError:
        return False


def _can_write_in(folder: Path) -> bool:
    """os.access says yes to root on a read-only file system; try it."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
