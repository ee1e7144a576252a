"""The command-line analysis in its own Python process, for a GUI that polls it (the Slicer module).

Inside Slicer the Qt main loop holds Python's GIL, so long work in a thread starves and the GUI
stutters; the best AI extensions run inference as a separate process instead. This module is
that process launcher, free of Slicer and Qt (tested headless):

- :func:`analysis_command` builds ``python -m EmphysemaXAILib --stop-file F analyze INPUT --out
  DIR --config OPTIONS.toml ...`` from an :class:`~EmphysemaXAILib.options.AnalysisOptions`;
- :class:`AnalysisProcess` starts it, and on each :meth:`~AnalysisProcess.poll` (a GUI timer)
  returns the lines it printed since, progress lines parsed into (fraction, message); it never
  blocks (the pipe is read non-blocking: no reader thread);
- :meth:`~AnalysisProcess.cancel` stops it within 2 s at any step and returns when the real
  interpreter is gone: it creates the stop file (the child's watchdog raises SIGTERM in itself,
  so the atomic writers clean up, and exits hard after a grace period) and waits. Slicer's
  ``PythonSlicer`` is a CTK launcher that starts ``python-real`` as its own child and does not
  forward SIGTERM: terminating the launcher first would leave the interpreter running, and
  removing the run's folder (stop file included) before the watchdog saw it would leave it
  running for good. So the launcher is only terminated, and the interpreter (its pid is in
  ``stop.pid``, written by the watchdog) only signalled, if either is still alive 0.3 s before
  the deadline. The child also stops by itself when its launcher or the GUI (``--parent-pid``)
  exits (:func:`~EmphysemaXAILib.io.signals.watch_stop_file`).

The progress line format is defined here once (:func:`format_progress` / :func:`parse_line`) and
used by the command line's progress printer.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..io.signals import pid_alive, pid_file_of
from ..options import AnalysisOptions, options_to_toml

#: a progress line as the command line prints it on stderr: ``[ 40%] message``
_PROGRESS = re.compile(r"^\[\s*(\d{1,3})%\]\s?(.*)$")


def format_progress(fraction: float, message: str) -> str:
    """One progress line: ``[ 40%] message`` (``fraction`` 0..1)."""
    return f"[{fraction:4.0%}] {message}"


@dataclass(frozen=True)
class Line:
    """One line the process printed: ``fraction`` (0..1) when it is a progress line, else None."""

    text: str
    fraction: float | None = None


def parse_line(text: str) -> Line:
    """A printed line as a :class:`Line` (progress lines give their fraction and message)."""
    text = text.rstrip("\r\n")
    match = _PROGRESS.match(text)
    if match:
        return Line(match.group(2), min(int(match.group(1)), 100) / 100.0)
    return Line(text)


def package_root() -> str:
    """The folder holding the ``EmphysemaXAILib`` package (put on the child's PYTHONPATH)."""
    return str(Path(__file__).resolve().parents[2])


def analysis_command(python: str, input_path, out_dir, options: AnalysisOptions | None, work_dir, *,
                     lung_mask=None, acquisition=None, series_uid: str | None = None, scene: bool = False,
                     report: bool = True, dicom: bool = False) -> list[str]:
    """The argument list of one ``analyze`` run in another process.

    ``options`` are written to ``work_dir/options.toml`` (their given fields; :func:`options_to_toml`)
    and passed as ``--config``; the stop file is ``work_dir/stop``. ``acquisition``: a JSON file
    of acquisition facts (``--acquisition``). ``scene`` writes scene.mrb (not needed when the
    results are loaded into a running Slicer). ``dicom`` adds ``--dicom-out`` (DICOM SEG + SR).
    """
    options = options or AnalysisOptions()
    command = _command(python, work_dir, "analyze", options) + [str(input_path), "--out", str(out_dir)]
    series = series_uid or options.series_uid
    if series:
        command += ["--series", series]
    if lung_mask is not None:
        command += ["--lung-mask", str(lung_mask)]
    if acquisition is not None:
        command += ["--acquisition", str(acquisition)]
    return command + _output_flags(scene, report) + (["--dicom-out"] if dicom else [])


def batch_command(python: str, root, out_dir, options: AnalysisOptions | None, work_dir, *, workers: int = 1,
                  resume: bool = False, scene: bool = True, report: bool = True) -> list[str]:
    """The argument list of a ``batch`` run over ``root`` in another process (options and stop
    file as :func:`analysis_command`)."""
    command = _command(python, work_dir, "batch", options or AnalysisOptions())
    command += [str(root), "--out", str(out_dir), "--workers", str(int(workers))]
    return command + (["--resume"] if resume else []) + _output_flags(scene, report)


def _command(python: str, work_dir, name: str, options: AnalysisOptions) -> list[str]:
    work = Path(work_dir)
    config = work / "options.toml"
    config.write_text(options_to_toml(options), encoding="utf-8")
    return [python, "-m", "EmphysemaXAILib", "--stop-file", str(work / "stop"), "--parent-pid", str(os.getpid()),
            name, "--config", str(config)]


def _output_flags(scene: bool, report: bool) -> list[str]:
    return (["--no-scene"] if not scene else []) + (["--no-report"] if not report else [])


def child_environment(base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) with the package's folder first on
    PYTHONPATH and unbuffered output (progress reaches the GUI as it is printed)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([package_root()] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class AnalysisProcess:
    """One command run as a child process whose output is polled, never waited on.

    Args:
        command: the argument list (:func:`analysis_command`).
        stop_file: the path the child watches (``--stop-file``); created by :meth:`cancel`.
        popen: how to start it (``subprocess.Popen``-like, returning an object with ``stdout``,
            ``poll``, ``terminate``, ``kill``, ``wait``); default starts it with
            :func:`child_environment` and stderr merged into stdout.
    """

    def __init__(self, command: list[str], stop_file=None, popen=None):
        self.command = list(command)
        self.stop_file = Path(stop_file) if stop_file else None
        self._popen = popen or _default_popen
        self._process = None
        self._pending = b""
        self.lines: list[Line] = []
        self.cancelled = False

    def start(self) -> "AnalysisProcess":
        self._process = self._popen(self.command)
        os.set_blocking(self._process.stdout.fileno(), False)
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def poll(self) -> list[Line]:
        """The lines printed since the last call (never blocks); the last partial line is kept
        until it is complete or the process has ended."""
        if self._process is None:
            return []
        chunks = []
        fd = self._process.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError:  # closed
                chunk = b""
            if not chunk:
                break
            chunks.append(chunk)
        data = self._pending + b"".join(chunks)
        *complete, self._pending = data.split(b"\n")
        if self._process.poll() is not None and not chunks and self._pending:
            complete.append(self._pending)
            self._pending = b""
        new = [parse_line(raw.decode("utf-8", "replace")) for raw in complete]
        self.lines += new
        return new

    def cancel(self, timeout: float = 2.0) -> None:
        """Stop the process within ``timeout`` seconds, whatever step it is in, and return only
        when the interpreter that ran it is gone (see the module docstring): the stop file first
        (the run cleans up and exits; a launcher such as ``PythonSlicer`` then exits with it),
        force only for what is still alive 0.3 s before the deadline. The caller may remove the
        run's folder afterwards."""
        if self._process is None:
            return
        self.cancelled = True
        deadline = time.monotonic() + timeout
        if self.stop_file is not None:
            try:
                self.stop_file.touch()
            except OSError:
                pass
        while self._alive() and time.monotonic() < deadline - 0.3:
            time.sleep(0.02)
        interpreter = self._interpreter_pid()
        if self._process.poll() is None:
            self._process.terminate()
        if pid_alive(interpreter):
            _signal(interpreter, signal.SIGTERM)
        while self._alive() and time.monotonic() < deadline - 0.05:
            time.sleep(0.02)
        if self._process.poll() is None:
            self._process.kill()
        if pid_alive(interpreter):
            _signal(interpreter, getattr(signal, "SIGKILL", signal.SIGTERM))
        self._process.wait()

    def _interpreter_pid(self) -> int | None:
        """The pid the run wrote beside its stop file (the real interpreter behind a launcher)."""
        if self.stop_file is None:
            return None
        try:
            return int(pid_file_of(self.stop_file).read_text(encoding="ascii"))
        except (OSError, ValueError):
            return None

    def _alive(self) -> bool:
        return self._process.poll() is None or pid_alive(self._interpreter_pid())

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the end (collecting lines as it goes); the return code, None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        self.poll()
        self.poll()
        return self.returncode

    def error_message(self) -> str:
        """The one-line reason of a failed run (the child's ``emphysema-xai: ...`` line, or its
        last line), for the GUI's message."""
        for line in reversed(self.lines):
            if line.text.startswith("emphysema-xai:"):
                return line.text.split(":", 1)[1].strip()
        texts = [line.text for line in self.lines if line.text.strip()]
        return texts[-1] if texts else f"exit code {self.returncode}"


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:       # gone meanwhile
        pass


def _default_popen(command):
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window on Windows
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=child_environment(), creationflags=flags)


def new_work_dir(parent=None) -> Path:
    """A private temporary folder for one run (options file, stop file, exported inputs, outputs)."""
    return Path(tempfile.mkdtemp(prefix="emphysema-xai-run-", dir=parent))
