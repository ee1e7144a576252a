"""A full disk (ENOSPC) or a full quota (EDQUOT) met by any writer (issue 28, item 1).

Each writer's write call is made to fail as a full disk does: it leaves a partial file, then
raises (or, for Slicer's scene writer, returns False on a file system with no space left). The
command must then print one line naming the output and that the disk is full, exit 4, write
no traceback log, leave no temporary file or folder beside the output, and keep an earlier
output byte-identical. The analysis itself is not what is tested: ``analyze_case`` returns one
result computed once, so each command only writes.

The same on a real full file system (a 2-3 MB tmpfs, mounted in a user namespace with
``unshare -rm``; skipped where the system does not allow it) is in ``test_disk_full_tmpfs.py``.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from EmphysemaXAILib import cli, pipeline
from EmphysemaXAILib.errors import DiskFullError, disk_full_errno
from EmphysemaXAILib.io.atomic import atomic_folder, write_atomic
from EmphysemaXAILib.options import AnalysisOptions
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom

OPTIONS = AnalysisOptions(model="none", engine="classical")
FAST = ("--no-model", "--engine", "classical")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A small phantom (ct.nrrd) and its analysis, computed once."""
    base = tmp_path_factory.mktemp("disk_full")
    folder = write_phantom(generate_phantom(PhantomParams(size="small", seed=5, extent_pct=10,
                                                          pattern="centrilobular")), base / "p", fmt="nrrd")
    return folder / "ct.nrrd", pipeline.analyze_case(folder / "ct.nrrd", OPTIONS)


def digest(path: Path) -> dict:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def full(path, code=errno.ENOSPC) -> OSError:
    """What a write raises on a full disk (after writing part of the file)."""
    Path(path).write_bytes(b"\0" * 1000)
    return OSError(code, os.strerror(code), str(path))


def run(args, monkeypatch, capfd, tmp_path) -> tuple:
    """``emphysema-xai ARGS`` in this process with its own temporary folder: (exit code,
    stdout, stderr, traceback logs written)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    capfd.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err, sorted(p.name for p in tmp.glob("emphysema-xai-error-*"))


def assert_disk_full(result, output: Path, quota: bool = False) -> str:
    code, _out, err, logs = result
    assert code == cli.EXIT_DISK_FULL == 4, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"emphysema-xai: error: cannot write {output}: the disk is full "
                                f"({'disk quota exceeded' if quota else 'no space left on device'} in "
                                f"{output.parent})"), err
    assert "then run again" in lines[-1]
    assert not any("Traceback" in line or "internal error" in line or "Failed to save" in line
                   or "vtkArchive" in line or line.startswith("ERROR:") for line in lines), err
    assert logs == []
    assert [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")] == []
    return lines[-1]


# --------------------------------------------------------------------------- analyze: every file of a case

def _save_label_fails(original):
    def save(array, ct, path):
        if Path(path).name == "laa_map.nrrd":
            raise full(path)
        return original(array, ct, path)
    return save


def _report_fails(result, path, views=None):
    raise full(path, errno.EDQUOT)


def _dicom_wrapped(ds, path):  # pydicom re-raises the OSError with the tag, from the original
    try:
        raise full(path)
    except OSError as error:
        raise OSError(f"With tag (5200,9230) got exception: {error}") from error


def _dicom_text_only(ds, path):  # the same text, with nothing chained: found by "[Errno 28]"
    full(path)
    raise OSError("With tag (5200,9230) got exception: [Errno 28] No space left on device")


def _statvfs_full(real):
    class Full:
        def __init__(self, stats):
            self.f_bavail, self.f_frsize = 0, stats.f_frsize

    return lambda path: Full(real(path))


@pytest.mark.parametrize("writer", ["case files", "report", "scene", "dicom wrapped", "dicom text only"])
def test_analyze_on_a_full_disk_is_one_line_exit_4_and_keeps_the_earlier_output(writer, analysed, tmp_path,
                                                                              monkeypatch, capfd):
    from EmphysemaXAILib.app import report
    from EmphysemaXAILib.app.case_files import write_case
    from EmphysemaXAILib.io import pydicom_compat
    from EmphysemaXAILib.mrml import app as mrml_app
    from EmphysemaXAILib.phantom import io as phantom_io

    ct, result = analysed
    out = tmp_path / "res"
    write_case(result, out, report=False, scene=False)       # an earlier analysis, kept whole
    before = digest(out)
    monkeypatch.setattr(pipeline, "analyze_case", lambda *args, **kwargs: result)
    flags = ["--no-report", "--no-scene"]
    if writer == "case files":
        monkeypatch.setattr(phantom_io, "save_label", _save_label_fails(phantom_io.save_label))
    elif writer == "report":
        flags = ["--no-scene"]
        monkeypatch.setattr(report, "write_report", _report_fails)
    elif writer == "scene":
        flags = ["--no-report"]

        def no_space(self, file_type, properties, messages=None):  # Slicer's writer: False, no errno
            Path(properties["fileName"]).write_bytes(b"\0" * 1000)
            return False

        monkeypatch.setattr(mrml_app._CoreIOManager, "saveNodes", no_space)
        monkeypatch.setattr(os, "statvfs", _statvfs_full(os.statvfs))
    else:
        flags.append("--dicom-out")
        monkeypatch.setattr(pydicom_compat, "save_dicom", _dicom_wrapped if writer == "dicom wrapped"
                            else _dicom_text_only)
    done = run(["analyze", ct, "--out", out, "--overwrite", *FAST, *flags], monkeypatch, capfd, tmp_path)
    assert_disk_full(done, out, quota=writer == "report")
    assert digest(out) == before


# --------------------------------------------------------------------------- patterns, fit-linear, batch

def test_patterns_csv_on_a_full_disk(tmp_path, monkeypatch, capfd):
    from EmphysemaXAILib.model import pattern_images, pattern_infer

    image = tmp_path / "roi.nrrd"
    image.write_bytes(b"not read: classify is replaced")
    row = dict.fromkeys(pattern_images.COLUMNS, 0.1) | {"image": str(image), "slice": 0, "pattern": "normal",
                                                         "subclass": "", "air_source": "none"}

    class Predictor:
        info = {}

        def __init__(self, model, device):
            pass

    monkeypatch.setattr(pattern_infer, "PatternPredictor", Predictor)
    monkeypatch.setattr(pattern_images, "classify", lambda *args, **kwargs: ([row], []))
    out = tmp_path / "patterns.csv"
    out.write_text("an earlier table\n")
    before = digest(out)

    def writerows(self, rows):  # the header line is written, then the quota is full
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(csv.DictWriter, "writerows", writerows)
    done = run(["patterns", image, "--out", out, "--overwrite"], monkeypatch, capfd, tmp_path)
    assert_disk_full(done, out, quota=True)
    assert digest(out) == before


def test_a_model_folder_on_a_full_disk(tmp_path, monkeypatch, capfd):
    import joblib
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 12)
    features = rng.normal(size=(24, 6))
    features[:, 0] += 2 * y
    emb, labels = tmp_path / "emb.csv", tmp_path / "labels.csv"
    emb.write_text("id," + ",".join(f"f{i}" for i in range(6)) + "\n"
                   + "".join(f"c{k}," + ",".join(f"{v:.4f}" for v in row) + "\n" for k, row in enumerate(features)))
    labels.write_text("id,label\n" + "".join(f"c{k},{'emphysema' if c else 'none'}\n" for k, c in enumerate(y)))
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.json").write_text('{"an": "earlier model"}\n')
    before = digest(out)

    def dump(value, path, *args, **kwargs):
        raise full(path)

    monkeypatch.setattr(joblib, "dump", dump)
    done = run(["fit-linear", "--embeddings", emb, "--labels", labels, "--out", out, "--overwrite"],
               monkeypatch, capfd, tmp_path)
    assert_disk_full(done, out)
    assert digest(out) == before


@pytest.fixture()
def three_cases(analysed, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for case in ("c0", "c1", "c2"):
        shutil.copy(analysed[0], root / f"{case}.nrrd")
    return root


def test_cohort_csv_on_a_full_disk_keeps_the_earlier_one(three_cases, analysed, tmp_path, monkeypatch, capfd):
    from EmphysemaXAILib.app import batch

    monkeypatch.setattr(pipeline, "analyze_case", lambda *args, **kwargs: analysed[1])
    out = tmp_path / "out"
    first = run(["batch", three_cases, "--out", out, *FAST, "--no-scene", "--no-report"], monkeypatch, capfd, tmp_path)
    assert first[0] == 0, first[2]
    before = digest(out / "cohort.csv")

    def write_csv(path, rows, columns):
        raise full(path)

    monkeypatch.setattr(batch, "write_csv", write_csv)
    done = run(["batch", three_cases, "--out", out, "--overwrite", *FAST, "--no-scene", "--no-report"],
               monkeypatch, capfd, tmp_path)
    assert_disk_full(done, out / "cohort.csv")
    assert digest(out / "cohort.csv") == before
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["c0", "c1", "c2"]
    assert all((out / "cases" / c / "summary.json").is_file() for c in ("c0", "c1", "c2"))


def test_batch_stops_at_the_first_case_on_a_full_disk(three_cases, analysed, tmp_path, monkeypatch, capfd):
    from EmphysemaXAILib.app import case_files

    calls = []

    def analyze(path, *args, **kwargs):
        calls.append(Path(path).name)
        return analysed[1]

    original = case_files.write_case_files

    def write(result, folder, **kwargs):
        original(result, folder, **kwargs)
        if Path(folder).name.startswith(".c1-"):
            raise full(Path(folder) / "summary.json")

    monkeypatch.setattr(pipeline, "analyze_case", analyze)
    monkeypatch.setattr(case_files, "write_case_files", write)
    out = tmp_path / "out"
    done = run(["batch", three_cases, "--out", out, *FAST, "--no-scene", "--no-report"], monkeypatch, capfd, tmp_path)
    line = assert_disk_full(done, out / "cases" / "c1")
    assert "the batch stopped: 1 finished case kept, 1 not finished, cohort.csv written" in line
    assert line.endswith("then run again with --resume")
    assert calls == ["c0.nrrd", "c1.nrrd"]            # c2 was never started
    with open(out / "cohort.csv", newline="") as handle:
        rows = {r["case_id"]: r for r in csv.DictReader(handle)}
    assert rows["c0"]["status"] == "ok" and float(rows["c0"]["laa950_pct"]) > 0
    assert rows["c1"]["status"] == "failed" and rows["c1"]["error"] == \
        f"disk full: No space left on device writing {out / 'cases' / 'c1'}"
    assert rows["c2"]["status"] == "failed" and rows["c2"]["error"].startswith("not finished: the batch stopped")
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["c0"]   # no .c1-* left
    assert not (out / "qc_montage.png").exists()


# --------------------------------------------------------------------------- the building blocks

def test_disk_full_errno_reads_errno_chains_and_text():
    assert disk_full_errno(OSError(errno.ENOSPC, "x")) == errno.ENOSPC
    assert disk_full_errno(OSError(errno.EDQUOT, "x")) == errno.EDQUOT
    assert disk_full_errno(OSError(errno.EACCES, "Permission denied")) is None
    assert disk_full_errno(RuntimeError("could not write")) is None
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as inner:
            raise RuntimeError("ITK ERROR: write failed") from inner
    except RuntimeError as outer:
        assert disk_full_errno(outer) == errno.ENOSPC
    assert disk_full_errno(OSError("got exception: [Errno 122] Disk quota exceeded")) == errno.EDQUOT
    error = DiskFullError("/data/out", errno.EDQUOT)
    assert disk_full_errno(error) == errno.EDQUOT and "\n" not in str(error)
    import pickle

    again = pickle.loads(pickle.dumps(DiskFullError("/data/out", errno.ENOSPC, "kept", "resume")))
    assert (again.path, again.errno, again.detail, again.again, str(again)) == \
        ("/data/out", errno.ENOSPC, "kept", "resume", str(DiskFullError("/data/out", errno.ENOSPC, "kept", "resume")))


def test_an_opaque_library_error_on_a_full_folder_is_a_full_disk(tmp_path, monkeypatch):
    """ITK says "couldn't write gzip data" with no errno: the folder it wrote into is looked at."""
    out = tmp_path / "model"
    monkeypatch.setattr(os, "statvfs", _statvfs_full(os.statvfs))
    with pytest.raises(DiskFullError) as caught:
        with atomic_folder(out) as folder:
            (folder / "weights.bin").write_bytes(b"\0" * 100)
            raise RuntimeError("ITK ERROR: NrrdImageIO: couldn't write gzip data")
    assert caught.value.path == str(out) and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="gzip"):   # with space left it stays what it was
        with atomic_folder(out):
            raise RuntimeError("ITK ERROR: NrrdImageIO: couldn't write gzip data")
    with pytest.raises(DiskFullError, match="disk quota exceeded"):
        write_atomic(tmp_path / "a.csv", lambda tmp: (_ for _ in ()).throw(full(tmp, errno.EDQUOT)))
    assert list(tmp_path.iterdir()) == []


def test_an_internal_error_whose_log_cannot_be_written_is_still_one_line(tmp_path, monkeypatch, capfd):
    def boom(args):
        raise RuntimeError("simulated failure")

    real_write = Path.write_text

    def write_text(self, *args, **kwargs):  # the temporary folder's disk is full too
        if self.name.startswith("emphysema-xai-error-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(cli.COMMANDS["info"], "run", boom)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(Path, "write_text", write_text)
    code = cli.main(["info", str(tmp_path)])
    err = capfd.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "simulated failure" in err and "no traceback log: No space left on device" in err
    assert list(tmp_path.iterdir()) == []
