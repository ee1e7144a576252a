"""`batch` on dask.distributed: a local two-worker cluster gives the serial run's cohort; workers
killed while writing a case (once, or every time) are replaced and the case retried, then
recorded as failed, with no partial or duplicate output; `--resume` after the client was
SIGKILLed; an external `dask scheduler` + `dask worker`; the one-line errors (no dask, a bad
or unreachable scheduler)."""
import csv
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from helpers import PROJECT, run_cli

from EmphysemaXAILib.app.batch import run_batch
from EmphysemaXAILib.errors import InputError, MissingPackage
from EmphysemaXAILib.io.memory import GB
from EmphysemaXAILib.options import AnalysisOptions
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom

OPTIONS = AnalysisOptions(model="none", engine="classical")
FAST = ("--no-model", "--engine", "classical", "--no-scene", "--no-report")
CASES = ["c0", "c1", "c2", "c3"]
CASE_FILES = {"summary.json", "qct.csv", "lung_labels.nrrd", "laa_map.nrrd"}   # and airways.nrrd when found
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT / "EmphysemaXAI"), os.environ.get("PYTHONPATH", "")]))

#: a worker preload (dask's distributed.worker.preload) that makes a worker SIGKILL itself after
#: writing every file of case {case} into its temporary folder, before the rename: once (the
#: marker file exists afterwards) or every time; each death appends a line to the marker
KILLER = """
import os, signal
from pathlib import Path

def dask_setup(worker):
    from EmphysemaXAILib.app import case_files
    original = case_files.write_case_files

    def hostile(result, folder, **kw):
        marker = Path({marker!r})
        if Path(folder).name.startswith(".{case}-") and ({always} or not marker.exists()):
            original(result, folder, **kw)
            (Path(folder) / "half.txt").write_text("half")
            with marker.open("a") as handle:
                handle.write(str(os.getpid()) + "\\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return original(result, folder, **kw)

    case_files.write_case_files = hostile
"""


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four tiny cases (two phantoms, two copies each: distinct case ids)."""
    base = tmp_path_factory.mktemp("dask_cohort")
    root = base / "root"
    root.mkdir()
    for seed, pattern in ((60, "none"), (61, "centrilobular")):
        params = PhantomParams(size="small", seed=seed, extent_pct=15 if pattern != "none" else 0, pattern=pattern)
        folder = write_phantom(generate_phantom(params), base / f"p{seed}", fmt="nrrd")
        for k in (seed - 60, seed - 58):
            shutil.copy(folder / "ct.nrrd", root / f"c{k}.nrrd")
    return root


def read_cohort(out) -> list:
    with open(out / "cohort.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def assert_complete(out, ok=CASES, failed=()):
    """Each case once in cohort.csv; ok cases whole on disk, failed ones absent; nothing hidden."""
    table = read_cohort(out)
    assert sorted(r["case_id"] for r in table) == sorted([*ok, *failed])
    for row in table:
        assert row["status"] == ("failed" if row["case_id"] in failed else "ok"), row
    cases = out / "cases"
    assert sorted(p.name for p in cases.iterdir()) == sorted(ok)  # no .<case>-* leftovers, no extra folder
    for case in ok:
        assert {p.name for p in (cases / case).iterdir()} - {"airways.nrrd"} == CASE_FILES, case
    return {r["case_id"]: r for r in table}


def test_two_local_workers_give_the_serial_cohort(cohort, tmp_path):
    serial = run_batch(cohort, tmp_path / "one", OPTIONS, scene=False, report=False, progress=False)
    environ = dict(os.environ)
    rows = run_batch(cohort, tmp_path / "two", OPTIONS, workers=2, scene=False, report=False, progress=False)
    # the nannies set OMP_NUM_THREADS=1 in the caller's environment to spawn workers: put back
    assert dict(os.environ) == environ
    assert_complete(tmp_path / "two")
    assert read_cohort(tmp_path / "two") == read_cohort(tmp_path / "one")
    assert [r["laa950_pct"] for r in rows] == [r["laa950_pct"] for r in serial]
    assert rows[1]["laa950_pct"] > rows[0]["laa950_pct"] + 5   # c1 is the emphysematous phantom
    assert all(r["peak_rss_mb"] > 50 and r["worker"].split(":")[1] != str(os.getpid()) for r in rows)
    assert (tmp_path / "two" / "qc_montage.png").stat().st_size > 5000  # thumbnails came back from the workers


@pytest.fixture(scope="module")
def killed_run(cohort, tmp_path_factory):
    """A two-worker batch where c1's worker is killed once while writing it and c3's every time."""
    import dask

    base = tmp_path_factory.mktemp("killed")
    once, always = base / "c1.deaths", base / "c3.deaths"
    preloads = []
    for case, marker, every in (("c1", once, False), ("c3", always, True)):
        script = base / f"kill_{case}.py"
        script.write_text(KILLER.format(marker=str(marker), case=case, always=every))
        preloads.append(str(script))
    with dask.config.set({"distributed.worker.preload": preloads}):
        rows = run_batch(cohort, base / "out", OPTIONS, workers=2, retries=2, scene=False, report=False,
                         progress=False)
    return {"out": base / "out", "rows": rows, "once": once, "always": always}


def test_a_worker_killed_while_writing_a_case_is_replaced_and_the_case_finished(killed_run):
    assert len(killed_run["once"].read_text().split()) == 1          # the worker did die writing c1
    table = assert_complete(killed_run["out"], ok=["c0", "c1", "c2"], failed=["c3"])
    assert table["c1"]["laa950_pct"] and not (killed_run["out"] / "cases" / "c1" / "half.txt").exists()


def test_a_case_whose_worker_always_dies_is_retried_then_recorded_as_failed(killed_run):
    assert len(killed_run["always"].read_text().split()) == 3          # 1 attempt + 2 retries
    row = next(r for r in killed_run["rows"] if r["case_id"] == "c3")
    assert row["status"] == "failed" and row["error"].startswith("worker died 3 times (KilledWorker")
    assert not (killed_run["out"] / "cases" / "c3").exists()


#: a worker preload that makes writing case {case} grow the worker by 50 MB chunks (3 GB at most)
HOG = """
import time

def dask_setup(worker):
    from EmphysemaXAILib.app import case_files
    original = case_files.write_case_files

    def hog(result, folder, **kw):
        if folder.name.startswith(".{case}-"):
            held = []
            for _ in range(60):
                held.append(bytearray(50 * 2**20))
                time.sleep(0.05)  # the nanny looks every 0.1 s
        return original(result, folder, **kw)

    case_files.write_case_files = hog
"""


def test_a_case_above_the_workers_memory_share_is_a_failed_row_naming_memory(cohort, tmp_path):
    """--max-memory 1G over two workers: 512 MB each, less than a case needs: every case is refused
    before its voxels are read, recorded as failed with the memory figures; nothing is retried."""
    start = time.monotonic()
    rows = run_batch(cohort, tmp_path / "out", dataclasses.replace(OPTIONS, max_memory=1 * GB), workers=2,
                     scene=False, report=False, progress=False)
    assert time.monotonic() - start < 120
    assert_complete(tmp_path / "out", ok=[], failed=CASES)
    for row in rows:
        assert row["error"].startswith("InputError: "), row["error"]
        assert "-voxel scan needs about 1.8 GB of memory for this analysis, more than the 512 MB allowed " \
            "(--max-memory; a local batch's is shared by its workers)" in row["error"], row["error"]


def test_a_worker_above_its_memory_limit_is_killed_then_the_case_recorded_as_failed(cohort, tmp_path):
    """A case that passes the estimate but grows its worker past the limit (the nanny kills it at
    95 %): retried, then a failed row naming the limit; the other cases finish; no loop."""
    import dask

    script = tmp_path / "hog.py"
    script.write_text(HOG.format(case="c2"))
    start = time.monotonic()
    with dask.config.set({"distributed.worker.preload": [str(script)]}):
        rows = run_batch(cohort, tmp_path / "out", dataclasses.replace(OPTIONS, max_memory=4 * GB), workers=2,
                         retries=1, scene=False, report=False, progress=False)
    assert time.monotonic() - start < 240
    assert_complete(tmp_path / "out", ok=["c0", "c1", "c3"], failed=["c2"])
    row = next(r for r in rows if r["case_id"] == "c2")
    assert row["error"] == ("worker died 2 times (KilledWorker: the process running the case was killed, e.g. for "
                            "using more than the workers' memory limit of 2.0 GB each (--max-memory shared by "
                            "--workers))")


def test_resume_after_the_client_was_killed(cohort, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "tmp").mkdir()   # a SIGKILLed client cannot remove its workers' TMPDIR: keep it out of /tmp
    client = subprocess.Popen([sys.executable, "-m", "EmphysemaXAILib", "batch", str(cohort), "--out", str(out),
                               "--workers", "2", *FAST], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=dict(ENV, TMPDIR=str(tmp_path / "tmp")))
    workers = []
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("cases/*/summary.json")):
            assert client.poll() is None and time.monotonic() < deadline, client.stderr.read().decode()
            workers = psutil.Process(client.pid).children(recursive=True) or workers
            time.sleep(0.02)
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cases/*/summary.json")}
        assert workers and len(done) < len(CASES)
        _, alive = psutil.wait_procs(workers, timeout=20)   # the workers follow their dead parent
        assert alive == [], alive
    finally:
        for process in [client, *workers]:
            try:
                process.kill()
            except (OSError, psutil.Error):
                pass
    assert not (out / "cohort.csv").exists()
    run_batch(cohort, out, OPTIONS, workers=2, resume=True, scene=False, report=False, progress=False)
    assert_complete(out)
    assert {case: (out / "cases" / case / "summary.json").stat().st_mtime_ns for case in done} == done


def test_an_external_dask_scheduler_and_worker(cohort, tmp_path):
    file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    scheduler = subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(file)], stderr=subprocess.DEVNULL, env=ENV)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not (file.is_file() and file.stat().st_size):
            assert scheduler.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        address = json.loads(file.read_text())["address"]
        worker = subprocess.Popen([*dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                   "--local-directory", str(tmp_path / "w")], stderr=subprocess.DEVNULL, env=ENV)
        result = run_cli("batch", cohort, "--out", tmp_path / "out", "--scheduler", address, *FAST)
        assert result.returncode == 0, result.stderr
        assert "4 ok, 0 excluded, 0 failed" in result.stdout
        table = assert_complete(tmp_path / "out")
        assert float(table["c1"]["laa950_pct"]) > float(table["c0"]["laa950_pct"]) + 5
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(30)


def test_bad_or_unreachable_scheduler_is_one_line_and_nothing_is_written(cohort, tmp_path, monkeypatch):
    from EmphysemaXAILib.app import cohort_dask

    with pytest.raises(InputError, match="--scheduler 'somewhere:8786': give 'local' or the address"):
        run_batch(cohort, tmp_path / "a", OPTIONS, scheduler="somewhere:8786", progress=False)
    monkeypatch.setattr(cohort_dask, "CONNECT_TIMEOUT_S", 2.0)
    start = time.monotonic()
    with pytest.raises(InputError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9") as caught:
        run_batch(cohort, tmp_path / "b", OPTIONS, scheduler="tcp://127.0.0.1:9", scene=False, report=False,
                  progress=False)
    assert time.monotonic() - start < 30 and "\n" not in str(caught.value)
    with socket.socket() as silent:           # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = "tcp://127.0.0.1:%d" % silent.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(InputError, match=f"cannot reach the Dask scheduler at {address} .TimeoutError"):
            run_batch(cohort, tmp_path / "c", OPTIONS, scheduler=address, scene=False, report=False, progress=False)
        assert time.monotonic() - start < 30
    assert not any((tmp_path / name).exists() for name in "abc")


def test_without_dask_several_workers_are_refused_in_one_line(cohort, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)   # `import distributed` now fails
    with pytest.raises(MissingPackage) as caught:
        run_batch(cohort, tmp_path / "out", OPTIONS, workers=2, scene=False, report=False, progress=False)
    text = str(caught.value)
    assert "\n" not in text and "pip install 'distributed>=2024.8'" in text and "--workers 1" in text
    assert not (tmp_path / "out").exists()
    rows = run_batch(cohort, tmp_path / "out", OPTIONS, scene=False, report=False, progress=False)
    assert [r["status"] for r in rows] == ["ok"] * 4              # one worker runs here, without Dask
