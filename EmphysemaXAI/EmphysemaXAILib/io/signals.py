"""Signals that end a run: SIGTERM and SIGHUP become :class:`Terminated` (like Ctrl-C's
KeyboardInterrupt), so every ``finally`` / atomic writer cleans up and nothing is left
behind; :func:`signals_deferred` holds signals back while renames and clean-up run."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
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


def watch_stop_file(path, grace_s: float = 1.2, interval_s: float = 0.1) -> threading.Thread:
    """Stop this process when the file ``path`` appears (how a GUI cancels a run it launched, even
    through a launcher process): a daemon thread sends SIGTERM to the process (handled like any
    SIGTERM: :class:`Terminated`, clean-up, exit code 143) and, if the process is still alive
    ``grace_s`` seconds later (the main thread stuck in one long native call), exits it hard
    with code 143. Returns the thread (already started)."""
    import os
    import time
    from pathlib import Path

    stop = Path(path)

    def watch():
        if hasattr(signal, "pthread_sigmask"):  # the signal goes to the main thread, which honours deferral
            signal.pthread_sigmask(signal.SIG_BLOCK, set(_stop_signals()) | {signal.SIGINT})
        while not stop.exists():
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
