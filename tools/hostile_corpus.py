#!/usr/bin/env python3
"""Hostile-input corpus: how the `emphysema-xai` command line stands against what a new user
throws at it, checked from the outside.

    .venv/bin/python tools/hostile_corpus.py --out DIR [--only PATTERN] [--list]

Every case builds its own inputs in DIR/inputs/<case>/ (phantoms from EmphysemaXAILib.phantom,
DICOM from EmphysemaXAILib.io.dicom_write, headers edited with pydicom, NRRD / NIfTI / PNG written
with SimpleITK / numpy / Pillow), then runs the relevant commands as subprocesses
(`sys.executable -m EmphysemaXAILib ...`, umask 022, TMPDIR = DIR/tmp/<case>--<command>/ so
scratch leftovers can be counted; `--no-scene --no-report --engine classical` for analyze /
batch except in the one case that checks the scene path; `--no-model` except in the
orientation cases). Results: a Markdown table on stdout, DIR/corpus.csv and DIR/corpus.md.

What each (case, command) row records and how the verdict is reached (contract: README.md
"Command line" and ../shared/docs/contracts.md):

- exit: the exit code (negative = killed by that signal); expected: what the contract wants
  ("0", "2", "3", "!0" = any non-zero, "0|2" = either is acceptable);
- stderr_lines (all non-blank lines) and first_stderr (the first line that is not a progress
  line such as "[ 17%] quality control" or a tqdm bar, 160 characters at most);
- exit 2 must come with exactly one `emphysema-xai: error: ...` line. Progress lines and the
  product's own "  warning ..." / "  note: ..." lines printed before it are tolerated (they are
  the human text the contract sends to stderr); any other line is not;
- exit 3 must come with an `emphysema-xai: excluded ...` line;
- traceback: "Traceback (most recent call last)" anywhere in stdout / stderr;
- numpy_repr: `np.float64(` / `np.int64(` (any numpy scalar repr) in stdout, stderr or any text
  output (json, csv, html, txt, md) the command wrote;
- raw ITK `WARNING` lines on stderr, and the synthetic patient identity of the DICOM inputs
  (name, ID, birth date) in stdout / stderr / text outputs, are contract breaches too;
- inputs_unchanged: SHA-256 of every input file before and after (a missing file is a change);
- leftovers: new hidden entries (`.<name>-*` temporary folders or files, `*.lock`) anywhere
  under the folder holding the output, and any new entry in the run's TMPDIR (an
  `emphysema-xai-error-*.log` from an internal error is reported in `detail`, not here);
- `--json` runs that exit 0 must print exactly one JSON object on stdout;
- every run's command line, stdout and stderr are kept in DIR/logs/ for checking by hand;
- case-specific checks (numbers that must agree, cohort rows, folder modes ...) add to
  `problems`; verdict is `ok` when there is no problem, `FAIL` otherwise, `n/a ...` when the
  case cannot be exercised here (e.g. read-only folders as root), `TOOL-ERROR` when a check of
  this script itself crashed (never counted as a product defect).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "EmphysemaXAI"))  # when not installed; PYTHONPATH can point elsewhere


def save_dicom(ds, path) -> None:
    """Write an edited header the same way under pydicom 2.4 (3D Slicer's) and pydicom 3."""
    from EmphysemaXAILib.io.pydicom_compat import save_dicom as save

    save(ds, path)


PROGRESS_LINE = re.compile(r"^\s*(\[\s*\d+%\]|cases:|\d+%\|)")
PRODUCT_TEXT_LINE = re.compile(r"^\s+(warning|note:?)\s")
TRACEBACK = "Traceback (most recent call last)"
NUMPY_REPR = re.compile(r"np\.(float|int|uint|complex)\d*\(|np\.(bool_?|str_)\(")
ITK_WARNING = re.compile(r"^\s*WARNING\b")
IDENTITY = ("SYNTHETIC^PHANTOM", "SYNTH0001", "19500101")  # write_dicom_series' synthetic patient
TEXT_SUFFIXES = {".json", ".csv", ".html", ".txt", ".md", ".tsv", ".log"}
ZONES = ("whole", "upper", "middle", "lower")
#: Axis order and flips (SimpleITK index order x, y, z): the same chest stored another way;
#: PermuteAxes / Flip move voxels and keep every voxel's physical (LPS) position.
STORAGES = {
    "axial": ((0, 1, 2), (False, False, False)),
    "coronal": ((0, 2, 1), (False, True, False)),
    "sagittal": ((2, 1, 0), (True, False, True)),
    "flipped": ((0, 1, 2), (True, True, True)),
}
ANALYZE_FAST = ("--engine", "classical", "--no-scene", "--no-report")
CASE_FILES = ("summary.json", "qct.csv", "lung_labels.nrrd", "laa_map.nrrd")


# --------------------------------------------------------------------------- small helpers

def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_inputs(paths) -> dict:
    """path -> SHA-256 of every regular file under ``paths`` (symbolic links not followed)."""
    out = {}
    for root in paths:
        root = Path(root)
        if root.is_file():
            out[str(root)] = sha256_of(root)
        elif root.is_dir():
            for folder, _dirs, files in os.walk(root):
                for name in files:
                    path = Path(folder) / name
                    if path.is_file() and not path.is_symlink():
                        out[str(path)] = sha256_of(path)
    return out


def listing(folder: Path) -> set:
    """Every path under ``folder`` (relative, recursive, links not followed)."""
    found = set()
    if not folder.is_dir():
        return found
    for current, dirs, files in os.walk(folder):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(current, name), folder))
    return found


def outermost(paths) -> list:
    """The paths of ``paths`` that have no ancestor in ``paths``."""
    chosen = set(paths)
    return sorted(p for p in chosen if not any(str(a) in chosen for a in Path(p).parents if str(a) != "."))


def expected_ok(expected: str, code) -> bool:
    if code is None:
        return False
    if expected == "!0":
        return code != 0
    return str(code) in expected.split("|")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_cohort(out: Path) -> list:
    """The rows of ``out``/cohort.csv (empty when there is none)."""
    path = Path(out) / "cohort.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def zone_figures(summary: dict | None) -> dict:
    """%LAA-950 of whole / upper / middle / lower and the CNN class of a summary.json."""
    if not summary or not summary.get("qct"):
        return {}
    regions = {r["region"]: r for r in summary["qct"]["regions"]}
    out = {z: regions[z]["laa950_pct"] for z in ZONES if z in regions}
    if summary.get("severity"):
        out["cnn_class"] = summary["severity"]["class"]
    return out


def compare_zones(reference: dict, other: dict, tol: float, what: str) -> list:
    """Problems when %LAA-950 of a zone differs by more than ``tol`` points or the class differs."""
    if not reference:
        return [f"no reference figures to compare {what} with"]
    if not other:
        return [f"{what}: no QCT figures (no summary.json)"]
    problems = []
    for zone in ZONES:
        a, b = reference.get(zone), other.get(zone)
        if a is None or b is None or abs(a - b) > tol:
            problems.append(f"{what}: {zone} %LAA-950 {b} vs {a} (tolerance {tol})")
    if "cnn_class" in reference and reference.get("cnn_class") != other.get("cnn_class"):
        problems.append(f"{what}: CNN class {other.get('cnn_class')} vs {reference['cnn_class']}")
    return problems


def zone_detail(reference: dict, other: dict) -> str:
    parts = []
    for zone in ZONES:
        if zone in other and zone in reference:
            parts.append(f"{zone} {other[zone]:.3f} (ref {reference[zone]:.3f})")
    if "cnn_class" in other:
        parts.append(f"CNN {other['cnn_class']} (ref {reference.get('cnn_class')})")
    return "; ".join(parts)


def all_warnings(summary: dict | None) -> list:
    if not summary:
        return []
    return list(summary.get("warnings") or []) + list((summary.get("qc") or {}).get("warnings") or [])


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --------------------------------------------------------------------------- one run

@dataclass
class Run:
    """One command run on one case, and everything observed about it."""

    case: str
    command: str                      # a short label for the table
    argv: list
    expected: str
    inputs: list = field(default_factory=list)   # files / folders that must stay byte-identical
    out: Path | None = None           # the output the command writes
    watch: list = field(default_factory=list)    # folders searched for hidden leftovers
    scan: list = field(default_factory=list)     # outputs searched for numpy reprs / identity
    cwd: Path | None = None
    check: object = None              # check(run) -> list of problems (may set run.detail)
    # filled in while running
    proc: object = None
    tmpdir: Path | None = None
    stdout: str = ""
    stderr: str = ""
    code: object = None
    seconds: float = 0.0
    detail: str = ""
    problems: list = field(default_factory=list)
    hashes_before: dict = field(default_factory=dict)
    listings_before: dict = field(default_factory=dict)
    signal_note: str = ""
    numpy_repr: bool = False
    inputs_unchanged: bool = True
    leftovers: list = field(default_factory=list)
    tool_error: str = ""              # set when this script (not the product) failed
    cohort: list = field(default_factory=list)   # cohort.csv rows, for batch checks
    _out_lines: list = field(default_factory=list)
    _err_lines: list = field(default_factory=list)
    _threads: list = field(default_factory=list)
    _started: float = 0.0
    _trigger: object = None
    _triggered: object = None


class Corpus:
    """Builds cases, runs commands, records rows."""

    def __init__(self, root: Path):
        self.root = root
        self.inputs = root / "inputs"
        self.outs = root / "outs"
        self.tmp = root / "tmp"
        self.logs = root / "logs"
        for folder in (self.tmp, self.logs):  # this script's own scratch: start empty
            shutil.rmtree(folder, ignore_errors=True)
        for folder in (self.inputs, self.outs, self.tmp, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.rows: list = []
        self.refs: dict = {}
        self._phantom = None
        self._runs = 0

    # ---------------------------------------------------------------- materials
    @property
    def phantom(self):
        """A small chest phantom (128 x 128 x 96 at 2.5 mm), mixed emphysema 10% of the lung,
        60 / 30 / 10% of it in the upper / middle / lower third (so mixed-up zones show)."""
        if self._phantom is None:
            from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

            self._phantom = generate_phantom(PhantomParams(size="small", extent_pct=10.0, pattern="mixed",
                                                           zones=(0.6, 0.3, 0.1), seed=4))
        return self._phantom

    def case_dirs(self, case: str) -> tuple:
        """Fresh DIR/inputs/<case> and DIR/outs/<case>."""
        made = []
        for base in (self.inputs, self.outs):
            folder = base / case
            if folder.exists() or folder.is_symlink():
                _make_writable(folder)
                shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            made.append(folder)
        return tuple(made)

    def write_dicom(self, folder: Path, hu=None, **options) -> list:
        """The phantom (or ``hu`` on its grid) as a DICOM CT series, one file per slice."""
        from EmphysemaXAILib.io.dicom_write import write_dicom_series
        from EmphysemaXAILib.volume import OUTSIDE_FOV_HU

        ct = self.phantom.ct
        acq = ct.acquisition
        extra = {"PixelPaddingValue": int(OUTSIDE_FOV_HU + 1024)}
        extra.update(options.pop("extra", {}) or {})
        args = dict(kernel=acq["kernel"], kvp=acq["kvp"], exposure_mas=acq["exposure_mas"],
                    ctdivol=acq["ctdivol"], series_description="hostile corpus phantom", seed=4, extra=extra)
        args.update(options)
        spacing = args.pop("spacing", ct.spacing)
        origin = args.pop("origin", ct.origin)
        direction = args.pop("direction", ct.direction)
        return write_dicom_series(ct.hu if hu is None else hu, folder, spacing, origin, direction, **args)

    def ct_image(self):
        return self.phantom.ct.to_sitk()

    def write_image(self, path: Path, image=None, compress: bool = True) -> Path:
        import SimpleITK as sitk

        sitk.WriteImage(self.ct_image() if image is None else image, str(path), useCompression=compress)
        return path

    def write_mask(self, path: Path, array=None) -> Path:
        """A lung label map (0 / 1 / 2, or ``array``) on the phantom's CT grid."""
        import SimpleITK as sitk

        ct = self.phantom.ct
        image = sitk.GetImageFromArray(np.asarray(self.phantom.labels["lungs"] if array is None else array))
        image.SetSpacing([float(s) for s in ct.spacing])
        image.SetOrigin([float(o) for o in ct.origin])
        image.SetDirection([float(d) for d in ct.direction])
        sitk.WriteImage(image, str(path), useCompression=True)
        return path

    # ---------------------------------------------------------------- running
    def launch(self, run: Run, trigger: str | None = None) -> Run:
        """Start ``run`` (hashes and listings taken first). ``trigger``: a regex; the run's
        ``_triggered`` event is set when a stderr line matches it."""
        self._runs += 1
        run.tmpdir = self.tmp / f"{self._runs:03d}-{slug(run.case + '--' + run.command)}"
        shutil.rmtree(run.tmpdir, ignore_errors=True)
        run.tmpdir.mkdir(parents=True)
        if run.out is not None and not run.watch:
            run.watch = [Path(run.out).parent]
        if run.out is not None and not run.scan:
            run.scan = [Path(run.out)]
        run.hashes_before = hash_inputs(run.inputs)
        run.listings_before = {str(w): listing(Path(w)) for w in run.watch}
        run._trigger = re.compile(trigger) if trigger else None
        run._triggered = threading.Event()
        env = dict(os.environ, TMPDIR=str(run.tmpdir), PYTHONUNBUFFERED="1")
        env.pop("PYTHONWARNINGS", None)
        run._started = time.monotonic()
        run.proc = subprocess.Popen([sys.executable, "-m", "EmphysemaXAILib", *map(str, run.argv)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    text=True, errors="replace", env=env, cwd=str(run.cwd or self.root),
                                    start_new_session=True, umask=0o022)

        def pump(stream, lines, watch_trigger):
            for line in stream:
                lines.append(line)
                if watch_trigger and run._trigger is not None and run._trigger.search(line):
                    run._triggered.set()
            stream.close()

        run._threads = [threading.Thread(target=pump, args=(run.proc.stdout, run._out_lines, False), daemon=True),
                        threading.Thread(target=pump, args=(run.proc.stderr, run._err_lines, True), daemon=True)]
        for thread in run._threads:
            thread.start()
        return run

    def wait(self, run: Run, timeout: float = 300.0) -> None:
        try:
            run.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait()
            run.problems.append(f"did not finish within {timeout:.0f} s (killed by this script)")
        for thread in run._threads:
            thread.join(timeout=10)
        run.seconds = time.monotonic() - run._started
        run.code = run.proc.returncode
        run.stdout, run.stderr = "".join(run._out_lines), "".join(run._err_lines)
        log = self.logs / f"{run.tmpdir.name}.txt"
        log.write_text(f"$ emphysema-xai {' '.join(map(str, run.argv))}\n"
                       f"(cwd {run.cwd or self.root}; exit {run.code})\n"
                       f"--- stdout\n{run.stdout}--- stderr\n{run.stderr}")

    def finish(self, run: Run, timeout: float = 300.0) -> dict:
        """Wait for ``run``, judge it against the contract and its own check, record a row."""
        if run.code is None:
            self.wait(run, timeout)
        self.judge(run)
        return self.record(run)

    def run(self, case, command, argv, expected, **options) -> Run:
        run = Run(case=case, command=command, argv=list(argv), expected=expected, **options)
        self.launch(run)
        self.finish(run)
        return run

    def skip(self, case, command, expected, verdict, detail) -> None:
        print(f"  {verdict} {case} / {command}: {detail}", file=sys.stderr, flush=True)
        self.rows.append({"case": case, "command": command, "exit": "", "expected": expected, "verdict": verdict,
                          "stderr_lines": "", "first_stderr": "", "traceback": "", "numpy_repr": "",
                          "inputs_unchanged": "", "leftovers": "", "problems": "", "detail": detail, "seconds": 0})

    # ---------------------------------------------------------------- judging
    def judge(self, run: Run) -> None:
        problems = run.problems
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        product = [line for line in lines if line.startswith("emphysema-xai")]
        other = [line for line in lines if not PROGRESS_LINE.search(line) and not PRODUCT_TEXT_LINE.search(line)
                 and not line.startswith("emphysema-xai")]
        if not expected_ok(run.expected, run.code):
            problems.append(f"exit {run.code}, contract wants {run.expected}")
        if run.code == 2:
            if len(product) != 1 or not product[0].startswith("emphysema-xai: error:") or other:
                problems.append(f"exit 2 without exactly one 'emphysema-xai: error:' line "
                                f"({len(product)} product line(s), {len(other)} other line(s) on stderr)")
        if run.code == 3 and not any(line.startswith("emphysema-xai: excluded") for line in product):
            problems.append("exit 3 without an 'emphysema-xai: excluded' line")
        texts = [run.stdout, run.stderr] + self._output_texts(run)
        if any(TRACEBACK in text for text in (run.stdout, run.stderr)):
            problems.append("Python traceback printed")
        run.numpy_repr = any(NUMPY_REPR.search(text) for text in texts)
        if run.numpy_repr:
            problems.append("numpy scalar repr (np.float64( ...) in the output")
        itk = [line for line in lines if ITK_WARNING.search(line)]
        if itk:
            problems.append(f"raw ITK warning on stderr: {itk[0][:100]}")
        leaked = [tag for tag in IDENTITY if any(tag in text for text in texts)]
        if leaked:
            problems.append(f"patient identity in the output ({', '.join(leaked)})")
        after = hash_inputs(run.inputs)
        changed = [p for p, digest in run.hashes_before.items() if after.get(p) != digest]
        run.inputs_unchanged = not changed
        if changed:
            missing = sum(1 for p in changed if p not in after)
            problems.append(f"{len(changed)} of {len(run.hashes_before)} input files changed or gone "
                            f"({missing} gone), e.g. {Path(changed[0]).name}")
        leftovers = []
        for folder in run.watch:
            new = listing(Path(folder)) - run.listings_before.get(str(folder), set())
            hidden = [p for p in new if Path(p).name.startswith(".") or Path(p).name.endswith(".lock")]
            leftovers += [str(Path(folder) / p) for p in outermost(hidden)]
        scratch = sorted(os.listdir(run.tmpdir)) if run.tmpdir.is_dir() else []
        logs = [name for name in scratch if name.startswith("emphysema-xai-error-")]
        leftovers += [str(run.tmpdir / name) for name in scratch if name not in logs]
        run.leftovers = leftovers
        if leftovers:
            problems.append(f"left behind: {', '.join(os.path.relpath(p, self.root) for p in leftovers[:3])}"
                            + (f" (+{len(leftovers) - 3})" if len(leftovers) > 3 else ""))
        if logs:
            run.detail = (run.detail + "; " if run.detail else "") + f"internal-error log {logs[0]}"
        if "--json" in run.argv and run.code == 0:
            try:
                json.loads(run.stdout)
            except ValueError:
                problems.append("--json did not print exactly one JSON object on stdout")
        if run.check is not None:
            try:
                problems += run.check(run) or []
            except Exception:  # noqa: BLE001 - a bug of this script, reported as such
                run.tool_error = traceback.format_exc(limit=3).strip().splitlines()[-1]
                problems.append(f"TOOL-ERROR in the case check: {run.tool_error}")

    def _output_texts(self, run: Run) -> list:
        texts = []
        for root in run.scan:
            root = Path(root)
            files = [root] if root.is_file() else (sorted(p for p in root.rglob("*") if p.is_file())
                                                    if root.is_dir() else [])
            for path in files:
                if path.suffix.lower() in TEXT_SUFFIXES and path.stat().st_size < 20_000_000:
                    if str(path) in run.hashes_before:  # an input, not an output
                        continue
                    texts.append(path.read_text(errors="replace"))
        return texts

    def record(self, run: Run) -> dict:
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        meaningful = [line for line in lines if not PROGRESS_LINE.search(line)]
        first = meaningful[0].strip() if meaningful else ("(progress lines only)" if lines else "")
        verdict = "TOOL-ERROR" if run.tool_error else ("ok" if not run.problems else "FAIL")
        row = {"case": run.case, "command": run.command, "exit": run.code, "expected": run.expected,
               "verdict": verdict, "stderr_lines": len(lines), "first_stderr": first[:160],
               "traceback": TRACEBACK in run.stdout + run.stderr, "numpy_repr": run.numpy_repr,
               "inputs_unchanged": run.inputs_unchanged, "leftovers": len(run.leftovers),
               "problems": " | ".join(run.problems),
               "detail": "; ".join(x for x in (run.signal_note, run.detail) if x), "seconds": round(run.seconds, 1)}
        self.rows.append(row)
        print(f"  {row['verdict']:<4} {run.case} / {run.command}: exit {run.code} ({row['seconds']} s)"
              + (f" -- {row['problems'][:200]}" if run.problems else ""), file=sys.stderr, flush=True)
        return row

    # ---------------------------------------------------------------- shared references
    def reference(self, key: str) -> dict:
        """Figures of a reference run (recorded as its own row the first time)."""
        if key not in self.refs:
            {"dicom": case_dicom_intact, "orient": case_orient_axial}[key](self)
        return self.refs.get(key) or {}


def _make_writable(folder: Path) -> None:
    if not folder.exists() or folder.is_symlink():
        return
    for current, dirs, _files in os.walk(folder):
        for name in dirs:
            path = Path(current) / name
            if not path.is_symlink():
                path.chmod(0o755)
    folder.chmod(0o755)


# --------------------------------------------------------------------------- case registry

CASES: list = []


def case(name: str):
    def register(function):
        CASES.append((name, function))
        function.case_name = name
        return function
    return register


def analyze_argv(ct, out, *extra, model: bool = False) -> list:
    return ["analyze", ct, "--out", out, *ANALYZE_FAST, *(() if model else ("--no-model",)), *extra]


def check_no_half_output(run: Run) -> list:
    """--out is either absent or complete (every file of the case present)."""
    out = Path(run.out)
    if not out.exists():
        return []
    missing = [name for name in CASE_FILES if not (out / name).is_file()]
    return [f"{out.name} half-written: {', '.join(missing)} missing"] if missing else []


# ---------------------------------------------------------------- data loss

@case("dataloss-analyze-out-is-input")
def case_dataloss_analyze_out_is_input(c: Corpus):
    name = case_dataloss_analyze_out_is_input.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    c.write_dicom(ct)
    c.run(name, "analyze IN --out IN --overwrite", analyze_argv(ct, ct, "--overwrite"), "2",
          inputs=[ct], out=ct)


@case("dataloss-analyze-out-contains-input")
def case_dataloss_analyze_out_contains_input(c: Corpus):
    name = case_dataloss_analyze_out_contains_input.case_name
    inputs, _ = c.case_dirs(name)
    study = inputs / "study"
    c.write_dicom(study / "ct")
    (study / "notes.txt").write_text("the user's own notes beside the scan\n")
    c.run(name, "analyze study/ct --out study --overwrite", analyze_argv(study / "ct", study, "--overwrite"), "2",
          inputs=[study], out=study)


@case("dataloss-analyze-out-inside-input")
def case_dataloss_analyze_out_inside_input(c: Corpus):
    """--out an existing subfolder of the input (the DICOM folder is searched recursively, so
    study/ct is part of the input study/): --overwrite must not replace it."""
    name = case_dataloss_analyze_out_inside_input.case_name
    inputs, _ = c.case_dirs(name)
    study = inputs / "study"
    c.write_dicom(study / "ct")
    c.run(name, "analyze study --out study/ct --overwrite", analyze_argv(study, study / "ct", "--overwrite"), "2",
          inputs=[study], out=study / "ct")


@case("dataloss-analyze-new-out-inside-input")
def case_dataloss_analyze_new_out_inside_input(c: Corpus):
    """A new results folder inside the DICOM folder: nothing is lost, so either refused with one
    line or written; when written, a rerun must read the same series, not the results."""
    name = case_dataloss_analyze_new_out_inside_input.case_name
    inputs, outs = c.case_dirs(name)
    ct = inputs / "ct"
    c.write_dicom(ct)
    first = c.run(name, "analyze IN --out IN/results", analyze_argv(ct, ct / "results"), "0|2",
                  inputs=[ct], out=ct / "results")
    if first.code != 0:
        return

    def same_as_first(run):
        a = zone_figures(read_json(ct / "results" / "summary.json"))
        b = zone_figures(read_json(outs / "again" / "summary.json"))
        run.detail = zone_detail(a, b)
        return compare_zones(a, b, 0.01, "rerun with results inside the input")

    c.run(name, "analyze IN (results inside) --out elsewhere", analyze_argv(ct, outs / "again"), "0",
          inputs=[ct], out=outs / "again", check=same_as_first)


@case("dataloss-analyze-out-is-input-file")
def case_dataloss_analyze_out_is_input_file(c: Corpus):
    name = case_dataloss_analyze_out_is_input_file.case_name
    inputs, _ = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    c.run(name, "analyze CT.nrrd --out CT.nrrd --overwrite", analyze_argv(ct, ct, "--overwrite"), "2",
          inputs=[ct], out=ct)


@case("dataloss-analyze-out-empty-string")
def case_dataloss_analyze_out_empty_string(c: Corpus):
    """--out "" is the current folder: with --overwrite it must not replace the folder the user
    is working in (which holds the scan)."""
    name = case_dataloss_analyze_out_empty_string.case_name
    inputs, _ = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    (inputs / "notes.txt").write_text("precious\n")
    c.run(name, 'analyze CT --out "" --overwrite (cwd holds CT)', analyze_argv(ct.name, "", "--overwrite"), "2",
          inputs=[inputs], out=inputs, watch=[inputs.parent], cwd=inputs)


@case("dataloss-analyze-symlink-out-is-input")
def case_dataloss_analyze_symlink_out_is_input(c: Corpus):
    name = case_dataloss_analyze_symlink_out_is_input.case_name
    inputs, outs = c.case_dirs(name)
    ct = inputs / "ct"
    c.write_dicom(ct)
    link = outs / "results"
    link.symlink_to(ct, target_is_directory=True)
    c.run(name, "analyze IN --out LINK(->IN) --overwrite", analyze_argv(ct, link, "--overwrite"), "2",
          inputs=[ct], out=link, watch=[outs, inputs])


@case("dataloss-segment-out-is-ct")
def case_dataloss_segment_out_is_ct(c: Corpus):
    name = case_dataloss_segment_out_is_ct.case_name
    inputs, _ = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    c.run(name, "segment CT --out CT", ["segment", ct, "--out", ct, "--engine", "classical"], "2",
          inputs=[ct], out=ct)


@case("dataloss-segment-out-is-ct-overwrite")
def case_dataloss_segment_out_is_ct_overwrite(c: Corpus):
    name = case_dataloss_segment_out_is_ct_overwrite.case_name
    inputs, _ = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    c.run(name, "segment CT --out CT --overwrite", ["segment", ct, "--out", ct, "--engine", "classical", "--overwrite"],
          "2", inputs=[ct], out=ct)


@case("dataloss-segment-out-existing")
def case_dataloss_segment_out_existing(c: Corpus):
    name = case_dataloss_segment_out_existing.case_name
    inputs, _ = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    old = c.write_mask(inputs / "lungs_edited.nrrd")  # e.g. a mask the user corrected by hand
    c.run(name, "segment CT --out EXISTING (no --overwrite)", ["segment", ct, "--out", old, "--engine", "classical"],
          "2", inputs=[ct, old], out=old)


@case("dataloss-qct-laa-map-is-lung-mask")
def case_dataloss_qct_laa_map_is_lung_mask(c: Corpus):
    name = case_dataloss_qct_laa_map_is_lung_mask.case_name
    inputs, _ = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    mask = c.write_mask(inputs / "lungs.nrrd")
    c.run(name, "qct CT --lung-mask M --laa-map M", ["qct", ct, "--lung-mask", mask, "--laa-map", mask], "2",
          inputs=[ct, mask], out=mask)
    c.run(name, "qct CT --lung-mask M --laa-map M --overwrite",
          ["qct", ct, "--lung-mask", mask, "--laa-map", mask, "--overwrite"], "2", inputs=[ct, mask], out=mask)


@case("dataloss-qct-out-existing-csv")
def case_dataloss_qct_out_existing_csv(c: Corpus):
    name = case_dataloss_qct_out_existing_csv.case_name
    inputs, _ = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    mask = c.write_mask(inputs / "lungs.nrrd")
    table = inputs / "results.csv"
    table.write_text("patient,laa950_pct\nA,12.3\nB,4.5\n")
    c.run(name, "qct --out EXISTING.csv (no --overwrite)", ["qct", ct, "--lung-mask", mask, "--out", table], "2",
          inputs=[ct, mask, table], out=table)


@case("dataloss-batch-out-is-root")
def case_dataloss_batch_out_is_root(c: Corpus):
    name = case_dataloss_batch_out_is_root.case_name
    inputs, _ = c.case_dirs(name)
    root = inputs / "cohort"
    root.mkdir()
    c.write_image(root / "case1.nrrd")
    c.run(name, "batch ROOT --out ROOT", ["batch", root, "--out", root, *ANALYZE_FAST, "--no-model"], "2",
          inputs=[root], out=root)


@case("dataloss-batch-resume-out-inside-root")
def case_dataloss_batch_resume_out_inside_root(c: Corpus):
    """batch ROOT --out ROOT/results twice (--resume): the second run must find the same cases,
    not the label maps of the first run's results."""
    name = case_dataloss_batch_resume_out_inside_root.case_name
    inputs, _ = c.case_dirs(name)
    root = inputs / "cohort"
    c.write_dicom(root / "patient1")
    c.write_image(root / "case2.nrrd")
    results = root / "results"
    argv = ["batch", root, "--out", results, *ANALYZE_FAST, "--no-model"]
    source_files = hash_inputs([root])

    def cohort(run):
        rows = read_cohort(results)
        run.cohort = rows
        run.detail = f"{len(rows)} cohort rows: " + ", ".join(f"{r['case_id']}={r['status']}" for r in rows)[:300]
        return [] if rows else ["no cohort.csv"]

    first = c.run(name, "batch ROOT --out ROOT/results", argv, "0", inputs=[root], out=results, check=cohort)

    def same_cases(run):
        problems = cohort(run)
        ids_first = sorted(r["case_id"] for r in first.cohort)
        ids_again = sorted(r["case_id"] for r in run.cohort)
        if ids_first != ids_again:
            extra = sorted(set(ids_again) - set(ids_first))
            problems.append(f"case count {len(ids_first)} -> {len(ids_again)} on --resume "
                            f"(results read as cases: {', '.join(extra)[:120]})")
        return problems

    c.run(name, "batch ROOT --out ROOT/results --resume (2nd)", argv + ["--resume"], "0",
          inputs=[Path(p) for p in source_files], out=results, watch=[root], check=same_cases)


@case("dataloss-embed-out-is-ct")
def case_dataloss_embed_out_is_ct(c: Corpus):
    name = case_dataloss_embed_out_is_ct.case_name
    inputs, _ = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    c.run(name, "embed CT --out CT", ["embed", ct, "--out", ct, "--engine", "classical"], "2", inputs=[ct], out=ct)
    c.run(name, "embed CT --out CT --overwrite", ["embed", ct, "--out", ct, "--engine", "classical", "--overwrite"],
          "2", inputs=[ct], out=ct)


@case("dataloss-fit-linear-out-is-labels-folder")
def case_dataloss_fit_linear_out_is_labels_folder(c: Corpus):
    name = case_dataloss_fit_linear_out_is_labels_folder.case_name
    inputs, _ = c.case_dirs(name)
    study = inputs / "study"
    study.mkdir()
    rng = np.random.default_rng(0)
    n = 24
    table = {"id": [f"case{i:02d}" for i in range(n)], "qct_laa950_pct": rng.uniform(0, 20, n),
             "qct_perc15_hu": rng.uniform(-980, -900, n), "qct_volume_l": rng.uniform(4, 7, n)}
    for zone in ("upper", "middle", "lower"):
        for k in range(8):
            table[f"{zone}_{k:04d}"] = rng.normal(size=n)
    import pandas as pd

    pd.DataFrame(table).to_csv(study / "emb.csv", index=False)
    pd.DataFrame({"id": table["id"], "label": [i % 2 for i in range(n)]}).to_csv(study / "labels.csv", index=False)
    argv = ["fit-linear", "--embeddings", study / "emb.csv", "--labels", study / "labels.csv", "--out", study,
            "--folds", "2", "--k", "4", "--bootstraps", "20"]
    c.run(name, "fit-linear --labels F/labels.csv --out F --overwrite", argv + ["--overwrite"], "2",
          inputs=[study], out=study)


@case("dataloss-demo-out-is-user-folder")
def case_dataloss_demo_out_is_user_folder(c: Corpus):
    """demo replaces its own folder on rerun: it must not replace a folder of the user's."""
    name = case_dataloss_demo_out_is_user_folder.case_name
    inputs, _ = c.case_dirs(name)
    scans = inputs / "scans"
    c.write_dicom(scans / "ct")
    c.run(name, "demo --out USER_FOLDER", ["demo", "--out", scans, "--no-scene"], "2", inputs=[scans], out=scans)


# ---------------------------------------------------------------- concurrency

@case("concurrent-analyze-same-out")
def case_concurrent_analyze_same_out(c: Corpus):
    name = case_concurrent_analyze_same_out.case_name
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    out = outs / "result"
    first = Run(name, "analyze --out R (1st)", analyze_argv(ct, out), "0|2", inputs=[ct], out=out)
    second = Run(name, "analyze --out R (2nd, +0.5 s)", analyze_argv(ct, out), "0|2", inputs=[ct], out=out)
    c.launch(first)
    time.sleep(0.5)
    c.launch(second)
    c.wait(first)
    c.wait(second)

    def pair(run):
        problems = []
        codes = sorted([first.code, second.code])
        if codes != [0, 2]:
            problems.append(f"exit codes {first.code} / {second.code}: one run must finish (0), the other "
                            "stop at once (2)")
        summary = read_json(out / "summary.json")
        missing = [f for f in CASE_FILES if not (out / f).is_file()]
        if summary is None or missing:
            problems.append(f"results not intact: {', '.join(missing) or 'summary.json unreadable'}")
        run.detail = f"exit codes 1st {first.code}, 2nd {second.code}; 2nd ran {second.seconds:.1f} s"
        return problems

    second.check = pair
    c.finish(first)
    c.finish(second)


# ---------------------------------------------------------------- signals

def _signal_case(c: Corpus, name: str, signum: int, when: str):
    """Send ``signum`` to analyze after its first progress line (``early``) or while it writes
    its outputs (``write``: the temporary folder beside --out appeared, or the 100% line)."""
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    out = outs / "result"
    run = Run(name, f"analyze + {signal.Signals(signum).name} ({when})", analyze_argv(ct, out), "!0",
              inputs=[ct], out=out, check=check_no_half_output)
    c.launch(run, trigger=r"^\s*\[\s*\d+%\]" if when == "early" else r"^\s*\[\s*100%\]")
    deadline = time.monotonic() + 120
    fired = False
    while time.monotonic() < deadline and run.proc.poll() is None:
        temp = when == "write" and any(p.name.startswith(f".{out.name}-") for p in outs.iterdir())
        if run._triggered.is_set() or temp:
            os.kill(run.proc.pid, signum)
            fired = True
            run.signal_note = (f"{signal.Signals(signum).name} sent {time.monotonic() - run._started:.2f} s in"
                               f" ({'temporary folder present' if temp else 'after the trigger line'})")
            break
        time.sleep(0.002)
    if not fired:
        run.signal_note = "signal not sent: the run ended before the trigger"
        c.wait(run)
        run.problems.append("TOOL-ERROR: the run ended before the signal could be sent")
        run.tool_error = "signal not sent"
    c.finish(run)


def _register_signal_cases() -> None:
    """One case per signal (SIGTERM, SIGHUP, SIGINT) and moment (early, during writing)."""
    for moment in ("early", "write"):
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            name = f"signal-{signum.name.lower()}-{'early' if moment == 'early' else 'during-write'}"
            case(name)(lambda c, name=name, signum=signum, moment=moment: _signal_case(c, name, signum, moment))


_register_signal_cases()


# ---------------------------------------------------------------- permissions

@case("perm-out-under-read-only-parent")
def case_perm_out_under_read_only_parent(c: Corpus):
    name = case_perm_out_under_read_only_parent.case_name
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    locked = outs / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            c.skip(name, "analyze --out READONLY/result", "2", "n/a as root",
                   "chmod 555 has no effect for this user (root): the case cannot be exercised here")
            return
        c.run(name, "analyze --out READONLY/result", analyze_argv(ct, locked / "result"), "2",
              inputs=[ct], out=locked / "result")
    finally:
        locked.chmod(0o755)


@case("perm-out-is-existing-file")
def case_perm_out_is_existing_file(c: Corpus):
    name = case_perm_out_is_existing_file.case_name
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    notes = inputs / "notes.txt"
    notes.write_text("a file the user keeps\n")
    c.run(name, "analyze --out EXISTING_FILE --overwrite", analyze_argv(ct, notes, "--overwrite"), "2",
          inputs=[ct, notes], out=notes)


@case("perm-analyze-folder-mode")
def case_perm_analyze_folder_mode(c: Corpus):
    name = case_perm_analyze_folder_mode.case_name
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    out = outs / "result"

    def modes(run):
        if not out.is_dir():
            return ["no output folder"]
        problems = []
        folder = mode_of(out)
        files = {p.name: mode_of(p) for p in out.iterdir() if p.is_file()}
        wrong = {k: oct(v) for k, v in files.items() if v != 0o644}
        run.detail = f"folder {oct(folder)}, files {sorted(set(oct(v) for v in files.values()))}"
        if folder != 0o755:
            problems.append(f"output folder mode {oct(folder)}, umask 022 wants 0o755")
        if wrong:
            problems.append(f"file modes {wrong}, umask 022 wants 0o644")
        return problems

    c.run(name, "analyze (umask 022): output modes", analyze_argv(ct, out), "0", inputs=[ct], out=out, check=modes)


@case("perm-segment-file-mode")
def case_perm_segment_file_mode(c: Corpus):
    name = case_perm_segment_file_mode.case_name
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    out = outs / "lungs.nrrd"

    def modes(run):
        if not out.is_file():
            return ["no output file"]
        run.detail = f"mode {oct(mode_of(out))}"
        return [] if mode_of(out) == 0o644 else [f"segment output mode {oct(mode_of(out))}, umask 022 wants 0o644"]

    c.run(name, "segment (umask 022): file mode", ["segment", ct, "--out", out, "--engine", "classical"], "0",
          inputs=[ct], out=out, check=modes)


# ---------------------------------------------------------------- orientation (shipped model)

def _stored(image, storage: str):
    import SimpleITK as sitk

    order, flips = STORAGES[storage]
    return sitk.Flip(sitk.PermuteAxes(image, list(order)), list(flips))


def _orientation_case(c: Corpus, name: str, storage: str):
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / f"{storage}.nrrd", _stored(c.ct_image(), storage))
    out = outs / "result"

    def same_numbers(run):
        figures = zone_figures(read_json(out / "summary.json"))
        if storage == "axial":
            c.refs["orient"] = figures
            run.detail = zone_detail(figures, figures)
            return [] if figures.get("cnn_class") else ["no CNN severity in summary.json"]
        reference = c.reference("orient")
        run.detail = zone_detail(reference, figures)
        return compare_zones(reference, figures, 0.01, f"{storage} vs axial")

    c.run(name, f"analyze {storage}.nrrd (shipped model)", analyze_argv(ct, out, model=True), "0",
          inputs=[ct], out=out, check=same_numbers)


@case("orient-axial")
def case_orient_axial(c):
    _orientation_case(c, "orient-axial", "axial")


@case("orient-coronal")
def case_orient_coronal(c):
    _orientation_case(c, "orient-coronal", "coronal")


@case("orient-sagittal")
def case_orient_sagittal(c):
    _orientation_case(c, "orient-sagittal", "sagittal")


@case("orient-flipped")
def case_orient_flipped(c):
    _orientation_case(c, "orient-flipped", "flipped")


def _oblique(image, degrees: float, fill: float, interpolator=None):
    """``image`` resampled onto a grid rotated ``degrees`` about the left-right (x) axis that
    holds all of it, same physical place (nearest neighbour: no smoothing); ``fill`` beyond it."""
    import SimpleITK as sitk

    angle = np.deg2rad(degrees)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    size, spacing, origin = np.array(image.GetSize()), np.array(image.GetSpacing()), np.array(image.GetOrigin())
    corners = np.array([origin + np.array(idx) * (size - 1) * spacing for idx in np.ndindex(2, 2, 2)])
    local = corners @ rotation  # coordinates along the rotated axes (the input's direction is identity)
    low, high = local.min(axis=0), local.max(axis=0)
    out_size = [int(np.ceil((h - lo) / s)) + 1 for lo, h, s in zip(low, high, spacing)]
    return sitk.Resample(image, out_size, sitk.Transform(), interpolator or sitk.sitkNearestNeighbor,
                         tuple(rotation @ low), tuple(spacing), tuple(rotation.ravel()), float(fill),
                         image.GetPixelID())


def _oblique_check(c: Corpus, out: Path):
    def close_numbers(run):
        summary = read_json(out / "summary.json")
        figures = zone_figures(summary)
        reference = c.reference("orient")
        run.detail = zone_detail(reference, figures)
        problems = compare_zones(reference, figures, 1.0, "oblique vs axial")
        text = json.dumps((summary or {}).get("input", {})) + " ".join(all_warnings(summary))
        if summary is not None and "oblique" not in text.lower():
            problems.append("no word of the oblique grid in summary.json")
        return problems
    return close_numbers


@case("orient-oblique-20deg")
def case_orient_oblique_20deg(c: Corpus):
    """The chest on a grid tilted 20 degrees about the left-right axis, same physical place; the
    corners beyond the scanned volume hold the outside-the-field-of-view value (-3024 HU), as a
    scanner marks them. Read back it is resampled onto an axial grid, so the figures cannot be
    bit-identical: %LAA-950 per zone within 1 point of the axial file, the same CNN class, and a
    word of the oblique grid in summary.json."""
    from EmphysemaXAILib.volume import OUTSIDE_FOV_HU

    name = case_orient_oblique_20deg.case_name
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / "oblique.nrrd", _oblique(c.ct_image(), 20.0, OUTSIDE_FOV_HU))
    out = outs / "result"
    c.run(name, "analyze oblique.nrrd (shipped model)", analyze_argv(ct, out, model=True), "0",
          inputs=[ct], out=out, check=_oblique_check(c, out))


@case("orient-oblique-20deg-user-mask")
def case_orient_oblique_20deg_user_mask(c: Corpus):
    """The same oblique chest with the true lung mask on its grid (--lung-mask): the resampling
    path alone, without the segmentation engine."""
    import SimpleITK as sitk

    from EmphysemaXAILib.volume import OUTSIDE_FOV_HU

    name = case_orient_oblique_20deg_user_mask.case_name
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / "oblique.nrrd", _oblique(c.ct_image(), 20.0, OUTSIDE_FOV_HU))
    lungs = sitk.GetImageFromArray(c.phantom.labels["lungs"].astype(np.uint8))
    lungs.CopyInformation(c.ct_image())
    mask = c.write_image(inputs / "oblique_lungs.nrrd", _oblique(lungs, 20.0, 0))
    out = outs / "result"
    c.run(name, "analyze oblique.nrrd --lung-mask (shipped model)",
          analyze_argv(ct, out, "--lung-mask", mask, model=True), "0", inputs=[ct, mask], out=out,
          check=_oblique_check(c, out))


# ---------------------------------------------------------------- DICOM

def _dicom_reader_case(c: Corpus, name: str, path: Path, info_expected: str, analyze_expected: str,
                       inputs: list, check=None, analyze_label: str = "analyze"):
    """``info --json`` and ``analyze`` on one hostile DICOM input."""
    outs = c.outs / name
    c.run(name, "info --json", ["info", path, "--json"], info_expected, inputs=inputs)
    out = outs / "result"
    c.run(name, analyze_label, analyze_argv(path, out), analyze_expected, inputs=inputs, out=out,
          check=check)


def _matches_intact(c: Corpus, tol: float = 0.01):
    def check(run):
        if run.code != 0:
            return []
        figures = zone_figures(read_json(Path(run.out) / "summary.json"))
        reference = c.reference("dicom")
        run.detail = zone_detail(reference, figures)
        return compare_zones(reference, figures, tol, "vs the intact series")
    return check


@case("dicom-intact")
def case_dicom_intact(c: Corpus):
    name = "dicom-intact"
    inputs, outs = c.case_dirs(name)
    ct = inputs / "ct"
    c.write_dicom(ct)

    def keep(run):
        figures = zone_figures(read_json(outs / "result" / "summary.json"))
        c.refs["dicom"] = figures
        run.detail = zone_detail(figures, figures)
        return [] if figures else ["no summary.json"]

    c.run(name, "info (text)", ["info", ct], "0", inputs=[ct])
    _dicom_reader_case(c, name, ct, "0", "0", [ct], check=keep)


@case("dicom-one-missing-ipp-shuffled-names")
def case_dicom_one_missing_ipp_shuffled_names(c: Corpus):
    import pydicom

    name = case_dicom_one_missing_ipp_shuffled_names.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    rng = np.random.default_rng(1)
    names = [f"IM{v:08x}" for v in rng.choice(2**31, size=c.phantom.ct.hu.shape[0], replace=False)]
    paths = c.write_dicom(ct, file_names=names)
    ds = pydicom.dcmread(paths[40])
    del ds.ImagePositionPatient
    save_dicom(ds, paths[40])
    _dicom_reader_case(c, name, ct, "0", "0", [ct], check=_matches_intact(c))


def _no_ipp_case(c: Corpus, name: str, head_first: bool):
    """No slice has ImagePositionPatient. Without positions nothing says which end is the head,
    so refusing (2) is right; reading by InstanceNumber is acceptable only with the zones of the
    intact series (``head_first``: InstanceNumber 1 is the top slice, as many scanners number)."""
    import pydicom

    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    paths = c.write_dicom(ct)
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        if head_first:
            ds.InstanceNumber = len(paths) - k
        save_dicom(ds, path)
    _dicom_reader_case(c, name, ct, "0|2", "0|2", [ct], check=_matches_intact(c))


@case("dicom-no-ipp-at-all")
def case_dicom_no_ipp_at_all(c):
    _no_ipp_case(c, case_dicom_no_ipp_at_all.case_name, head_first=False)


@case("dicom-no-ipp-head-first-numbering")
def case_dicom_no_ipp_head_first_numbering(c):
    _no_ipp_case(c, case_dicom_no_ipp_head_first_numbering.case_name, head_first=True)


def _edit_all(paths, edit):
    import pydicom

    for path in paths:
        ds = pydicom.dcmread(path)
        edit(ds)
        save_dicom(ds, path)


@case("dicom-rescale-slope-zero")
def case_dicom_rescale_slope_zero(c: Corpus):
    name = case_dicom_rescale_slope_zero.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    _edit_all(c.write_dicom(ct), lambda ds: setattr(ds, "RescaleSlope", "0"))
    _dicom_reader_case(c, name, ct, "2", "2", [ct])


@case("dicom-pixel-spacing-negative")
def case_dicom_pixel_spacing_negative(c: Corpus):
    name = case_dicom_pixel_spacing_negative.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    _edit_all(c.write_dicom(ct), lambda ds: setattr(ds, "PixelSpacing", ["-2.5", "-2.5"]))
    _dicom_reader_case(c, name, ct, "2", "2", [ct])


@case("dicom-pixel-spacing-zero")
def case_dicom_pixel_spacing_zero(c: Corpus):
    name = case_dicom_pixel_spacing_zero.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    _edit_all(c.write_dicom(ct), lambda ds: setattr(ds, "PixelSpacing", ["0", "0"]))
    _dicom_reader_case(c, name, ct, "2", "2", [ct])


@case("dicom-axial-and-sagittal-stacks-one-uid")
def case_dicom_axial_and_sagittal_stacks_one_uid(c: Corpus):
    """The axial series plus a sagittal stack (a reformat) under the same SeriesInstanceUID:
    read through the axial stack, same numbers as the intact series."""
    import pydicom

    name = case_dicom_axial_and_sagittal_stacks_one_uid.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    axial = c.write_dicom(ct)
    head = pydicom.dcmread(axial[0], stop_before_pixels=True)
    hu = c.phantom.ct.hu                                     # (z, y, x)
    sagittal = np.ascontiguousarray(hu.transpose(2, 0, 1))   # (x, z, y): slices along x
    sx, sy, sz = c.phantom.ct.spacing
    paths = c.write_dicom(ct, hu=sagittal, spacing=(sy, sz, sx), direction=(0, 0, 1, 1, 0, 0, 0, 1, 0),
                          seed=99, file_names=[f"sag_{k:04d}.dcm" for k in range(sagittal.shape[0])])

    def same_series(ds):
        ds.SeriesInstanceUID = head.SeriesInstanceUID
        ds.StudyInstanceUID = head.StudyInstanceUID
        ds.FrameOfReferenceUID = head.FrameOfReferenceUID
        ds.InstanceNumber = int(ds.InstanceNumber) + 1000

    _edit_all(paths, same_series)
    _dicom_reader_case(c, name, ct, "0", "0", [ct], check=_matches_intact(c))


def _rgb_secondary_capture(path: Path) -> Path:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SeriesDescription = "screen capture"
    ds.Rows, ds.Columns = 96, 128
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = (np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_dicom(ds, path)
    return path


@case("dicom-rgb-secondary-capture-alone")
def case_dicom_rgb_secondary_capture_alone(c: Corpus):
    name = case_dicom_rgb_secondary_capture_alone.case_name
    inputs, _ = c.case_dirs(name)
    sc = _rgb_secondary_capture(inputs / "capture.dcm")
    _dicom_reader_case(c, name, sc, "2", "2", [sc])


@case("dicom-rgb-secondary-capture-beside-series")
def case_dicom_rgb_secondary_capture_beside_series(c: Corpus):
    name = case_dicom_rgb_secondary_capture_beside_series.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    c.write_dicom(ct)
    _rgb_secondary_capture(ct / "zz_capture.dcm")
    _dicom_reader_case(c, name, ct, "0", "0", [ct], check=_matches_intact(c))


@case("dicom-truncated-file-among-good")
def case_dicom_truncated_file_among_good(c: Corpus):
    """One slice file cut short (pixel data truncated): skipped with its name in a warning, the
    gap interpolated."""
    name = case_dicom_truncated_file_among_good.case_name
    inputs, outs = c.case_dirs(name)
    ct = inputs / "ct"
    paths = c.write_dicom(ct)
    broken = paths[50]
    broken.write_bytes(broken.read_bytes()[:-5000])

    def named(run):
        summary = read_json(outs / "result" / "summary.json")
        words = " ".join(all_warnings(summary))
        run.detail = f"warnings mention {broken.name}: {broken.name in words}"
        return [] if broken.name in words else [f"no warning naming {broken.name} in summary.json"]

    _dicom_reader_case(c, name, ct, "0", "0", [ct], check=named)


@case("dicom-duplicate-positions")
def case_dicom_duplicate_positions(c: Corpus):
    """A second, different slice at the position of slice 30 (distinct SOPInstanceUID): ambiguous,
    so bad input."""
    import pydicom
    from pydicom.uid import generate_uid

    name = case_dicom_duplicate_positions.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    paths = c.write_dicom(ct)
    ds = pydicom.dcmread(paths[31])
    ds.ImagePositionPatient = pydicom.dcmread(paths[30]).ImagePositionPatient
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 500
    save_dicom(ds, ct / "slice_0030_b.dcm")
    _dicom_reader_case(c, name, ct, "2", "2", [ct])


@case("dicom-exact-duplicate-file")
def case_dicom_exact_duplicate_file(c: Corpus):
    """The same file copied twice into the folder (same SOPInstanceUID, same bytes): nothing is
    ambiguous, so either read (then with the intact numbers) or refused with one line."""
    name = case_dicom_exact_duplicate_file.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    paths = c.write_dicom(ct)
    shutil.copyfile(paths[30], ct / "slice_0030 (copy).dcm")
    _dicom_reader_case(c, name, ct, "0|2", "0|2", [ct], check=_matches_intact(c))


@case("dicom-modality-mr")
def case_dicom_modality_mr(c: Corpus):
    name = case_dicom_modality_mr.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "mr"
    c.write_dicom(ct, modality="MR")
    _dicom_reader_case(c, name, ct, "0", "3", [ct])


@case("dicom-single-slice")
def case_dicom_single_slice(c: Corpus):
    name = case_dicom_single_slice.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    c.write_dicom(ct, hu=c.phantom.ct.hu[48:49])
    _dicom_reader_case(c, name, ct, "0", "0", [ct])


@case("dicom-two-slices")
def case_dicom_two_slices(c: Corpus):
    name = case_dicom_two_slices.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    c.write_dicom(ct, hu=c.phantom.ct.hu[47:49])
    _dicom_reader_case(c, name, ct, "0", "0", [ct])


@case("dicom-symlink-loop")
def case_dicom_symlink_loop(c: Corpus):
    name = case_dicom_symlink_loop.case_name
    inputs, _ = c.case_dirs(name)
    ct = inputs / "ct"
    c.write_dicom(ct / "series")
    (ct / "series" / "loop").symlink_to(ct, target_is_directory=True)
    _dicom_reader_case(c, name, ct, "0", "0", [ct], check=_matches_intact(c))


def _garbage_dicom_folder(folder: Path, count: int = 4) -> Path:
    """Files with the DICOM preamble whose headers do not parse."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for k in range(count):
        (folder / f"IM{k:04d}.dcm").write_bytes(b"\0" * 128 + b"DICM" + rng.integers(0, 256, 600, np.uint8).tobytes())
    return folder


@case("batch-unparseable-dicom-folder")
def case_batch_unparseable_dicom_folder(c: Corpus):
    name = case_batch_unparseable_dicom_folder.case_name
    inputs, outs = c.case_dirs(name)
    root = inputs / "cohort"
    root.mkdir()
    c.write_image(root / "good.nrrd")
    _garbage_dicom_folder(root / "broken_export")
    out = outs / "results"

    def failed_row(run):
        rows = read_cohort(out)
        run.detail = ", ".join(f"{r['case_id']}={r['status']}" for r in rows)
        broken = [r for r in rows if "broken_export" in (r["case_id"] + r["source"])]
        if not broken:
            return ["the unreadable folder broken_export is not in cohort.csv (silently dropped)"]
        return [] if broken[0]["status"] == "failed" else [f"broken_export recorded as {broken[0]['status']}"]

    c.run(name, "batch ROOT (good + unparseable DICOM folder)", ["batch", root, "--out", out, *ANALYZE_FAST,
          "--no-model"], "0", inputs=[root], out=out, check=failed_row)


# ---------------------------------------------------------------- image files

def _file_reader_case(c: Corpus, name: str, path: Path, expected: str, check=None, info: bool = True):
    outs = c.outs / name
    if info:
        c.run(name, "info --json", ["info", path, "--json"], "0" if expected == "3" else expected, inputs=[path])
    out = outs / "result"
    c.run(name, "analyze", analyze_argv(path, out), expected, inputs=[path], out=out, check=check)


def _patch_nifti_sform(path: Path, shear: float, qform_code: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    srow_x = list(struct.unpack("<4f", data[280:296]))
    srow_x[1] += shear
    data[280:296] = struct.pack("<4f", *srow_x)
    if qform_code is not None:
        data[252:254] = struct.pack("<h", qform_code)
    path.write_bytes(bytes(data))


@case("nifti-sheared-sform")
def case_nifti_sheared_sform(c: Corpus):
    """sform sheared (a common export bug), qform intact: read through the qform, no raw ITK
    WARNING on stderr, and a warning in summary.json."""
    name = case_nifti_sheared_sform.case_name
    inputs, outs = c.case_dirs(name)
    path = c.write_image(inputs / "sheared.nii", compress=False)
    _patch_nifti_sform(path, 0.8)

    def warned(run):
        words = " ".join(all_warnings(read_json(outs / "result" / "summary.json"))).lower()
        ok = any(w in words for w in ("shear", "sform", "orthogonal"))
        run.detail = f"summary warning about the sform: {ok}"
        return [] if ok else ["no warning about the sheared sform in summary.json"]

    _file_reader_case(c, name, path, "0", check=warned)


@case("nifti-sheared-sform-no-qform")
def case_nifti_sheared_sform_no_qform(c: Corpus):
    """Sheared sform and qform_code 0: no orthogonal grid in the file. Refused with one line, or
    read with a warning."""
    name = case_nifti_sheared_sform_no_qform.case_name
    inputs, outs = c.case_dirs(name)
    path = c.write_image(inputs / "sheared.nii", compress=False)
    _patch_nifti_sform(path, 0.8, qform_code=0)

    def warned(run):
        if run.code != 0:
            return []
        words = " ".join(all_warnings(read_json(outs / "result" / "summary.json"))).lower()
        return [] if any(w in words for w in ("shear", "sform", "orthogonal")) else ["read without a warning"]

    _file_reader_case(c, name, path, "0|2", check=warned)


@case("nifti-nan-voxels")
def case_nifti_nan_voxels(c: Corpus):
    import SimpleITK as sitk

    name = case_nifti_nan_voxels.case_name
    inputs, _ = c.case_dirs(name)
    array = c.phantom.ct.hu.astype(np.float32)
    array[40:42, 60:64, 30:34] = np.nan
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(c.ct_image())
    _file_reader_case(c, name, c.write_image(inputs / "nan.nii.gz", image), "2")


@case("nifti-truncated")
def case_nifti_truncated(c: Corpus):
    name = case_nifti_truncated.case_name
    inputs, _ = c.case_dirs(name)
    path = c.write_image(inputs / "cut.nii", compress=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _file_reader_case(c, name, path, "2")


@case("nifti-4d")
def case_nifti_4d(c: Corpus):
    import SimpleITK as sitk

    name = case_nifti_4d.case_name
    inputs, _ = c.case_dirs(name)
    image = c.ct_image()
    four = sitk.JoinSeries([image, image])
    _file_reader_case(c, name, c.write_image(inputs / "fourd.nii.gz", four), "2")


@case("nrrd-zero-spacing")
def case_nrrd_zero_spacing(c: Corpus):
    name = case_nrrd_zero_spacing.case_name
    inputs, _ = c.case_dirs(name)
    path = c.write_image(inputs / "zero.nrrd", compress=False)
    data = path.read_bytes()
    end = data.index(b"\n\n") + 2
    header = data[:end].decode("latin-1")
    header, count = re.subn(r"space directions: (\(.*?\)) (\(.*?\)) \(.*?\)",
                            r"space directions: \1 \2 (0,0,0)", header)
    assert count == 1, "no 'space directions' line in the NRRD header"
    path.write_bytes(header.encode("latin-1") + data[end:])
    _file_reader_case(c, name, path, "2")


@case("nrrd-nan-voxels")
def case_nrrd_nan_voxels(c: Corpus):
    import SimpleITK as sitk

    name = case_nrrd_nan_voxels.case_name
    inputs, _ = c.case_dirs(name)
    array = c.phantom.ct.hu.astype(np.float32)
    array[50, 64, 40:44] = np.inf
    array[51, 64, 40:44] = np.nan
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(c.ct_image())
    _file_reader_case(c, name, c.write_image(inputs / "nan.nrrd", image), "2")


@case("png-rgb")
def case_png_rgb(c: Corpus):
    from PIL import Image

    name = case_png_rgb.case_name
    inputs, _ = c.case_dirs(name)
    path = inputs / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8), "RGB").save(path)
    _file_reader_case(c, name, path, "2")


@case("tiff-16bit-hu-slice")
def case_tiff_16bit_hu_slice(c: Corpus):
    """One axial slice as a 16-bit signed TIFF of HU (a documented input): analysed as one slice."""
    import tifffile

    name = case_tiff_16bit_hu_slice.case_name
    inputs, _ = c.case_dirs(name)
    path = inputs / "slice.tif"
    tifffile.imwrite(path, c.phantom.ct.hu[48].astype(np.int16))
    _file_reader_case(c, name, path, "0")


@case("file-empty-nrrd")
def case_file_empty_nrrd(c: Corpus):
    name = case_file_empty_nrrd.case_name
    inputs, _ = c.case_dirs(name)
    path = inputs / "empty.nrrd"
    path.write_bytes(b"")
    _file_reader_case(c, name, path, "2")


@case("file-empty-dcm")
def case_file_empty_dcm(c: Corpus):
    name = case_file_empty_dcm.case_name
    inputs, _ = c.case_dirs(name)
    path = inputs / "empty.dcm"
    path.write_bytes(b"")
    _file_reader_case(c, name, path, "2")


@case("file-wrong-extension")
def case_file_wrong_extension(c: Corpus):
    """An NRRD file named .nii.gz."""
    name = case_file_wrong_extension.case_name
    inputs, _ = c.case_dirs(name)
    path = c.write_image(inputs / "scan.nrrd")
    path = path.rename(inputs / "scan.nii.gz")
    _file_reader_case(c, name, path, "2")


@case("file-unicode-spaces-name")
def case_file_unicode_spaces_name(c: Corpus):
    name = case_file_unicode_spaces_name.case_name
    inputs, _ = c.case_dirs(name)
    path = c.write_image(inputs / "Patiënt scan (2) ü.nrrd")
    _file_reader_case(c, name, path, "0")


@case("dir-of-text-files")
def case_dir_of_text_files(c: Corpus):
    name = case_dir_of_text_files.case_name
    inputs, _ = c.case_dirs(name)
    folder = inputs / "export"
    folder.mkdir()
    for k in range(5):
        (folder / f"notes_{k}.txt").write_text("not an image\n" * 20)
    (folder / "README").write_text("exported by a PACS\n")
    _file_reader_case(c, name, folder, "2")


@case("path-missing")
def case_path_missing(c: Corpus):
    name = case_path_missing.case_name
    inputs, outs = c.case_dirs(name)
    c.run(name, "analyze NO_SUCH_PATH", analyze_argv(inputs / "no_such_scan", outs / "result"), "2",
          out=outs / "result")


@case("air-only-volume")
def case_air_only_volume(c: Corpus):
    """A volume of air (-1024 HU everywhere): no lung in the field of view, excluded by QC."""
    import SimpleITK as sitk

    name = case_air_only_volume.case_name
    inputs, _ = c.case_dirs(name)
    image = sitk.GetImageFromArray(np.full(c.phantom.ct.hu.shape, -1024, np.int16))
    image.CopyInformation(c.ct_image())
    _file_reader_case(c, name, c.write_image(inputs / "air.nrrd", image), "3")


@case("results-folder-as-input")
def case_results_folder_as_input(c: Corpus):
    """The user passes an analyze output folder (label maps, no DICOM) as input."""
    name = case_results_folder_as_input.case_name
    inputs, outs = c.case_dirs(name)
    folder = inputs / "previous_result"
    folder.mkdir()
    c.write_mask(folder / "lung_labels.nrrd")
    (folder / "summary.json").write_text("{}\n")
    c.run(name, "analyze RESULTS_FOLDER", analyze_argv(folder, outs / "result"), "2", inputs=[folder],
          out=outs / "result")


@case("config-unknown-key")
def case_config_unknown_key(c: Corpus):
    name = case_config_unknown_key.case_name
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    config = inputs / "settings.toml"
    config.write_text("engine = \"classical\"\nlaa_treshold = -950\n")
    c.run(name, "analyze --config (unknown key)", analyze_argv(ct, outs / "result", "--config", config), "2",
          inputs=[ct, config], out=outs / "result")


# ---------------------------------------------------------------- user masks

def _mask_pair(c: Corpus, name: str, mask_array, note: str):
    """qct and analyze with the same hostile --lung-mask: both exit 2 with the same rule."""
    inputs, outs = c.case_dirs(name)
    ct = c.write_image(inputs / "ct.nrrd")
    if isinstance(mask_array, tuple):  # a mask on another grid: (array, spacing, origin)
        import SimpleITK as sitk

        array, spacing, origin = mask_array
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        mask = inputs / "mask.nrrd"
        sitk.WriteImage(image, str(mask), useCompression=True)
    else:
        mask = c.write_mask(inputs / "mask.nrrd", mask_array)
    qct = c.run(name, f"qct --lung-mask ({note})", ["qct", ct, "--lung-mask", mask], "2", inputs=[ct, mask])

    def same_rule(run):
        def rule(text):
            """The diagnosis of the error line: paths replaced, advice after the first ';' dropped."""
            line = next((ln for ln in text.splitlines() if ln.startswith("emphysema-xai:")), "")
            return re.sub(r"\S*(/|\\)\S*", "<path>", line).split(";")[0].strip()
        a, b = rule(qct.stderr), rule(run.stderr)
        run.detail = f"qct: {a[:100]} || analyze: {b[:100]}"
        if qct.code == 2 and run.code == 2 and a != b:
            return ["qct and analyze refuse this mask with different rules"]
        return []

    c.run(name, f"analyze --lung-mask ({note})", analyze_argv(ct, outs / "result", "--lung-mask", mask), "2",
          inputs=[ct, mask], out=outs / "result", check=same_rule)


@case("mask-empty")
def case_mask_empty(c):
    _mask_pair(c, "mask-empty", np.zeros(c.phantom.ct.hu.shape, np.uint8), "all zero")


@case("mask-wrong-shape")
def case_mask_wrong_shape(c):
    _mask_pair(c, "mask-wrong-shape", (np.zeros((48, 64, 64), np.uint8), (5.0, 5.0, 5.0), (0.0, 0.0, 0.0)),
               "64 x 64 x 48")


@case("mask-shifted-origin")
def case_mask_shifted_origin(c):
    """The true lungs, same shape and spacing, origin 10 mm off: not on the CT grid."""
    origin = tuple(float(o) + 10.0 for o in c.phantom.ct.origin)
    _mask_pair(c, "mask-shifted-origin", (c.phantom.labels["lungs"].astype(np.uint8),
                                          tuple(float(s) for s in c.phantom.ct.spacing), origin), "origin +10 mm")


@case("mask-labels-above-2")
def case_mask_labels_above_2(c):
    labels = c.phantom.labels["lungs"].astype(np.uint8).copy()
    labels[labels == 2] = 7
    _mask_pair(c, "mask-labels-above-2", labels, "labels 0/1/7")


# ---------------------------------------------------------------- cohorts, scene

@case("cohort-mixed")
def case_cohort_mixed(c: Corpus):
    """One good case, one unreadable folder, a one-slice and a two-slice case: every case is a
    row, and the printed lines of the one / two-slice cases say their zones (thirds) mean little."""
    name = case_cohort_mixed.case_name
    inputs, outs = c.case_dirs(name)
    root = inputs / "cohort"
    c.write_dicom(root / "good")
    _garbage_dicom_folder(root / "unreadable")
    c.write_dicom(root / "one_slice", hu=c.phantom.ct.hu[48:49])
    c.write_dicom(root / "two_slices", hu=c.phantom.ct.hu[47:49])
    out = outs / "results"

    def rows_and_caveats(run):
        rows = {r["case_id"]: r for r in read_cohort(out)}
        run.detail = ", ".join(f"{k}={v['status']}" for k, v in rows.items())
        problems = []
        wanted = {"good": "ok", "unreadable": "failed", "one_slice": "ok", "two_slices": "ok"}
        for case_id, status in wanted.items():
            if case_id not in rows:
                problems.append(f"{case_id} missing from cohort.csv")
            elif rows[case_id]["status"] != status:
                row = rows[case_id]
                problems.append(f"{case_id} is {row['status']} ({row['error'] or ''}), wants {status}")
        printed = (run.stdout + "\n" + run.stderr).splitlines()
        for case_id in ("one_slice", "two_slices"):
            if not any(case_id in line and re.search(r"zone|third", line, re.I) for line in printed):
                problems.append(f"no printed line gives the zone caveat for {case_id}")
        return problems

    c.run(name, "batch ROOT (good, unreadable, 1 and 2 slices)", ["batch", root, "--out", out, *ANALYZE_FAST,
          "--no-model"], "0", inputs=[root], out=out, check=rows_and_caveats)


@case("scene-analyze")
def case_scene_analyze(c: Corpus):
    """The one run with the Slicer scene and the report: every file of the contract written."""
    name = case_scene_analyze.case_name
    inputs, outs = c.case_dirs(name)
    ct = inputs / "ct"
    c.write_dicom(ct)
    out = outs / "result"

    def files(run):
        wanted = CASE_FILES + ("lungs.seg.nrrd", "report.html", "scene.mrb")
        missing = [f for f in wanted if not (out / f).is_file() or (out / f).stat().st_size == 0]
        run.detail = f"{len(list(out.iterdir())) if out.is_dir() else 0} files written"
        return [f"missing: {', '.join(missing)}"] if missing else []

    c.run(name, "analyze (scene + report)", ["analyze", ct, "--out", out, "--engine", "classical", "--no-model"],
          "0", inputs=[ct], out=out, check=files)


# --------------------------------------------------------------------------- report

COLUMNS = ("case", "command", "exit", "expected", "verdict", "stderr_lines", "first_stderr", "traceback",
           "numpy_repr", "inputs_unchanged", "leftovers", "problems", "detail", "seconds")


def cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows) -> str:
    keys = ("case", "command", "exit", "expected", "verdict", "stderr_lines")
    lines = ["| case | command | exit | expected | verdict | stderr lines | first stderr line |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        first = f"`{cell(r['first_stderr'])}`" if r["first_stderr"] else ""
        lines.append("| " + " | ".join(cell(r[k]) for k in keys) + f" | {first} |")
    return "\n".join(lines)


def tree_state() -> str:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    head = git("rev-parse", "--short", "HEAD")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
    dirty = [line[3:] for line in status.splitlines() if "tools/hostile_corpus.py" not in line]
    return f"HEAD {head}" + (f", uncommitted changes in {', '.join(dirty)}" if dirty else ", clean tree")


def write_reports(corpus: Corpus, started: float) -> str:
    rows = corpus.rows
    with open(corpus.root / "corpus.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in sorted({r["verdict"] for r in rows})}
    fails = [r for r in rows if r["verdict"] not in ("ok",) and not r["verdict"].startswith("n/a")]
    text = [f"# Hostile-input corpus ({datetime.datetime.now():%Y-%m-%d %H:%M})", "",
            f"Tree: {tree_state()}; Python {sys.version.split()[0]}; uid {os.geteuid()}; "
            f"{len(rows)} runs in {time.monotonic() - started:.0f} s: "
            + ", ".join(f"{n} {v}" for v, n in counts.items()), "",
            "first stderr line = the first line that is not a progress line. Full columns (traceback, numpy "
            "repr, inputs unchanged, leftovers, problems, detail) in corpus.csv.", "",
            markdown_table(rows), "", "## Not ok", ""]
    for r in fails:
        text.append(f"- **{r['case']}** / `{r['command']}` (exit {r['exit']}, wants {r['expected']}): {r['problems']}"
                    + (f" [{r['detail']}]" if r["detail"] else ""))
    if not fails:
        text.append("none")
    report = "\n".join(text) + "\n"
    (corpus.root / "corpus.md").write_text(report)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path,
                        help="corpus folder (inputs/, outs/, tmp/, logs/, corpus.csv, corpus.md)")
    parser.add_argument("--only", metavar="PATTERN",
                        help="run the cases whose name matches (glob, or a substring when it has no wildcard)")
    parser.add_argument("--list", action="store_true", help="list the case names and exit")
    args = parser.parse_args(argv)
    chosen = []
    for name, function in CASES:
        if args.only:
            pattern = args.only if any(ch in args.only for ch in "*?[") else f"*{args.only}*"
            if not fnmatch.fnmatch(name, pattern):
                continue
        chosen.append((name, function))
    if args.list:
        print("\n".join(name for name, _ in chosen))
        return 0
    if not chosen:
        print(f"no case matches {args.only!r} (see --list)", file=sys.stderr)
        return 2
    corpus = Corpus(args.out.resolve())
    started = time.monotonic()
    for name, function in chosen:
        print(f"[{time.monotonic() - started:6.1f} s] {name}", file=sys.stderr, flush=True)
        try:
            function(corpus)
        except Exception:  # noqa: BLE001 - a builder bug must not hide the other cases
            message = traceback.format_exc(limit=4).strip().splitlines()
            corpus.rows.append({"case": name, "command": "(building the case)", "exit": "", "expected": "",
                                "verdict": "TOOL-ERROR", "stderr_lines": "", "first_stderr": "", "traceback": "",
                                "numpy_repr": "", "inputs_unchanged": "", "leftovers": "",
                                "problems": " / ".join(message[-2:])[:300], "detail": "", "seconds": 0})
            print(f"  TOOL-ERROR {name}: {message[-1]}", file=sys.stderr)
    report = write_reports(corpus, started)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
