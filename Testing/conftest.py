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


def _train_tiny_model(out):
    done = run_cli("train", "--phantoms", 8, "--phantom-size", "small", "--epochs", 1, "--case-epochs", 2,
                   "--tiles-per-case", 24, "--workers", 1, "--seed", 3, "--out", out)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, worker_id):
    """A severity model trained by the real `train` command on 8 small phantoms (1 tile epoch,
    2 case epochs): fast, not accurate; for tests of the machinery, not of the figures.

    Under pytest-xdist the workers of one run share it: the first to need it trains it into the
    run's common temporary folder while the others wait on a lock (it used to be trained once per
    worker, 100-200 s each)."""
    if worker_id == "master":   # not under xdist
        out = tmp_path_factory.mktemp("models") / "tiny"
        _train_tiny_model(out)
        return out
    from filelock import FileLock  # a dependency of torch, which the tests that use this need

    shared = tmp_path_factory.getbasetemp().parent   # this run's folder, common to its workers
    out, done = shared / "tiny-model", shared / "tiny-model.done"
    with FileLock(str(shared / "tiny-model.lock")):
        if not done.exists():
            _train_tiny_model(out)
            done.touch()
    return out
