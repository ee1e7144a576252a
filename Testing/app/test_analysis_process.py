"""The analysis in its own process (what the Slicer module runs): command, progress lines, cancel."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from EmphysemaXAILib.app.analysis_process import (
    AnalysisProcess,
    analysis_command,
    child_environment,
    format_progress,
    new_work_dir,
    parse_line,
)
from EmphysemaXAILib.options import AnalysisOptions, options_from_toml
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

pytestmark = pytest.mark.slicer_python  # also run with 3D Slicer's package versions (conftest.py)


def test_progress_lines_round_trip_and_other_lines_pass_through():
    assert parse_line(format_progress(0.4, "segmenting the lungs") + "\n").fraction == pytest.approx(0.4)
    assert parse_line(format_progress(0.4, "segmenting the lungs")).text == "segmenting the lungs"
    assert parse_line(format_progress(1.0, "done")).fraction == 1.0
    other = parse_line("  warning lungmask is not installed: classical engine used")
    assert other.fraction is None and other.text.startswith("  warning lungmask")


def test_command_carries_the_options_through_a_config_file(tmp_path):
    options = AnalysisOptions(engine="classical", emphysema_hu=-925.0, model="none", series_uid="1.2.3",
                              laa_thresholds=(-950.0, -910.0))
    command = analysis_command("py", tmp_path / "ct.nrrd", tmp_path / "out", options, tmp_path,
                               lung_mask=tmp_path / "mask.nrrd")
    assert command[:8] == ["py", "-m", "EmphysemaXAILib", "--stop-file", str(tmp_path / "stop"),
                           "--parent-pid", str(os.getpid()), "analyze"]
    assert command[10:13] == [str(tmp_path / "ct.nrrd"), "--out", str(tmp_path / "out")]
    config = command[command.index("--config") + 1]
    back = options_from_toml(config)
    assert back == AnalysisOptions(**{k: v for k, v in options.given().items() if k != "series_uid"})
    assert command[command.index("--series") + 1] == "1.2.3"
    assert command[command.index("--lung-mask") + 1] == str(tmp_path / "mask.nrrd")
    assert "--no-scene" in command and "--no-report" not in command


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    import SimpleITK as sitk

    phantom = generate_phantom(PhantomParams(size="small", seed=4, extent_pct=10, pattern="centrilobular",
                                             noise_hu=0))
    path = tmp_path_factory.mktemp("process") / "ct.nrrd"
    sitk.WriteImage(phantom.ct.to_sitk(), str(path), useCompression=True)
    return path, phantom.truth


def _start(path, tmp_path):
    """``analyze`` of ``path`` (classical, no model, no report) started in a child process."""
    work = new_work_dir(tmp_path)
    command = analysis_command(sys.executable, path, work / "out", AnalysisOptions(engine="classical", model="none"),
                               work, report=False)
    return AnalysisProcess(command, stop_file=work / "stop").start(), work, work / "out"


def test_analysis_runs_in_a_child_process_with_streamed_progress(phantom_file, tmp_path):
    path, truth = phantom_file
    job, work, out = _start(path, tmp_path)
    assert job.running
    assert job.wait(timeout=300) == 0, [line.text for line in job.lines]
    fractions = [line.fraction for line in job.lines if line.fraction is not None]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions) and len(fractions) >= 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["segmentation"]["engine_used"] == "classical" and summary["severity"] is None
    assert abs(summary["qct"]["regions"][0]["laa950_pct"] - truth["extent_pct"]) < 1.0
    assert (out / "lung_labels.nrrd").exists() and not (out / "scene.mrb").exists()
    assert any("QCT severity" in line.text for line in job.lines)        # the command line's result line
    assert not (work / "stop.pid").exists()      # a finished run leaves no pid a later Cancel could signal


def test_cancel_stops_a_running_analysis_within_two_seconds_and_leaves_nothing(phantom_file, tmp_path):
    path, _ = phantom_file
    job, work, out = _start(path, tmp_path)
    deadline = time.monotonic() + 120
    while not any(line.fraction and line.fraction > 0 for line in job.poll() + job.lines):
        assert job.running and time.monotonic() < deadline, [line.text for line in job.lines]
        time.sleep(0.05)
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 2.0
    assert not job.running and job.returncode != 0 and job.cancelled
    assert not out.exists()
    # no half-written output (the pid file stays only when the run had to exit hard)
    assert {p.name for p in work.iterdir()} - {"stop.pid"} == {"options.toml", "stop"}


STUCK_CHILD = textwrap.dedent("""
    import os, signal, sys, threading
    from EmphysemaXAILib.io.signals import watch_stop_file
    signal.signal(signal.SIGTERM, lambda *a: None)   # a main thread that does not get to honour SIGTERM
    open(sys.argv[2], "w").write(str(os.getpid()))
    watch_stop_file(sys.argv[1], parent_pid=int(sys.argv[3]) if len(sys.argv) > 3 else None)
    threading.Event().wait()
""")
LAUNCHER = textwrap.dedent("""
    import subprocess, sys
    sys.exit(subprocess.call([sys.executable, "-c", sys.argv[1], *sys.argv[2:]]))
""")


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as stat:   # an exited child of a dead launcher may wait
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":   # unreaped (a zombie): it has exited
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="checks processes through /proc (Linux)")
def test_cancel_reaches_an_interpreter_behind_a_launcher_even_when_it_ignores_sigterm(tmp_path):
    """Slicer's PythonSlicer is a launcher: terminating it does not stop the real interpreter.
    The stop file does, within the watchdog's grace period, even when SIGTERM is not honoured."""
    pid_file = tmp_path / "pid"
    command = [sys.executable, "-c", LAUNCHER, STUCK_CHILD, str(tmp_path / "stop"), str(pid_file)]
    job = AnalysisProcess(command, stop_file=tmp_path / "stop",
                          popen=lambda c: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                           env=child_environment())).start()
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(pid_file.read_text())
    started = time.monotonic()
    job.cancel()
    assert not job.running                                    # the launcher is gone at once
    assert _gone(child, within_s=2.0 - (time.monotonic() - started))   # and the interpreter within 2 s


def _launched_stuck_child(tmp_path, *extra) -> tuple:
    """(launcher Popen, pid of the interpreter it started): STUCK_CHILD behind LAUNCHER."""
    pid_file = tmp_path / "pid"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, STUCK_CHILD, str(tmp_path / "stop"), str(pid_file),
                                 *map(str, extra)], env=child_environment())
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return launcher, int(pid_file.read_text())


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="checks processes through /proc (Linux)")
def test_an_interpreter_whose_launcher_dies_stops_by_itself(tmp_path):
    """Slicer closing (or crashing) can take the launcher with it before any Cancel: the orphaned
    interpreter notices and stops, with no stop file ever written."""
    launcher, child = _launched_stuck_child(tmp_path)
    started = time.monotonic()
    launcher.kill()
    launcher.wait()
    assert _gone(child, within_s=2.0 - (time.monotonic() - started))
    assert not (tmp_path / "stop").exists()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="checks processes through /proc (Linux)")
def test_an_interpreter_stops_when_the_gui_given_as_parent_pid_exits(tmp_path):
    gui = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        launcher, child = _launched_stuck_child(tmp_path, gui.pid)
        time.sleep(0.3)
        assert not _gone(child, within_s=0.05)        # running while the GUI runs
        started = time.monotonic()
        gui.kill()
        gui.wait()
        assert _gone(child, within_s=2.0 - (time.monotonic() - started))
        launcher.wait(timeout=5)
    finally:
        gui.kill()
