"""A run folder: the one owner of a run's lock, settings, finished records and log.

Every command that writes results (``vision train``, CLIP training, ``vision probe``,
``vision compare``'s cells, ``pain loso``) works in a :class:`RunFolder`:

- **Lock.** :meth:`RunFolder.hold` takes the folder's advisory lock (a second process refuses,
  or waits) and then removes the temporary files a killed process left
  (:func:`poolwise._io.remove_stale_temps`), so no live writer's file is ever removed.
- **Settings.** One JSON file (``run.json`` by default) records what the run is; on resume
  :meth:`RunFolder.check_settings` refuses other settings by name, so two runs never mix.
- **Finished records.** Each item of a run (a fold, a probe cell, the run itself) ends with a
  JSON record written atomically and last; it names the files it stands for with their sha256
  (``{"file": ..., "sha256": ...}`` entries). :meth:`RunFolder.finished` accepts an item only
  when its record parses and every file it names matches, so a damaged item is redone, never
  reported as done.
- **Log.** ``log.jsonl``: one JSON object per event, appended (a log, not a result: a crash
  may lose its last line).
- **Progress.** :func:`progress` counts, in this process, the items finished and the epochs
  checkpointed (:func:`mark_progress`); the SLURM executor reads it to tell a job that reached
  its time limit without saving anything (requeueing it would redo the same work) from one
  that can resume further on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from poolwise._io import (
    LOCK_NAME,
    append_jsonl,
    check_settings,
    lock_folder,
    read_json,
    remove_stale_temps,
    sha256_file,
    write_json,
    write_text,
)

LOG_NAME = "log.jsonl"


def file_entry(folder: Path, path: Path, sha256: str | None = None) -> dict:
    """``{"file": <path relative to folder>, "sha256": <hex>}`` for a finished record."""
    path = Path(path)
    return {"file": path.relative_to(folder).as_posix(),
            "sha256": sha256 if sha256 is not None else sha256_file(path)}


def _is_entry(value: object) -> bool:
    return isinstance(value, dict) and set(value) == {"file", "sha256"}


_PROGRESS = [0]


def mark_progress() -> None:
    """Notes that this process saved work a rerun will not redo (an item, an epoch)."""
    _PROGRESS[0] += 1


def progress() -> int:
    """How many times :func:`mark_progress` was called in this process."""
    return _PROGRESS[0]


class RunFolder:
    """The folder of one run.

    Args:
        path: The folder (created on first use).
        what: What the run is called in messages ("LOSO run", "probe", "run").
        settings: The settings file's name inside the folder.
        records: The file name of an item's finished record, with ``{name}`` for the item's
            name (``"fold_{name}.json"``, ``"cells/{name}.json"``; ``"result.json"`` for a run
            of one item).
        item: What an item is called in messages ("fold", "probe cell").
    """

    def __init__(self, path: str | os.PathLike, *, what: str = "run",
                 settings: str = "run.json", records: str = "{name}.json",
                 item: str = "item") -> None:
        self.path = Path(path)
        self.what = what
        self.settings_path = self.path / settings
        self.records = records
        self.item = item

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, what={self.what!r})"

    # --- the lock -----------------------------------------------------------------------------

    @contextmanager
    def hold(self, *, wait: bool = False,
             on_notice: Callable[[str], None] | None = None) -> Iterator[RunFolder]:
        """Holds the folder's lock for the block, after removing stale temporary files (each
        removal is told to ``on_notice``).

        A folder this call created (with the parents it created) is removed again when the
        block raises before anything but the lock was written in it, so a refused run leaves
        no trace.

        Raises:
            FolderBusyError: when another process holds the lock and ``wait`` is False.
        """
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        created = bool(missing)
        try:
            with lock_folder(self.path, wait=wait):
                for removed in remove_stale_temps(self.path):
                    if on_notice is not None:
                        on_notice(f"removed {removed}, left by a killed run")
                yield self
        except BaseException:
            if created and self.path.is_dir() and \
                    {p.name for p in self.path.iterdir()} <= {LOCK_NAME}:
                (self.path / LOCK_NAME).unlink(missing_ok=True)
                for folder in missing:  # the run folder, then the parents this call made
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()
            raise

    # --- settings -----------------------------------------------------------------------------

    def check_settings(self, wanted: Mapping, *, ignore: Collection[str] = ()) -> bool:
        """Whether the settings file exists and holds ``wanted`` (``ignore``'d keys aside).

        Raises:
            ValueError: naming the keys that differ, when the folder holds other settings.
        """
        return check_settings(self.settings_path, wanted, self.what, ignore=ignore)

    def write_settings(self, settings: Mapping) -> None:
        write_json(self.settings_path, settings)

    def settings(self, wanted: Mapping, *, ignore: Collection[str] = ()) -> None:
        """Checks ``wanted`` against the recorded settings, and records them if there are none."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.check_settings(wanted, ignore=ignore):
            self.write_settings(wanted)

    # --- finished records ---------------------------------------------------------------------

    def record_path(self, name: str = "") -> Path:
        return self.path / self.records.format(name=name)

    def finish(self, name: str, record: dict, files: Mapping[str, Path | tuple[Path, str]] = {},
               ) -> dict:
        """Writes the finished record of item ``name``, last: ``record`` plus, under each key
        of ``files``, the file's entry (path relative to the folder and sha256; pass
        ``(path, sha256)`` when the digest is already known). Returns the record written."""
        record = dict(record)
        for key, value in files.items():
            path, digest = value if isinstance(value, tuple) else (value, None)
            record[key] = file_entry(self.path, Path(path), digest)
        write_json(self.record_path(name), record)
        mark_progress()
        return record

    def finished(self, name: str = "", *, required: Collection[str] = ()
                 ) -> tuple[dict | None, str | None]:
        """The record of a finished item, or None and why it must be (re)done (None when it
        was never started).

        An item is finished when its record parses, holds an entry for every key in
        ``required``, and every file entry in it names an existing file with that sha256.
        """
        path = self.record_path(name)
        if not path.is_file():
            return None, None
        try:
            record = read_json(path, f"{self.item} record")
        except ValueError as error:
            return None, str(error)
        if not isinstance(record, dict):
            return None, f"{path.name} is not a record"
        for key in required:
            if not _is_entry(record.get(key)):
                return None, f"{path.name} records no {key} checksum"
        for entry in record.values():
            if not _is_entry(entry):
                continue
            file = self.path / entry["file"]
            if not file.is_file():
                return None, f"{file} is missing"
            if sha256_file(file) != entry["sha256"]:
                return None, (f"{file} does not match the sha256 in {path.name} "
                              "(truncated or changed)")
        return record, None

    # --- the log ------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.path / LOG_NAME

    def log(self, event: Mapping) -> None:
        """Appends one event to ``log.jsonl``."""
        self.path.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.log_path, dict(event))

    def rewrite_log(self, events: list[Mapping]) -> None:
        """Replaces ``log.jsonl`` atomically with ``events`` (a run that logs its whole history
        at every checkpoint, so the log never runs ahead of the checkpoint)."""
        write_text(self.log_path, "".join(json.dumps(dict(e)) + "\n" for e in events))

    def events(self, kind: str | None = None) -> list[dict]:
        """The logged events (of ``kind`` in their ``event`` key), lines cut by a crash
        skipped."""
        if not self.log_path.is_file():
            return []
        found = []
        for line in self.log_path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and (kind is None or entry.get("event") == kind):
                found.append(entry)
        return found
