"""Memory: what an analysis needs, what this process may use, and the refusal before any heavy work.

An analysis whose scan would need more memory than the process may have is refused after
reading the input's *header* (the voxel count), before any voxel is read, with one line naming
the memory needed, the memory available and how to proceed (:func:`check_case_memory`,
:class:`~EmphysemaXAILib.errors.InputError`: exit 2). It never dies halfway to the OOM killer
for a scan that was too large from the start.

**The estimate** (:func:`memory_needed`) is the process's peak resident memory measured by
``bench/bench_memory.py`` (docs/architecture.md, "Memory"): the resident set after importing the
libraries (:data:`BASE_BYTES`) plus, for the worst step the analysis runs, that step's fixed part
and its bytes per voxel times the voxels (:data:`STEPS`), times :data:`MARGIN`.

**What is available** (:func:`available_memory`): ``--max-memory`` when given; else the least of
the memory the system can still give (``MemAvailable`` of ``/proc/meminfo``, or psutil's
``available`` elsewhere), the room left under the process's cgroup memory limit (v1 or v2), and
the room left under ``RLIMIT_AS`` (address space); each plus what the process already holds,
since the estimate is of the whole process.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

MB = 2**20
GB = 2**30

#: peak resident bytes of a process that has imported the library, torch and slicer-core (measured)
BASE_BYTES = 700 * MB
#: step -> (fixed bytes, bytes per voxel) of its peak above BASE_BYTES: what the process holds
#: during the step (earlier steps' results included). The line through the peaks measured by
#: bench/bench_memory.py on the medium and full phantoms (docs/architecture.md, "Memory"), which
#: lies above the small phantom's; the model is loaded at the end of ``qct``'s window, torch's
#: working memory counts in ``severity``.
STEPS = {
    "read": (120 * MB, 4.0),
    "qc": (160 * MB, 7.0),
    "segment": (205 * MB, 15.6),
    "qct": (230 * MB, 19.1),
    "severity": (1200 * MB, 8.5),
    "explain": (700 * MB, 13.8),
    "outputs": (715 * MB, 14.4),
}
#: safety factor on the measured figures (allocator fragmentation, other libraries' versions)
MARGIN = 1.25
#: cgroup limits at or above this are "no limit"
_NO_LIMIT = 2**60


def parse_size(text: str, flag: str = "--max-memory") -> int:
    """'8G', '512M', '1.5GB', '2GiB', '800000K' -> bytes (K, M, G, T are powers of 1024)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT])(?:I?B)?\s*", str(text), re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise InputError(f"{flag} {text!r}: give a size with a unit, e.g. 8G or 512M")
    return int(float(match.group(1)) * 1024 ** ("KMGT".index(match.group(2).upper()) + 1))


def format_size(size: float) -> str:
    return f"{size / GB:.1f} GB" if size >= GB else f"{size / MB:.0f} MB"


def steps_for(model: bool, explain: bool) -> tuple:
    """The measured steps an analysis runs (the outputs are written by every front end)."""
    return ("read", "qc", "segment", "qct") + (("severity",) if model else ()) + (("explain",) if explain else ()) \
        + ("outputs",)


def memory_needed(voxels: int, steps) -> int:
    """Bytes of resident memory a process analysing ``voxels`` voxels through ``steps`` peaks at
    (the measured figures, with :data:`MARGIN`)."""
    worst = max(STEPS[s][0] + STEPS[s][1] * voxels for s in steps)
    return int(MARGIN * (BASE_BYTES + worst))


def _status_bytes(key: str, status: str = "/proc/self/status") -> int | None:
    try:
        with open(status) as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def system_available(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable (psutil's ``available`` where /proc/meminfo is absent), or None."""
    try:
        with open(meminfo) as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported here
        return None


def cgroup_room(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int | None:
    """Bytes left under the tightest memory limit of this process's cgroup and its parents
    (cgroup v2 ``memory.max`` - ``memory.current``; v1 ``memory.limit_in_bytes`` -
    ``memory.usage_in_bytes``), or None without a limit."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, relative = parts
        if controllers == "":
            base, files = Path(root), ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base, files = Path(root) / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        folder = base / relative.lstrip("/")
        # inside a container the process's own path may not exist: its root is the mount's
        for group in [folder, *folder.parents] if folder.is_dir() else [base]:
            limit, usage = _read_number(group / files[0]), _read_number(group / files[1])
            if limit is not None and limit < _NO_LIMIT and usage is not None:
                rooms.append(max(0, limit - usage))
            if group == base:
                break
    return min(rooms) if rooms else None


def address_space_room(status: str = "/proc/self/status") -> int | None:
    """Bytes of address space left under RLIMIT_AS (the soft limit minus VmSize), or None."""
    try:
        import resource
    except ImportError:
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    size = _status_bytes("VmSize", status)
    return max(0, limit - (size or 0))


@dataclass
class Available:
    """Bytes this process may hold in all (what it holds now included) and where that comes from."""

    bytes: int | None
    source: str


def available_memory(max_memory: int | None = None) -> Available:
    """What the process may use in all: ``max_memory`` when given, else the least of the
    system's available memory, the cgroup's room and the address-space room, each plus the
    resident memory the process holds now. ``bytes`` None: nothing known (no check)."""
    if max_memory is not None:
        return Available(int(max_memory), "--max-memory")
    held = _status_bytes("VmRSS") or 0
    candidates = []
    for source, room in (("available memory (MemAvailable)", system_available()),
                         ("the cgroup memory limit", cgroup_room()),
                         ("the address-space limit (ulimit -v)", address_space_room())):
        if room is not None:
            candidates.append((room + held, source))
    if not candidates:
        return Available(None, "unknown")
    size, source = min(candidates)
    return Available(size, source)


def input_voxels(path, series_uid: str | None = None) -> tuple | None:
    """(x, y, z) size of the CT at ``path`` from its header only (no voxel read), or None when
    the header cannot tell (the reader then reports the problem itself)."""
    from .files import DICOM_SUFFIXES, VOLUME_KINDS, image_suffix

    path = Path(path)
    try:
        if path.is_dir():
            from .dicom_folder import choose_series, scan_folder, series_info

            groups, _ = scan_folder(path)
            if not groups:
                return None
            info = choose_series([series_info(uid, items) for uid, items in groups.items()], series_uid)
            ds = next(ds for p, ds in groups[info.uid] if p == info.files[0])
            return int(ds.Columns), int(ds.Rows), info.slices * int(getattr(ds, "NumberOfFrames", 1) or 1)
        suffix = image_suffix(path)
        if suffix in VOLUME_KINDS:
            import SimpleITK as sitk

            from .image_headers import native_output_silenced

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            with native_output_silenced():
                reader.ReadImageInformation()
            size = tuple(int(s) for s in reader.GetSize())
            return size + (1,) * (3 - len(size)) if len(size) < 3 else size[:3]
        if suffix in DICOM_SUFFIXES:
            from .dicom_folder import read_header

            ds = read_header(path)
            return None if ds is None else (int(ds.Columns), int(ds.Rows), int(getattr(ds, "NumberOfFrames", 1) or 1))
    except Exception:  # noqa: BLE001 - an unreadable header: the reader gives the one-line error
        return None
    return None


def check_case_memory(what: str, size, *, model: bool, explain: bool, max_memory: int | None = None) -> None:
    """Refuse (one-line InputError, exit 2) an analysis of a ``size`` (x, y, z) scan that would
    need more memory than is available; the line names both, and how to proceed."""
    if not size:
        return
    voxels = int(size[0]) * int(size[1]) * int(size[2])
    need = memory_needed(voxels, steps_for(model, explain))
    available = available_memory(max_memory)
    if available.bytes is None or need <= available.bytes:
        return
    lighter = []
    if explain:
        lighter.append(("without --explain", memory_needed(voxels, steps_for(model, False))))
    if model:
        lighter.append(("with --no-model (QCT only)", memory_needed(voxels, steps_for(False, False))))
    fits = [f"{how} (about {format_size(bytes_)})" for how, bytes_ in lighter if bytes_ <= available.bytes]
    if fits:
        advice = "analyse " + " or ".join(fits)
    else:
        advice = "resample the scan to a coarser grid (e.g. 1 mm voxels) before analysing it"
    shown = "x".join(str(int(s)) for s in size)
    if available.source == "--max-memory":
        limit = f"the {format_size(available.bytes)} allowed (--max-memory; a local batch's is shared by its workers)"
        more = "or raise --max-memory if more is really available"
    else:
        limit = f"the {format_size(available.bytes)} of {available.source}"
        more = "free memory, or give --max-memory SIZE (e.g. --max-memory 16G) if more is really available"
    raise InputError(f"{what}: a {shown}-voxel scan needs about {format_size(need)} of memory for this analysis, "
                     f"more than {limit}; {advice}, {more}")


def out_of_memory_message() -> str:
    """The one line of a run that ran out of memory although its scan passed the up-front check."""
    available = available_memory()
    now = f" ({format_size(available.bytes)} of {available.source} now)" if available.bytes else ""
    return (f"ran out of memory{now}; unfinished outputs were removed. Free memory, analyse without --explain or "
            "with --no-model, or use a machine with more memory")
