"""Quiet libraries and unwritable caches (issue 28): nothing reaches the terminal that the project
did not write. Python logging (slicer-core's root-logger errors, distributed's own handler),
warnings (torch's) and C / C++ output (VTK's output window, anything on file descriptor 2) go to
the run's log, ``$TMPDIR/emphysema-xai-<uid>.log``; ``--debug`` shows them. A read-only home
folder (torch hub cache, matplotlib's config folder) changes nothing on the terminal."""
import os
import subprocess
import sys

import pytest
from helpers import PROJECT

from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom

FAST = ("--no-model", "--engine", "classical", "--no-scene", "--no-report")

#: a command line whose quality-control step makes every kind of library noise first
NOISY = """
import logging, os, sys, warnings
from EmphysemaXAILib.analysis import qc
original = qc.run_qc

def noisy(*args, **kwargs):
    import distributed  # noqa: F401 - installs its own stream handler on the 'distributed' logger
    logging.getLogger("distributed.worker").warning("DISTRIBUTED-CHATTER")
    logging.error("Failed to save scene to file ROOT-CHATTER")           # slicer-core's way
    warnings.warn("TORCH-CHATTER: TypedStorage is deprecated", UserWarning)
    import vtk
    vtk.vtkObject.GlobalWarningDisplayOn()
    reader = vtk.vtkImageReader2()
    reader.SetFileName("/nonexistent/VTK-CHATTER.raw")
    reader.Update()
    os.write(2, b"C-LEVEL-CHATTER\\n")
    return original(*args, **kwargs)

qc.run_qc = noisy
from EmphysemaXAILib.cli import main
sys.exit(main(sys.argv[1:]))
"""
CHATTER = ("DISTRIBUTED-CHATTER", "ROOT-CHATTER", "TORCH-CHATTER", "VTK-CHATTER", "C-LEVEL-CHATTER")


def environment(tmp_path, **extra):
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"),
               PYTHONPATH=os.pathsep.join([str(PROJECT / "EmphysemaXAI"), os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quiet")
    return write_phantom(generate_phantom(PhantomParams(size="small", seed=8)), folder / "p", fmt="nrrd") / "ct.nrrd"


def project_lines(stderr: str) -> list:
    """The lines the project writes: progress, warnings, notes and its one-line errors."""
    return [line for line in stderr.splitlines()
            if not (line.startswith("[") or line.startswith("  warning ") or line.startswith("emphysema-xai:"))]


def test_library_messages_go_to_the_run_log_not_the_terminal(small_ct, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", NOISY, "analyze", str(small_ct), "--out", str(out), *FAST],
                            capture_output=True, text=True, env=environment(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    for text in CHATTER:
        assert text not in result.stderr and text not in result.stdout, result.stderr
    assert project_lines(result.stderr) == [], result.stderr
    assert "[100%] done" in result.stderr and "QCT severity" in result.stdout   # the project's own lines stay
    log = (tmp_path / "tmp" / f"emphysema-xai-{os.getuid()}.log").read_text()
    assert "emphysema-xai analyze" in log
    for text in CHATTER:
        assert text in log, text
    assert "distributed.worker WARNING: DISTRIBUTED-CHATTER" in log


def test_with_debug_the_library_messages_show(small_ct, tmp_path):
    result = subprocess.run([sys.executable, "-c", NOISY, "--debug", "analyze", str(small_ct), "--out",
                             str(tmp_path / "out"), *FAST], capture_output=True, text=True,
                            env=environment(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    for text in CHATTER:
        assert text in result.stderr, text


def test_an_internal_error_names_the_run_log_when_libraries_wrote_to_it(small_ct, tmp_path):
    code = NOISY.replace("    return original(*args, **kwargs)", "    raise RuntimeError('boom')")
    result = subprocess.run([sys.executable, "-c", code, "analyze", str(small_ct), "--out", str(tmp_path / "out"),
                             *FAST], capture_output=True, text=True, env=environment(tmp_path), timeout=300)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("emphysema-xai:")]
    log = tmp_path / "tmp" / f"emphysema-xai-{os.getuid()}.log"
    assert errors[0].startswith("emphysema-xai: internal error: RuntimeError: boom (traceback in ")
    assert errors[1] == f"emphysema-xai: messages of the libraries during this run are in {log}"
    assert "VTK-CHATTER" in log.read_text() and len(errors) == 2


def test_a_read_only_home_changes_nothing_on_the_terminal(small_ct, tmp_path):
    """HOME under a regular file (it cannot be created, even by root): no torch hub or matplotlib
    cache can be written there; the run works (shipped model, report, scene) and says nothing of it."""
    (tmp_path / "file").write_text("not a folder")
    env = environment(tmp_path, HOME=str(tmp_path / "file" / "home"))
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "TORCH_HOME", "EMPHYSEMA_XAI_LUNGMASK_WEIGHTS"):
        env.pop(name, None)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "EmphysemaXAILib", "analyze", str(small_ct), "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert project_lines(result.stderr) == [], result.stderr
    assert "atplotlib" not in result.stderr and "mkdir" not in result.stderr, result.stderr
    # the torch hub cache is only read: the engine's fallback is the project's own warning, naming it
    assert "/file/home/.cache/torch/hub/checkpoints/unet_r231" in result.stderr
    assert {"summary.json", "report.html", "scene.mrb", "pattern_map.nrrd"} <= {p.name for p in out.iterdir()}
    # matplotlib's private cache folder in $TMPDIR, reused by the next run
    assert (tmp_path / "tmp" / f"emphysema-xai-matplotlib-{os.getuid()}").is_dir()


def test_everything_is_put_back_after_a_command(tmp_path):
    """The command line may run inside another process (a test, a console): after it, standard
    error, the root logger, logging's stream handlers, warnings and MPLCONFIGDIR are as before."""
    code = """
import logging, os, sys, warnings
from EmphysemaXAILib.app.run_log import library_messages_to_log
before = (os.fstat(2).st_ino, sys.stderr, list(logging.getLogger().handlers), logging.StreamHandler.emit,
          list(warnings.filters), os.environ.get("MPLCONFIGDIR"))
with library_messages_to_log(False, "test") as log:
    inside = os.fstat(2).st_ino
    print("PROJECT-LINE", file=sys.stderr)
    logging.warning("LIBRARY-LINE")
    os.write(2, b"NATIVE-LINE\\n")
after = (os.fstat(2).st_ino, sys.stderr, list(logging.getLogger().handlers), logging.StreamHandler.emit,
         list(warnings.filters), os.environ.get("MPLCONFIGDIR"))
print(before == after, inside != before[0], log.wrote())
os.write(2, b"AFTER-LINE\\n")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment(tmp_path, HOME=str(tmp_path / "nowhere" / "home")), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]
    assert result.stderr.splitlines() == ["PROJECT-LINE", "AFTER-LINE"]
    log = (tmp_path / "tmp" / f"emphysema-xai-{os.getuid()}.log").read_text()
    assert "LIBRARY-LINE" in log and "NATIVE-LINE" in log and "PROJECT-LINE" not in log
