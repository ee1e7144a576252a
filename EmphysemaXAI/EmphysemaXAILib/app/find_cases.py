"""Finding the cases of a cohort under a root folder: DICOM series and image files, case ids.

A case id is made from the path relative to the root (never from patient tags): file-system
safe, never hidden, unique within a run.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..io.files import VOLUME_SUFFIXES, relative_case_id

#: Files that document a cohort rather than hold images: a folder holding only these (and
#: hidden files) is not a case. Anything else in a folder that yields no image is a failed case.
DOCUMENT_SUFFIXES = frozenset({".txt", ".md", ".rst", ".pdf", ".doc", ".docx", ".odt", ".rtf", ".html", ".htm",
                               ".json", ".xml", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".log", ".csv", ".tsv",
                               ".xls", ".xlsx", ".ods", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".py", ".sh"})
DOCUMENT_NAMES = frozenset({"readme", "license", "licence", "copying", "notice", "changelog", "authors",
                            "dicomdir", "thumbs.db", "desktop.ini"})


def is_document(name: str) -> bool:
    lower = name.lower()
    stem, dot, suffix = lower.rpartition(".")
    return lower in DOCUMENT_NAMES or (dot and stem in DOCUMENT_NAMES) or (dot and f".{suffix}" in DOCUMENT_SUFFIXES)


def _under(path: Path, folders) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


def find_cases(root, exclude=()) -> list:
    """Every case under ``root``: each DICOM series (grouped per folder) and each image file,
    and a *failed* case for each folder that holds files but yields no readable image.

    Returns dicts with ``case_id``, ``source`` (relative path), ``path`` and ``series_uid``;
    failed cases also have ``error`` (the reason: DICOM files whose headers cannot be parsed,
    or files that are neither DICOM nor a known image type). A folder whose files are all
    documentation (``README``, ``.txt``, ``.csv``, ``.pdf``, pictures ...; see
    ``DOCUMENT_SUFFIXES``) or hidden is not a case, so a README beside the case folders is
    ignored. Unreadable DICOM-looking files in a folder that also holds a series stay inside
    that series' case (the reader reports them). Hidden folders and the folders in
    ``exclude`` (the batch's own output when it lies under ``root``) are never entered.
    ``case_id`` values are unique (``-2``, ``-3`` ... added when two sources map to one id).
    """
    from ..io.dicom_folder import scan_folder

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; batch takes a folder of cases")
    excluded = [Path(p).resolve() for p in exclude]
    cases, files_in = [], {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in excluded)
        files_in[here] = [f for f in sorted(files) if not f.startswith(".")]
        for name in files_in[here]:
            if name.lower().endswith(VOLUME_SUFFIXES):
                relative = (here / name).relative_to(root)
                cases.append({"case_id": relative_case_id(relative), "source": relative.as_posix(),
                              "path": str(here / name), "series_uid": None})
    with_images = {Path(c["path"]).parent for c in cases}
    series, skipped = scan_folder(root)
    by_folder = {}
    for uid, items in series.items():
        for path, _ in items:
            if excluded and _under(path.resolve(), excluded):
                continue
            by_folder.setdefault((path.parent, uid), 0)
            by_folder[(path.parent, uid)] += 1
    folders = {}
    for (folder, uid) in sorted(by_folder):
        folders.setdefault(folder, []).append(uid)
    for folder, uids in sorted(folders.items()):
        relative = folder.relative_to(root)
        with_images.add(folder)
        for index, uid in enumerate(uids):
            suffix = f"-series{index + 1}" if len(uids) > 1 else ""
            cases.append({"case_id": relative_case_id(relative, suffix), "source": relative.as_posix() or ".",
                          "path": str(folder), "series_uid": uid})
    unreadable = {}
    for path, reason in skipped:
        unreadable.setdefault(path.parent, []).append((path.name, reason))
    for folder, names in sorted(files_in.items()):
        if folder in with_images or not names:
            continue
        broken = unreadable.get(folder, [])
        others = [n for n in names if not is_document(n) and n not in {b for b, _ in broken}]
        if not broken and not others:
            continue  # documentation only: not a case
        if broken:
            name, reason = broken[0]
            error = (f"no readable image: {len(broken)} DICOM file{'s' if len(broken) > 1 else ''} could not be "
                     f"read (e.g. {name}: {reason})")
        else:
            error = (f"no readable image: {len(others)} file{'s' if len(others) > 1 else ''} neither DICOM nor a "
                     f"known image type (e.g. {others[0]})")
        relative = folder.relative_to(root)
        cases.append({"case_id": relative_case_id(relative), "source": relative.as_posix() or ".", "path": str(folder),
                      "series_uid": None, "error": error})
    cases.sort(key=lambda c: (c["case_id"], c["source"]))
    taken = set()
    for case in cases:  # two sources never share a case folder
        case_id, count = case["case_id"], 1
        while case_id in taken:
            count += 1
            case_id = f"{case['case_id']}-{count}"
        taken.add(case_id)
        case["case_id"] = case_id
    return sorted(cases, key=lambda c: c["case_id"])
