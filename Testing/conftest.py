"""Shared fixtures (helpers that tests import live in ``helpers.py``)."""
from __future__ import annotations

import pytest

try:  # torch's optimizers import torch._dynamo -> triton, whose import segfaults in a process
    import torch._dynamo  # noqa: F401  that has loaded Slicer's VTK first: load it before any test does
except ImportError:
    pass

from helpers import ramp_volume, run_cli  # noqa: E402  (after torch._dynamo, see above)


@pytest.fixture
def ramp():
    return ramp_volume()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A severity model trained by the real `train` command on 8 small phantoms (1 tile epoch,
    2 case epochs): fast, not accurate; for tests of the machinery, not of the figures."""
    out = tmp_path_factory.mktemp("models") / "tiny"
    done = run_cli("train", "--phantoms", 8, "--phantom-size", "small", "--epochs", 1, "--case-epochs", 2,
                   "--tiles-per-case", 24, "--workers", 1, "--seed", 3, "--out", out)
    assert done.returncode == 0, done.stderr
    return out
