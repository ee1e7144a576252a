"""A real full disk: the command line on a small tmpfs (issue 28, item 1).

The tmpfs is mounted in a user and mount namespace of its own (``unshare -rm``), so no root is
needed where the system allows unprivileged user namespaces; elsewhere these tests skip with
the reason. What each writer does when its own write call fails is in ``test_disk_full.py``.
"""
from __future__ import annotations

import csv
import io
import os
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache

import pytest
from helpers import PROJECT

from EmphysemaXAILib.app.run_log import log_path
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom

FAST = ("--no-model", "--engine", "classical", "--no-report")
MARK = "==MARK=="


@lru_cache(maxsize=1)
def tmpfs_refusal() -> str | None:
    """Why a test cannot mount a tmpfs here (None: it can)."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        try:
            done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {folder}"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as error:
            return f"unshare failed: {error}"
    if done.returncode != 0:
        return f"no user namespace with a tmpfs mount here ({done.stderr.strip() or done.returncode})"
    return None


@pytest.fixture(autouse=True)
def _needs_tmpfs():
    reason = tmpfs_refusal()
    if reason:
        pytest.skip(f"a full disk needs a small tmpfs: {reason}")


def on_tmpfs(tmp_path, size: str, before: str, command: list, after: str) -> tuple:
    """Mount a ``size`` tmpfs on tmp_path/disk, run shell ``before``, the command line, then
    ``after`` (which prints what is left: the mount goes with the namespace). Returns (exit code
    of the command, stderr of the command, what ``after`` printed). TMPDIR is tmp_path/tmp."""
    disk, tmp = tmp_path / "disk", tmp_path / "tmp"
    disk.mkdir()
    tmp.mkdir()
    python = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "EmphysemaXAILib", *command])
    script = (f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(disk))} || exit 99; {before}; "
              f"{python} 2>{shlex.quote(str(tmp_path / 'err.txt'))} >/dev/null; code=$?; "
              f"echo {MARK}$code; {after}")
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=os.pathsep.join(
        [str(PROJECT / "EmphysemaXAI"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)
    assert MARK in done.stdout, (done.returncode, done.stdout, done.stderr)
    head, _, rest = done.stdout.partition(MARK)
    code, _, printed = rest.partition("\n")
    return int(code), (tmp_path / "err.txt").read_text(), printed


def assert_one_line(err: str, output) -> str:
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(f"emphysema-xai: error: cannot write {output}"), err
    assert f": the disk is full (no space left on device in {output.parent if output.name == 'res' else output})" \
        in lines[-1], err
    assert not any(w in err for w in ("Traceback", "internal error", "ERROR:root", "Failed to save", "vtkArchive",
                                      "ERR|")), err
    return lines[-1]


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    base = tmp_path_factory.mktemp("tmpfs_ct")
    return write_phantom(generate_phantom(PhantomParams(size="small", seed=60, extent_pct=0, pattern="none")),
                         base / "p", fmt="nrrd") / "ct.nrrd"


def test_analyze_on_a_full_tmpfs(ct, tmp_path):
    disk = tmp_path / "disk"
    out = disk / "res"
    code, err, left = on_tmpfs(tmp_path, "1m", f"mkdir {out} && echo earlier > {out}/summary.json",
                               ["analyze", ct, "--out", out, "--overwrite", "--dicom-out", *FAST],
                               f"ls -A {disk}; echo; cat {out}/summary.json")
    assert code == 4, err
    line = assert_one_line(err, out)
    assert f"in {disk})" in line
    assert left.split() == ["res", "earlier"]                 # no .res-* left; the earlier output as it was
    assert list((tmp_path / "tmp").iterdir()) == []           # no traceback log, no scratch folder


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_on_a_full_tmpfs_stops_and_keeps_finished_cases(ct, tmp_path, workers):
    root = tmp_path / "root"
    root.mkdir()
    for k in range(3):
        shutil.copy(ct, root / f"c{k}.nrrd")
    out = tmp_path / "disk" / "out"
    code, err, left = on_tmpfs(tmp_path, "2500k", "true",
                               ["batch", root, "--out", out, "--workers", workers, *FAST],
                               f"ls -A {out}/cases; echo {MARK}; cat {out}/cohort.csv; echo {MARK}; "
                               f"for d in {out}/cases/*/; do ls $d | grep -c summary.json; done")
    assert code == 4, err
    line = assert_one_line(err, out / "cases")
    assert line.split(": the disk is full")[0][-3:] in ("/c0", "/c1", "/c2") and "the batch stopped:" in line
    assert line.endswith("then run again with --resume")
    folders, table, whole = left.split(MARK)
    rows = {r["case_id"]: r for r in csv.DictReader(io.StringIO(table.strip()))}
    assert sorted(rows) == ["c0", "c1", "c2"] and "cohort.csv written" in line
    ok = sorted(c for c, r in rows.items() if r["status"] == "ok")
    assert sorted(folders.split()) == ok                     # finished cases only, no .c*-* leftovers
    assert whole.split() == ["1"] * len(ok)                  # each of them whole
    failed = [r["error"] for r in rows.values() if r["status"] == "failed"]
    assert sum(e.startswith("disk full: No space left on device writing ") for e in failed) >= 1
    assert all(e.startswith(("disk full: ", "not finished: the batch stopped")) for e in failed)
    if workers == 1:
        assert ok == ["c0"] and rows["c2"]["error"].startswith("not finished")
    # no dask-scratch-space, no scratch, no traceback log; the run's library log (app/run_log.py)
    # stays only when the libraries said something (here: Dask's warnings on the workers it stopped)
    left_behind = [p for p in (tmp_path / "tmp").iterdir() if p.name != log_path().name]
    assert left_behind == []
