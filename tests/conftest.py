import os

# Triton's interpreter runs the GGeM Triton kernel on CPU tensors in the tests
# (poolwise.kernels.ggem_triton.interpreted). Triton wraps its own library functions at import,
# compiled or interpreted, so the switch must be in the environment before anything imports
# Triton; no test compiles Triton code for a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent

# The suite runs in pytest-xdist workers (pyproject.toml): they share the machine's cores, so each
# worker, and each process a test starts (OMP_NUM_THREADS is inherited), gets one torch thread;
# with two threads each, their OpenMP threads would spin against each other. A run without
# workers (-n 0) keeps two threads.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
THREADS = 1 if WORKERS > 1 else 2
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _threads_restored():
    """A test that changes torch's thread count does not leave it changed for the next tests
    of its worker (two workers of two threads each would share two cores)."""
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real single-node SLURM cluster on this machine (tests/_slurm.py), started once for the
    session and stopped by pid at its end; skipped, with the reason, where SLURM is absent."""
    import _slurm

    reason = _slurm.missing()
    if reason is not None:
        pytest.skip(reason)
    cluster = _slurm.start(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(slurm, monkeypatch):
    """The cluster's environment in this process (and in its jobs: sbatch exports it), with
    tests/ importable for the grid functions of tests/_slurm_cells.py."""
    monkeypatch.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
    return slurm


def pytest_collection_modifyitems(items):
    """The few slow tests first (each a minute or more): the two workers start on them and
    share out the short ones afterwards, instead of one worker ending alone on a long test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
