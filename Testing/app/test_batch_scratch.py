"""A batch on a local Dask cluster leaves nothing in the temporary folder or the current folder
(issue 28, item 4): no ``dask-scratch-space``, no worker TMPDIR, no Slicer scratch, whether the
run succeeds, fails (``--strict``) or is stopped by SIGTERM. Each run is a child process with
a fresh TMPDIR and a fresh working folder."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import PROJECT

from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom

FAST = ("--no-model", "--engine", "classical", "--no-report", "--no-scene")


@pytest.fixture(scope="module")
def two_cases(tmp_path_factory):
    base = tmp_path_factory.mktemp("scratch_cases")
    folder = write_phantom(generate_phantom(PhantomParams(size="small", seed=60, extent_pct=0, pattern="none")),
                           base / "p", fmt="nrrd")
    root = base / "root"
    root.mkdir()
    for k in range(2):
        shutil.copy(folder / "ct.nrrd", root / f"c{k}.nrrd")
    return root


def start(tmp_path, *args, **kwargs) -> subprocess.Popen:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "cwd").mkdir()
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=os.pathsep.join(
        [str(PROJECT / "EmphysemaXAI"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "EmphysemaXAILib", *map(str, args)], env=env,
                            cwd=tmp_path / "cwd", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def left_behind(tmp_path) -> list:
    return sorted(str(p.relative_to(tmp_path)) for folder in ("tmp", "cwd") for p in (tmp_path / folder).iterdir())


def test_a_dask_batch_leaves_nothing_behind(two_cases, tmp_path):
    process = start(tmp_path, "batch", two_cases, "--out", tmp_path / "out", "--workers", 2, *FAST)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert len(list((tmp_path / "out" / "cases").iterdir())) == 2
    assert left_behind(tmp_path) == [], [str(p) for p in (tmp_path / "tmp").rglob("*")]


def test_a_failed_dask_batch_leaves_nothing_behind(two_cases, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(two_cases, root)
    (root / "broken.nrrd").write_text("NRRD0004\ntype: nonsense\n")
    process = start(tmp_path, "batch", root, "--out", tmp_path / "out", "--workers", 2, "--strict", *FAST)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1 and "failed broken" in err, err
    assert left_behind(tmp_path) == [], [str(p) for p in (tmp_path / "tmp").rglob("*")]


def test_a_dask_batch_stopped_by_sigterm_leaves_nothing_behind(two_cases, tmp_path):
    process = start(tmp_path, "batch", two_cases, "--out", tmp_path / "out", "--workers", 2, *FAST)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "tmp").rglob("dask-scratch-space/worker-*")):   # the workers are up
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert left_behind(tmp_path) == [], [str(p) for p in (tmp_path / "tmp").rglob("*")]
