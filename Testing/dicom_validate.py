"""``dciodvfy`` (David Clunie's DICOM validator, Debian package ``dicom3tools``) for the tests.

``make dicom3tools`` installs it (``make test`` does so first when ``apt-get`` is there). A test
that validates calls :func:`dciodvfy_findings`; without the validator the test is skipped with the
reason, unless ``EMPHYSEMA_XAI_REQUIRE_DCIODVFY=1`` (set by ``make test``) makes that a failure,
so CI can never pass by skipping the validation.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest


def dciodvfy_path() -> str:
    """The validator's path, or skip (fail under EMPHYSEMA_XAI_REQUIRE_DCIODVFY=1) when it is absent."""
    path = shutil.which("dciodvfy")
    if path is None:
        reason = "dciodvfy (Debian package dicom3tools) is not installed: make dicom3tools"
        if os.environ.get("EMPHYSEMA_XAI_REQUIRE_DCIODVFY") == "1":
            pytest.fail(reason + " (EMPHYSEMA_XAI_REQUIRE_DCIODVFY=1)")
        pytest.skip(reason)
    return path


def dciodvfy_findings(path) -> dict:
    """Validate one DICOM file: ``{"errors": [...], "warnings": [...], "output": text}``.

    dciodvfy exits 0 whatever it finds, so its findings are read from the lines it prints
    ("Error - ..." and "Warning - ...").
    """
    done = subprocess.run([dciodvfy_path(), str(Path(path))], capture_output=True, text=True, timeout=120)
    text = done.stdout + done.stderr
    lines = [line.strip() for line in text.splitlines()]
    return {"errors": [line for line in lines if line.startswith("Error")],
            "warnings": [line for line in lines if line.startswith("Warning")],
            "output": text}


def sr_groups(path) -> dict:
    """tracking identifier text -> {"num": {code: (value, unit code)}, "code": {code: value code},
    "segment": referenced segment number or None, "algorithm": (name, version)}, read with pydicom."""
    def walk(items, out):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else None
            if item.ValueType == "TEXT" and name == "112039":
                out["id"] = item.TextValue
            elif item.ValueType == "NUM":
                value = item.MeasuredValueSequence[0]
                number = float(value.FloatingPointValue)  # exact (FD); NumericValue is DS, <= 16 characters
                assert float(value.NumericValue) == pytest.approx(number, rel=1e-9)
                out["num"][name] = (number, value.MeasurementUnitsCodeSequence[0].CodeValue)
            elif item.ValueType == "CODE":
                out["code"][name] = item.ConceptCodeSequence[0].CodeValue
            elif item.ValueType == "IMAGE" and "ReferencedSOPSequence" in item:
                ref = item.ReferencedSOPSequence[0]
                out["segment"] = int(ref.ReferencedSegmentNumber) if "ReferencedSegmentNumber" in ref else None
            elif item.ValueType == "TEXT" and name == "111001":
                out["algorithm"][0] = item.TextValue
            elif item.ValueType == "TEXT" and name == "111003":
                out["algorithm"][1] = item.TextValue
            walk(item.get("ContentSequence", []), out)
        return out

    sr = pydicom.dcmread(path)
    groups = {}
    for container in sr.ContentSequence:
        if container.ConceptNameCodeSequence[0].CodeValue != "126010":  # Imaging Measurements
            continue
        for group in container.ContentSequence:
            found = walk(group.ContentSequence, {"num": {}, "code": {}, "segment": None, "algorithm": [None, None]})
            groups[found["id"]] = found
    return groups
