"""A real LOSO run killed with SIGKILL at several points, then resumed: the finished folds are
byte-identical to an uninterrupted run; damaged folds are redone; no orphan; one run per folder.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from _cohorts import small_cohort
from _proc import children, still_alive_after, survivors_of_sigkill

from poolwise._io import FolderBusyError, lock_folder
from poolwise.cli import main
from poolwise.pain.data.readers import load_dataset
from poolwise.pain.deploy.explain import explain_run
from poolwise.pain.loso.run import LosoConfig, run_loso
from poolwise.pain.train import TrainConfig

pytestmark = pytest.mark.slow

# Kills this very process with SIGKILL at the os.replace of the n-th file whose name matches
# a pattern: "before" the rename (the temporary file is written and fsynced) or "after" it.
KILLER = textwrap.dedent("""
    import fnmatch, os, signal, sys
    pattern, nth, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    real, seen = os.replace, [0]
    def replace(src, dst):
        hit = fnmatch.fnmatch(os.path.basename(dst), pattern)
        if hit:
            seen[0] += 1
        if hit and seen[0] == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        real(src, dst)
        if hit and seen[0] == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    from poolwise.cli import main
    sys.exit(main(sys.argv[4:]))
""")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    dataset = small_cohort(root / "cohort", n_subjects=5, seed=11, per_class=(12, 8))
    return dataset.save(root / "small.npz")


def loso_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pain", "loso", str(data), "--model", "cnn_tap", "--epochs", "1", "--batch-size",
            "16", "--select-subjects", "2", "--threads", "1", "--out", str(out), *extra]


def run_cli(args: list[str], killer: tuple | None = None) -> subprocess.CompletedProcess:
    prefix = ["-c", KILLER, *map(str, killer)] if killer else ["-m", "poolwise"]
    return subprocess.run([sys.executable, *prefix, *args], capture_output=True, text=True,
                          timeout=600)


def results(folder: Path) -> dict[str, bytes]:
    """Every result file of a run folder (the log, with wall times, is not a result)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("log.jsonl", ".poolwise.lock")}


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    done = run_cli(loso_args(data, out))
    assert done.returncode == 0, done.stderr
    files = results(out)
    assert sum(name.endswith(".json") and name.startswith("fold_") for name in files) == 5
    return files


@pytest.mark.parametrize("killer,left", [
    (("fold_*.safetensors", 1, "before"), 0),  # the first fold's weights are not renamed
    (("fold_*.json", 1, "before"), 0),  # weights in place, the record that marks them not
    (("fold_*.json", 2, "after"), 2),  # two folds finished
    (("fold_*.safetensors", 4, "before"), 3),
])
def test_killed_run_resumes_to_the_same_bytes(data, reference, tmp_path, killer, left):
    out = tmp_path / "run"
    killed = run_cli(loso_args(data, out), killer)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list(out.glob("fold_*.json"))) == left
    stale = list(out.glob(".*.tmp"))
    assert bool(stale) == (killer[2] == "before")  # the temporary file a kill leaves
    resumed = run_cli(loso_args(data, out))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("done earlier") == left
    for path in stale:
        assert f"removed {path}" in resumed.stdout
    assert results(out) == reference  # same files, byte for byte; no temporary left


def test_damaged_folds_are_redone_not_reported_done(data, reference, tmp_path):
    out = tmp_path / "run"
    assert run_cli(loso_args(data, out)).returncode == 0
    weights = sorted(out.glob("fold_*.safetensors"))
    weights[0].write_bytes(weights[0].read_bytes()[:-100])  # truncated
    weights[1].unlink()  # lost
    record = sorted(out.glob("fold_*.json"))[2]
    record.write_text(record.read_text()[:50])  # a torn record
    with pytest.raises(ValueError, match=rf"{weights[0]} does not match the sha256"):
        explain_run(out, load_dataset(data))  # nothing is explained from a damaged fold
    resumed = run_cli(loso_args(data, out))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("done earlier") == 2
    assert f"{weights[0]} does not match the sha256" in resumed.stdout
    assert f"{weights[1]} is missing" in resumed.stdout
    assert f"{record.name}: fold record is not valid JSON" in resumed.stdout
    assert results(out) == reference


def test_a_second_run_on_the_same_folder_refuses(data, tmp_path, capsys):
    out = tmp_path / "run"
    config = LosoConfig("cnn_tap", train=TrainConfig(epochs=1, batch_size=16),
                        n_select_subjects=2)
    with lock_folder(out):
        with pytest.raises(FolderBusyError, match=rf"{out.name} is in use by another poolwise "
                           rf"run \(pid {os.getpid()}\)"):
            run_loso(load_dataset(data), out, config)
        assert main(["pain", "loso", str(data), "--model", "cnn_tap", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("poolwise: error: ") and "in use by another poolwise run" in err[-1]
    assert not list(out.glob("fold_*"))  # nothing was trained


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
def two_job_run(data: Path, out: Path, **popen) -> tuple[subprocess.Popen, set[int]]:
    """A `pain loso --jobs 2` run whose folds last minutes (200 epochs), once its two workers
    (and the resource tracker) have been training for two seconds."""
    args = loso_args(data, out, "--jobs", "2")
    args[args.index("--epochs") + 1] = "200"
    parent = subprocess.Popen([sys.executable, "-m", "poolwise", *args], **popen)
    deadline = time.monotonic() + 120
    while len(children(parent.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    spawned = children(parent.pid)
    time.sleep(2.0)
    return parent, spawned


def test_sigkill_of_a_two_job_run_leaves_no_orphan(data, tmp_path):
    parent, spawned = two_job_run(data, tmp_path / "run", stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    try:
        assert len(spawned) >= 3
        assert survivors_of_sigkill(parent, spawned) == set()
    finally:
        parent.kill()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
def test_ctrl_c_stops_a_two_job_run_at_once_with_one_line(data, tmp_path):
    """Ctrl-C reaches the whole process group: the workers ignore it, the parent stops them
    without waiting for the folds in flight (minutes long here) and prints one line."""
    parent, spawned = two_job_run(data, tmp_path / "run", text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert len(spawned) >= 3
        os.killpg(parent.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
        _, err = parent.communicate(timeout=30)  # a fold at 200 epochs takes minutes
    finally:
        parent.kill()
    assert parent.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines()[-1] == \
        "poolwise: interrupted; rerun the same command to resume"
    assert still_alive_after(spawned, 10.0) == set()
    assert not list((tmp_path / "run").glob("fold_*.json"))
