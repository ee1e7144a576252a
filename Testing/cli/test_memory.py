"""Memory (issue 28): a scan whose analysis needs more memory than the process may have is refused
from its header, before any voxel is read, with one line and exit 2 (``--max-memory``, the
address-space limit, the cgroup limit); a MemoryError beyond the estimate is one line too; the
estimate (io/memory.py, measured by bench/bench_memory.py) is not below a real run's peak."""
import gzip
import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest
from helpers import PROJECT, run_cli

from EmphysemaXAILib.errors import InputError
from EmphysemaXAILib.io.memory import (
    GB,
    MB,
    cgroup_room,
    input_voxels,
    memory_needed,
    parse_size,
    steps_for,
)
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT / "EmphysemaXAI"), os.environ.get("PYTHONPATH", "")]))
FAST = ("--no-model", "--engine", "classical", "--no-scene", "--no-report")


def big_nrrd(path, size=(512, 512, 600), data: bool = True):
    """An NRRD header of ``size`` (x, y, z) int16 voxels; with ``data`` gzip-compressed zeros
    (a valid file of a few hundred kB), else a data file holding a few bytes (reading it fails)."""
    header = (f"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: {size[0]} {size[1]} "
              f"{size[2]}\nspace directions: (0.7,0,0) (0,0.7,0) (0,0,1)\nkinds: domain domain domain\n"
              "endian: little\nencoding: gzip\nspace origin: (0,0,0)\n\n")
    if not data:
        path.write_bytes(header.replace("encoding: gzip", "encoding: raw").encode() + b"\x00" * 16)
        return path
    plane = np.zeros(size[0] * size[1], np.int16).tobytes()
    with open(path, "wb") as handle:
        handle.write(header.encode())
        with gzip.GzipFile(fileobj=handle, mode="wb", compresslevel=1) as packed:
            for _ in range(size[2]):
                packed.write(plane)
    return path


def assert_one_line_refusal(result, out, *texts):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("emphysema-xai: error:"), lines[0]
    for text in texts:
        assert text in lines[0], lines[0]
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp folder, no lock
    return lines[0]


def test_sizes_parse_with_their_unit():
    assert parse_size("8G") == 8 * GB
    assert parse_size("512M") == 512 * MB
    assert parse_size("1.5GB") == int(1.5 * GB)
    assert parse_size("2gib") == 2 * GB
    assert parse_size("1T") == 1024 * GB
    for bad in ("8", "-1G", "0G", "lots", "8X"):
        with pytest.raises(InputError, match="give a size with a unit"):
            parse_size(bad)


def test_the_estimate_grows_with_the_voxels_and_the_steps():
    full = 512 * 512 * 400
    assert memory_needed(full, steps_for(True, True)) >= memory_needed(full, steps_for(False, False))
    # a full-size chest, every step: measured 2.84 GB (bench/bench_memory.py), estimated 1.25 x 2.8 GB
    assert 3.3 * GB < memory_needed(full, steps_for(True, True)) < 3.7 * GB
    # far larger scans: QCT's 19.1 bytes per voxel dominate
    assert memory_needed(10**10, steps_for(True, False)) == pytest.approx(1.25 * 19.1e10, rel=0.01)
    # small scans: the model's fixed part (torch, its weights and working memory)
    assert memory_needed(10**6, steps_for(True, False)) > memory_needed(10**6, steps_for(False, False)) + 500 * MB


def test_the_cgroup_limit_is_read_from_v1_and_v2(tmp_path):
    v2 = tmp_path / "v2"
    (v2 / "user.slice" / "job").mkdir(parents=True)
    (v2 / "user.slice" / "memory.max").write_text("4294967296\n")          # 4 GB on the parent
    (v2 / "user.slice" / "memory.current").write_text("1073741824\n")
    (v2 / "user.slice" / "job" / "memory.max").write_text("max\n")          # no limit of its own
    (v2 / "user.slice" / "job" / "memory.current").write_text("1000\n")
    (tmp_path / "cgroup2").write_text("0::/user.slice/job\n")
    assert cgroup_room(str(tmp_path / "cgroup2"), str(v2)) == 3 * GB
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)   # a container: the process's own path is not mounted
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(2 * GB))
    (v1 / "memory" / "memory.usage_in_bytes").write_text(str(GB // 2))
    (tmp_path / "cgroup1").write_text("4:memory:/docker/abc\n3:cpu:/docker/abc\n0::/\n")
    assert cgroup_room(str(tmp_path / "cgroup1"), str(v1)) == 3 * GB // 2
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")   # "no limit"
    assert cgroup_room(str(tmp_path / "cgroup1"), str(v1)) is None


def test_the_voxels_come_from_the_header_alone(tmp_path):
    assert input_voxels(big_nrrd(tmp_path / "ct.nrrd", (512, 512, 700), data=False)) == (512, 512, 700)
    phantom = write_phantom(generate_phantom(PhantomParams(size="small", seed=3)), tmp_path / "p", fmt="dicom")
    assert input_voxels(phantom / "ct") == (128, 128, 96)


def test_max_memory_below_the_need_is_refused_before_the_voxels_are_read(tmp_path):
    # the header says 512 x 512 x 400; the data file holds 16 bytes: reading it would fail
    ct = big_nrrd(tmp_path / "ct.nrrd", (512, 512, 400), data=False)
    out = tmp_path / "out"
    assert_one_line_refusal(run_cli("analyze", ct, "--out", out, "--max-memory", "2G"), out,
                            "512x512x400-voxel scan needs about 3.5 GB", "more than the 2.0 GB allowed (--max-memory",
                            "resample the scan to a coarser grid")
    # explanations take more than the rest on a mid-size scan: the line says what fits
    ct = big_nrrd(tmp_path / "mid.nrrd", (256, 256, 200), data=False)
    line = assert_one_line_refusal(
        run_cli("analyze", ct, "--out", out, "--max-memory", "2.3G", "--explain", "gradcam"), out,
        "256x256x200-voxel scan needs about 2.4 GB", "analyse with --no-model (QCT only) (about 1.9 GB)")
    assert "without --explain" not in line   # the model alone needs 2.4 GB: no use
    # with room enough, the same file goes on to the reader, which refuses the missing data
    result = run_cli("analyze", ct, "--out", out, "--max-memory", "1T", *FAST)
    assert result.returncode == 2 and "needs about" not in result.stderr, result.stderr
    assert "cannot be read as an image" in result.stderr.splitlines()[-1]
    # a size without a unit is refused by name
    result = run_cli("analyze", ct, "--out", out, "--max-memory", "8")
    assert_one_line_refusal(result, out, "--max-memory '8': give a size with a unit, e.g. 8G or 512M")


def _address_space_after_imports() -> int:
    """VmSize (bytes) of a Python that has imported what the command line imports before the check."""
    code = ("import EmphysemaXAILib.cli, EmphysemaXAILib.pipeline, EmphysemaXAILib.io.read, SimpleITK, scipy.ndimage\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmSize:')][0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    return int(done.stdout.strip()) * 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status: Linux")
def test_an_address_space_limit_below_the_need_is_one_line_and_nothing_written(tmp_path):
    """ulimit -v: the scan (512 x 512 x 600, about 8 GB for its analysis) is refused up front."""
    ct = big_nrrd(tmp_path / "ct.nrrd")
    limit = _address_space_after_imports() + 1536 * MB

    def lower_limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "EmphysemaXAILib", "analyze", str(ct), "--out", str(out)],
                            capture_output=True, text=True, env=ENV, preexec_fn=lower_limit, timeout=300)
    assert_one_line_refusal(result, out, "512x512x600-voxel scan needs about",
                            "of the address-space limit (ulimit -v)")


def test_a_memory_error_beyond_the_estimate_is_one_line_and_nothing_written(tmp_path):
    ct = write_phantom(generate_phantom(PhantomParams(size="small", seed=4)), tmp_path / "p", fmt="nrrd") / "ct.nrrd"
    code = ("import sys\nfrom EmphysemaXAILib.analysis import qct\n"
            "def boom(*a, **k):\n    raise MemoryError()\n"
            "qct.measure_qct = boom\nfrom EmphysemaXAILib.cli import main\nsys.exit(main(sys.argv[1:]))")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", code, "analyze", str(ct), "--out", str(out), *FAST],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[")]   # progress lines
    assert errors and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith("emphysema-xai: error: ran out of memory (") and "outputs were removed" in errors[0]
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["p"]


def test_a_memory_error_in_a_batch_case_is_a_failed_row_naming_memory(tmp_path, monkeypatch):
    from EmphysemaXAILib.analysis import qct
    from EmphysemaXAILib.app.batch import run_batch
    from EmphysemaXAILib.options import AnalysisOptions

    root = tmp_path / "root"
    root.mkdir()
    folder = write_phantom(generate_phantom(PhantomParams(size="small", seed=6)), tmp_path / "p", fmt="nrrd")
    (folder / "ct.nrrd").rename(root / "a.nrrd")

    def boom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(qct, "measure_qct", boom)
    rows = run_batch(root, tmp_path / "out", AnalysisOptions(model="none", engine="classical"), scene=False,
                     report=False, progress=False)
    assert [r["status"] for r in rows] == ["failed"]
    assert rows[0]["error"].startswith("MemoryError: ran out of memory ("), rows[0]["error"]
    assert "outputs were removed" in rows[0]["error"]
    assert list((tmp_path / "out" / "cases").iterdir()) == []


def test_the_estimate_is_not_below_the_peak_of_a_real_run(tmp_path):
    """analyze (shipped model, report, scene) on a small phantom in a child: its peak resident
    memory (VmHWM) is at most the estimate, and the estimate is not wildly above it."""
    ct = write_phantom(generate_phantom(PhantomParams(size="small", seed=5, extent_pct=10, pattern="mixed")),
                       tmp_path / "p", fmt="nrrd") / "ct.nrrd"
    # the child's own high-water mark (VmHWM, kB): not ru_maxrss, which after a (v)fork + exec keeps
    # the parent's peak (Linux records the old mm's high-water mark at exec): inside a full test
    # run the pytest worker's 4 GB showed up as this child's peak
    code = ("import sys\nfrom EmphysemaXAILib.cli import main\ncode = main(sys.argv[1:])\n"
            "print('MAXRSS', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))\n"
            "sys.exit(code)")
    # the classical engine, as bench/bench_memory.py measured it (lungmask, when its weights are
    # found, is not in the estimate); a clean hub folder, so no weights left by another test count
    env = dict(ENV, TORCH_HOME=str(tmp_path / "hub"))
    env.pop("EMPHYSEMA_XAI_LUNGMASK_WEIGHTS", None)
    result = subprocess.run([sys.executable, "-c", code, "analyze", str(ct), "--out", str(tmp_path / "out"),
                             "--engine", "classical"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    peak = int(next(line for line in result.stdout.splitlines() if line.startswith("MAXRSS")).split()[1]) * 1024
    need = memory_needed(128 * 128 * 96, steps_for(model=True, explain=False))
    assert (tmp_path / "out" / "scene.mrb").is_file() and (tmp_path / "out" / "pattern_map.nrrd").is_file()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert peak <= need < 2.0 * peak, (peak / MB, need / MB, summary.get("timings_s"))
