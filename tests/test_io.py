"""Result files: atomic, fsynced, umask-respecting, stable bytes; stale temporaries; locks."""

import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from poolwise._io import (
    FolderBusyError,
    atomic_path,
    lock_folder,
    read_json,
    remove_stale_temps,
    safetensors_bytes,
    write_bytes,
    write_json,
    write_text,
)


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    before = os.umask(0o022)
    os.umask(before)
    yield set_mask
    os.umask(before)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_mode_open_would_give(tmp_path, umask, mask, mode):
    umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_path(tmp_path / "b.bin") as tmp:
        assert stat.S_IMODE(tmp.stat().st_mode) == mode  # already while it is written
        torch.save({"w": torch.ones(2)}, tmp)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what a normal open() gives under this umask
    for name in ("a.json", "b.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert stat.S_IMODE(plain.stat().st_mode) == mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "r.txt", "old\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.txt"]


def test_atomic_path_fsyncs_the_file_then_the_folder(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(("fsync", os.readlink(
        f"/proc/self/fd/{fd}"))) or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append(("replace", str(b)))
                        or real_replace(a, b))
    write_text(tmp_path / "f.txt", "x")
    kinds = [(k, os.path.basename(v)) for k, v in calls]
    assert kinds[0][0] == "fsync" and kinds[0][1].startswith(".f.txt.")  # the content
    assert kinds[1] == ("replace", "f.txt")
    assert kinds[2] == ("fsync", tmp_path.name)  # the folder entry


def test_json_is_written_in_a_stable_order(tmp_path):
    a = write_json(tmp_path / "a.json", {"b": 1, "a": {"d": 2, "c": 3}}).read_bytes()
    b = write_json(tmp_path / "b.json", {"a": {"c": 3, "d": 2}, "b": 1}).read_bytes()
    assert a == b
    with pytest.raises(ValueError):  # NaN is not JSON: never written as a result
        write_json(tmp_path / "n.json", {"x": float("nan")})


def test_safetensors_bytes_are_the_same_in_every_process(tmp_path):
    code = textwrap.dedent("""
        import sys, torch
        from poolwise._io import safetensors_bytes
        meta = {"zeta": "1", "alpha": "2", "format": "x", "m": "3", "poolwise": "{}"}
        sys.stdout.buffer.write(safetensors_bytes({"b": torch.ones(3), "a": torch.zeros(2)},
                                                  meta))
    """)
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True,
                              check=True).stdout for _ in range(4)}
    assert len(outputs) == 1  # safetensors alone orders metadata by a per-process hash
    (data,) = outputs
    from safetensors.torch import load

    assert torch.equal(load(data)["b"], torch.ones(3))
    here = safetensors_bytes({"a": torch.zeros(2), "b": torch.ones(3)},
                             {"m": "3", "alpha": "2", "zeta": "1", "poolwise": "{}",
                              "format": "x"})
    assert here == data


def test_read_json_names_a_truncated_file(tmp_path):
    path = tmp_path / "fold_P01.json"
    path.write_text('{"test_subject": "P01", "metrics": {"f1"')
    with pytest.raises(ValueError, match=r"fold_P01\.json: fold record is not valid JSON"):
        read_json(path, "fold record")
    assert read_json(write_json(tmp_path / "ok.json", [1])) == [1]


def test_only_poolwise_temporaries_are_removed(tmp_path):
    ours = [tmp_path / ".fold_P01.json.0123456789abcdef.tmp",
            tmp_path / "sub" / ".fold_P02.safetensors.fedcba9876543210.tmp"]
    theirs = [tmp_path / ".notes.tmp", tmp_path / ".x.0123.tmp", tmp_path / "data.tmp",
              tmp_path / ".fold.json.0123456789ABCDEF.tmp"]
    for path in ours + theirs:
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(ours)
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)


def _hold_lock(folder, seconds):
    code = (f"import time; from poolwise._io import lock_folder\n"
            f"with lock_folder({str(folder)!r}):\n"
            f"    print('held', flush=True); time.sleep({seconds})")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_a_locked_folder_refuses_or_waits(tmp_path):
    holder = _hold_lock(tmp_path, 2.0)
    try:
        with pytest.raises(FolderBusyError, match=rf"{tmp_path.name} is in use by another "
                           rf"poolwise run \(pid {holder.pid}\).*--wait"):
            with lock_folder(tmp_path):
                pass
        start = time.monotonic()
        with lock_folder(tmp_path, wait=True, poll_s=0.05):
            waited = time.monotonic() - start
        assert waited > 0.5  # it queued behind the holder's two seconds
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = _hold_lock(tmp_path, 60.0)
    holder.kill()
    holder.wait()
    with lock_folder(tmp_path):  # the kernel released it with the process
        assert (tmp_path / ".poolwise.lock").read_text().strip() == str(os.getpid())


def test_weights_files_that_are_not_whole_or_not_ours_are_named(tmp_path):
    import pickle

    import pytest
    import torch
    from torch import nn

    from poolwise._io import load_weights_into, read_safetensors, save_safetensors

    path = tmp_path / "w.safetensors"
    save_safetensors(path, nn.Linear(3, 2).state_dict())
    whole = path.read_bytes()
    assert set(read_safetensors(path)) == {"weight", "bias"}
    for damaged in (whole[:-5], pickle.dumps({"weight": 1})):  # truncated; a renamed pickle
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match=f"{path}: not a whole safetensors file"):
            read_safetensors(path)
    path.write_bytes(whole)
    with pytest.raises(ValueError, match=f"{path}: holds the weights of another model .*size"):
        load_weights_into(nn.Linear(4, 2), path)
    load_weights_into(model := nn.Linear(3, 2), path)
    assert torch.equal(model.weight, read_safetensors(path)["weight"])
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors does not exist"):
        read_safetensors(tmp_path / "missing.safetensors")


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB file system (tmpfs), mounted for the test and unmounted after; needs
    root (CI runs as root), skipped otherwise."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_names_the_file_and_keeps_what_was_there(small_disk):
    target = small_disk / "weights.bin"
    write_bytes(target, b"a" * 100_000)
    with pytest.raises(OSError, match=r"no space left to write .*weights\.bin \(400,000 bytes"):
        write_bytes(target, b"b" * 400_000)
    assert target.read_bytes() == b"a" * 100_000
    assert sorted(p.name for p in small_disk.iterdir()) == ["weights.bin"]  # no temporary


def test_a_training_run_on_a_full_disk_says_so(small_disk, capsys):
    from poolwise.cli import main

    out = small_disk / "run"
    args = ["vision", "train", "--epochs", "1", "--out", str(out)]  # a 5 MB checkpoint
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no space left to write" in err and "checkpoint.pt" in err and "bug" not in err
