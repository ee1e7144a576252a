"""Helpers the tests share (import them: ``from helpers import run_cli, shared``).

Real data live in ../shared/data beside the project (never committed): tests that need them
skip with the reason when the folder is absent.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"


def shared(*parts) -> Path:
    """Path under ../shared/data, or skip the test with the reason when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not present: {path} (see ../shared/data/README.md)")
    return path


def run_cli(*args, cwd=None):
    """Run ``python -m EmphysemaXAILib ARGS`` and return the CompletedProcess (text mode)."""
    return subprocess.run([sys.executable, "-m", "EmphysemaXAILib", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def ramp_volume(shape=(12, 32, 40), seed=0) -> np.ndarray:
    """An int16 HU volume whose every slice differs (value encodes z, y, x), for ordering tests."""
    z, y, x = np.indices(shape)
    rng = np.random.default_rng(seed)
    return (-1000 + 50 * z + 3 * y + x + rng.integers(0, 3, shape)).astype(np.int16)


def table_rows(table_node) -> list[dict]:
    """The rows of a Slicer table node as dicts (numbers as floats), without pandas (3D Slicer's
    Python has none, so ``slicer.util.dataframeFromTable`` is not used where tests run there)."""
    table = table_node.GetTable()
    columns = [table.GetColumn(i) for i in range(table.GetNumberOfColumns())]
    rows = []
    for row in range(table.GetNumberOfRows()):
        rows.append({column.GetName(): (column.GetValue(row) if column.IsNumeric() else str(column.GetValue(row)))
                     for column in columns})
    return rows


def table_value(table_node, key_column: str, key, column: str):
    """The ``column`` value of the row whose ``key_column`` is ``key``."""
    return next(row[column] for row in table_rows(table_node) if row[key_column] == key)


def wait_for_run(run, timeout: float = 300.0) -> None:
    """Poll a module run's child process (``AnalysisRun.process``) until it ends, as the module's
    timer does; fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while run.process.running:
        run.process.poll()
        assert time.monotonic() < deadline, f"the analysis process still runs after {timeout} s"
        time.sleep(0.05)
    run.process.poll()


def save_untrained_pattern_model(folder) -> Path:
    """Write an untrained pattern model folder (width 4, seeded), as the training command would:
    fast, for tests of the machinery that need a pattern model's outputs."""
    import torch

    from EmphysemaXAILib.analysis.patterns import PATTERNS
    from EmphysemaXAILib.model.checkpoint import save_model
    from EmphysemaXAILib.model.pattern_net import PatternNet

    torch.manual_seed(0)
    config = {"name": "test-pattern-untrained",
              "architecture": {"kind": "pattern", "width": 4, "hidden": 8, "pixel_mm": 1.0, "slice_mm": 2.0},
              "patterns": list(PATTERNS), "extent_calibration": [1.0, 0.0], "extent_sigma": 1.0}
    save_model(PatternNet(width=4, hidden=8), config, folder)
    return Path(folder)
