"""Signals that end a run: SIGTERM and SIGHUP become :class:`Terminated` (like Ctrl-C's
KeyboardInterrupt), so every ``finally`` / atomic writer cleans up and nothing is left
behind; :func:`signals_deferred` holds signals back while renames and clean-up run."""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


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


def _stop_signals() -> list:
    return [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]


@contextmanager
def signal_handlers() -> Iterator[None]:
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
def signals_deferred() -> Iterator[None]:
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


def pid_file_of(stop_file) -> Path:
    """Where a run watching ``stop_file`` writes its process id (``<stop file>.pid``): the GUI
    that launched it through a launcher (Slicer's ``PythonSlicer``) learns the real interpreter's
    pid there, and waits for that process, not only the launcher, before it removes the folder."""
    stop = Path(stop_file)
    return stop.with_name(stop.name + ".pid")


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` is still running (an exited process that its parent has not yet
    reaped counts as gone: Linux /proc tells; Windows: its exit code is not STILL_ACTIVE)."""
    if not pid or pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        kernel = ctypes.windll.kernel32
        handle = kernel.OpenProcess(0x1000, False, int(pid))      # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            return bool(kernel.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259
        finally:
            kernel.CloseHandle(handle)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"      # Z: a zombie has exited
    except OSError:
        return True


def watch_stop_file(path, grace_s: float = 1.2, interval_s: float = 0.1, parent_pid: int | None = None
                    ) -> threading.Thread:
    """Stop this process when the file ``path`` appears (how a GUI cancels a run it launched, even
    through a launcher process), when the process that started it exits (a launcher killed, the
    run orphaned), or when ``parent_pid`` (the GUI) has exited: a daemon thread sends SIGTERM to
    the process (handled like any SIGTERM: :class:`Terminated`, clean-up, exit code 143) and, if
    the process is still alive ``grace_s`` seconds later (the main thread stuck in one long
    native call), exits it hard with code 143. Writes this process's id to
    :func:`pid_file_of` ``(path)`` first (removed again when the process ends normally). Returns
    the thread (already started)."""
    import atexit
    import time

    stop = Path(path)
    pid_file = pid_file_of(stop)
    try:
        pid_file.write_text(str(os.getpid()), encoding="ascii")
        # gone when this process ends normally (a SIGTERM included): a later Cancel never signals
        # a process that has since reused the pid
        atexit.register(pid_file.unlink, missing_ok=True)
    except OSError:
        pass
    launcher = os.getppid()

    def orphaned() -> bool:
        if os.name == "nt":   # Windows keeps the parent's id after it died: ask whether it runs
            return not pid_alive(launcher) or (parent_pid is not None and not pid_alive(parent_pid))
        return os.getppid() != launcher or (parent_pid is not None and not pid_alive(parent_pid))

    def watch():
        if hasattr(signal, "pthread_sigmask"):  # the signal goes to the main thread, which honours deferral
            signal.pthread_sigmask(signal.SIG_BLOCK, set(_stop_signals()) | {signal.SIGINT})
        while not stop.exists() and not orphaned():
            time.sleep(interval_s)
        if hasattr(signal, "pthread_sigmask"):
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            signal.raise_signal(signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(128 + int(signal.SIGTERM))

    thread = threading.Thread(target=watch, name="stop-file watchdog", daemon=True)
    thread.start()
    return thread
