"""The run folder: lock, stale temporaries, settings, finished records with sha256, log."""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from poolwise._io import FolderBusyError
from poolwise.runs import RunFolder, file_entry

SRC = Path(__file__).resolve().parents[2] / "src" / "poolwise"


def test_hold_removes_only_stale_temporaries_and_tells_each(tmp_path):
    stale = tmp_path / "cells" / ".a.json.0123456789abcdef.tmp"
    stale.parent.mkdir()
    stale.write_text("{")
    kept = tmp_path / ".notes.tmp"  # not a name atomic_path makes
    kept.write_text("mine")
    heard = []
    with RunFolder(tmp_path).hold(on_notice=heard.append):
        assert not stale.exists() and kept.exists()
    assert heard == [f"removed {stale}, left by a killed run"]


def test_a_held_folder_refuses_another_process(tmp_path):
    code = ("import sys; from poolwise.runs import RunFolder\n"
            f"with RunFolder({str(tmp_path)!r}).hold():\n"
            "    print('held', flush=True); sys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=f"pid {holder.pid}"), \
                RunFolder(tmp_path).hold():
            pass
    finally:
        holder.communicate("\n", timeout=30)
    with RunFolder(tmp_path).hold():
        pass


def test_settings_are_recorded_once_and_other_settings_are_refused_by_name(tmp_path):
    folder = RunFolder(tmp_path / "run", what="LOSO run")
    folder.settings({"lr": 0.1, "seed": 1, "version": "a"})
    assert json.loads(folder.settings_path.read_text()) == {"lr": 0.1, "seed": 1, "version": "a"}
    folder.settings({"lr": 0.1, "seed": 1, "version": "b"}, ignore=("version",))
    assert json.loads(folder.settings_path.read_text())["version"] == "a"
    with pytest.raises(ValueError, match=r"holds a LOSO run with other settings \(lr, seed\)"):
        folder.settings({"lr": 0.2, "seed": 2, "version": "a"})


def test_a_finished_record_names_its_files_with_their_sha256(tmp_path):
    folder = RunFolder(tmp_path, records="fold_{name}.json", item="fold")
    weights = tmp_path / "fold_A.safetensors"
    weights.write_bytes(b"weights")
    chain = tmp_path / "chain" / "after_A.bin"
    chain.parent.mkdir()
    chain.write_bytes(b"chain")
    digest = hashlib.sha256(b"weights").hexdigest()
    written = folder.finish("A", {"score": 1.0}, {"weights": (weights, digest), "cnn": chain})
    assert written == {"score": 1.0, "weights": {"file": "fold_A.safetensors", "sha256": digest},
                       "cnn": {"file": "chain/after_A.bin",
                               "sha256": hashlib.sha256(b"chain").hexdigest()}}
    assert folder.finished("A", required=("weights",)) == (written, None)
    assert folder.finished("B") == (None, None)  # never started

    chain.write_bytes(b"chai")  # truncated
    record, problem = folder.finished("A")
    assert record is None and problem == (f"{chain} does not match the sha256 in fold_A.json "
                                          "(truncated or changed)")
    chain.unlink()
    assert folder.finished("A")[1] == f"{chain} is missing"


def test_records_without_a_required_file_or_not_json_are_redone(tmp_path):
    folder = RunFolder(tmp_path, records="cells/{name}.json", item="probe cell")
    folder.finish("x", {"score": 2})
    assert folder.finished("x") == ({"score": 2}, None)
    assert folder.finished("x", required=("weights",)) == (
        None, "x.json records no weights checksum")
    folder.record_path("y").write_text('{"score": ')
    record, problem = folder.finished("y")
    assert record is None and "y.json: probe cell record is not valid JSON" in problem
    folder.record_path("z").write_text("[1, 2]")
    assert folder.finished("z") == (None, "z.json is not a record")


def test_file_entries_are_relative_to_the_folder(tmp_path):
    path = tmp_path / "a" / "b.bin"
    path.parent.mkdir()
    path.write_bytes(b"")
    assert file_entry(tmp_path, path) == {
        "file": "a/b.bin", "sha256": hashlib.sha256(b"").hexdigest()}
    with pytest.raises(ValueError):
        file_entry(tmp_path / "a", tmp_path / "elsewhere.bin")


def test_the_log_appends_events_and_skips_a_line_cut_by_a_crash(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.events() == []
    folder.log({"event": "fold", "subject": "A", "seconds": 1.5})
    with open(folder.log_path, "a") as f:
        f.write('{"event": "fo')  # the last line of a killed process
    folder.log({"event": "other"})
    assert folder.events("fold") == [{"event": "fold", "subject": "A", "seconds": 1.5}]
    assert len(folder.events()) == 2
    folder.rewrite_log([{"epoch": 0}, {"epoch": 1}])
    assert folder.log_path.read_text() == '{"epoch": 0}\n{"epoch": 1}\n'


def test_only_the_run_layer_locks_folders_and_fans_out():
    """No module outside poolwise.runs imports the lock, the stale-temporary clean-up, the
    settings check or the worker pool."""
    names = {"lock_folder", "remove_stale_temps", "check_settings", "process_pool"}
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "runs" or path.name in ("_io.py", "_procs.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in ("poolwise._io",
                                                                     "poolwise._procs"):
                offenders += [f"{path.relative_to(SRC)}: {a.name}" for a in node.names
                              if a.name in names]
    assert offenders == []
