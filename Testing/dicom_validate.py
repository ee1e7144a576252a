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
