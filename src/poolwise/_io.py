"""Files that are either whole or absent: atomic writes, stale temporaries, run-folder locks.

Every result file goes through :func:`atomic_path`: the content is written to a temporary file
beside the target (``.<name>.<16 hex>.tmp``), flushed to disk, renamed over the target, and the
folder entry is flushed too, so a crash or ``SIGKILL`` at any point leaves the old file or the
new one, never a torn one. Temporary files are created with the mode a plain ``open()`` gives
(``0o666`` less the umask), so colleagues sharing a cluster folder can read the results.
A killed process can leave a temporary file behind; :func:`remove_stale_temps` deletes those
(only names of this exact form) when the next run takes the folder's lock.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

TEMP_PATTERN = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")
LOCK_NAME = ".poolwise.lock"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path in the target's folder; on success its content is fsynced and
    it is renamed to ``path`` (then the folder is fsynced); on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Writes ``data`` to ``path`` atomically (:func:`atomic_path`).

    Raises:
        OSError: for a full disk or quota, naming ``path`` and the size (what was there
            before is kept).
    """
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OSError(error.errno, f"no space left to write {path} ({len(data):,} bytes; the "
                      "file it replaces is kept): free space on that disk or write the run "
                      "elsewhere") from None
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def dumps_json(obj: object) -> str:
    """Stable JSON (sorted keys, no NaN): equal content gives equal bytes."""
    return json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: object) -> Path:
    return write_text(path, dumps_json(obj))


def read_json(path: str | os.PathLike, what: str = "file") -> object:
    """``json.loads`` of a file whose errors name the file.

    Raises:
        ValueError: naming the file and the position, for content that is not JSON (e.g. a
            file truncated by a full disk).
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: {what} is not text ({error})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: {what} is not valid JSON ({error}); it may be truncated: "
                         "delete it or restore it from a copy") from None


def check_settings(path: str | os.PathLike, wanted: Mapping, what: str, *,
                   ignore: Collection[str] = ()) -> bool:
    """Whether ``path`` (the settings file of a run folder) exists and holds ``wanted``, keys
    in ``ignore`` aside: False when it does not exist yet.

    Raises:
        ValueError: naming the folder and the keys that differ, when it holds other settings
            (resuming would mix two runs).
    """
    path = Path(path)
    if not path.is_file():
        return False
    saved = read_json(path, f"the {what} settings")
    wanted = json.loads(json.dumps(wanted))
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not a settings object; use another --out folder")
    diff = sorted(k for k in set(saved) | set(wanted)
                  if k not in ignore and saved.get(k) != wanted.get(k))
    if diff:
        raise ValueError(f"{path.parent} holds a {what} with other settings ({', '.join(diff)}); "
                         "use another --out folder or the same settings")
    return True


def append_jsonl(path: str | os.PathLike, obj: object) -> None:
    """Appends one JSON line (a log, not a result: a crash may lose the last line, and the
    next line starts on a line of its own)."""
    line = json.dumps(obj, sort_keys=True, allow_nan=False) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut by a crash: end it
            line = "\n" + line
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def safetensors_bytes(tensors: Mapping, metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors file as bytes, with its header in a stable order.

    safetensors writes ``__metadata__`` in hash-map order, which differs between processes, so
    two saves of the same tensors would differ in bytes; the header is rewritten with sorted
    keys (same length, same meaning).
    """
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                metadata=dict(metadata) if metadata else None)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    stable = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(stable) > n:  # cannot happen for a reordering; keep the library's bytes
        return data
    return data[:8] + stable + b" " * (n - len(stable)) + data[8 + n:]


def read_safetensors(path: str | os.PathLike) -> dict:
    """The tensors of a safetensors file.

    Raises:
        FileNotFoundError: naming the file, when it does not exist.
        ValueError: naming the file, when it is not a whole safetensors file (truncated,
            damaged, or another format such as a pickle renamed).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: not a whole safetensors file ({error}); it is truncated, "
                         "damaged or of another format") from None


def load_weights_into(model: object, path: str | os.PathLike, what: str = "model") -> None:
    """``model.load_state_dict`` of a safetensors file (:func:`read_safetensors`), with a
    ValueError naming the file when its tensors are another model's."""
    state = read_safetensors(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        detail = ("; ".join(line.strip() for line in first[1:3]) or first[0])[:300]
        raise ValueError(f"{path}: holds the weights of another {what} ({detail})") from None


def save_safetensors(path: str | os.PathLike, tensors: Mapping,
                     metadata: Mapping[str, str] | None = None) -> Path:
    return write_bytes(path, safetensors_bytes(tensors, metadata))


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_stale_temps(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Deletes the temporary files :func:`atomic_path` leaves when a process is killed.

    Call it only while holding the folder's lock (:func:`lock_folder`), so no live writer's
    file is removed. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = []
    for path in sorted(files):
        if TEMP_PATTERN.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class FolderBusyError(RuntimeError):
    """Another process holds the run folder's lock."""


@contextmanager
def lock_folder(folder: str | os.PathLike, *, wait: bool = False,
                poll_s: float = 0.5) -> Iterator[Path]:
    """An advisory, exclusive lock on a run folder for the duration of the block.

    The lock (``flock`` on ``<folder>/.poolwise.lock``) is released by the kernel when the
    process ends, however it ends, so a killed run never leaves a stale lock.

    Args:
        wait: Wait for the other process to finish instead of refusing.

    Raises:
        FolderBusyError: naming the folder and the holder's pid, when ``wait`` is False and
            another process holds the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; runs on one folder are not serialised there
        yield folder
        return
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise FolderBusyError(
                        f"{folder} is in use by another poolwise run (pid {holder}); wait for "
                        "it to finish, pass --wait to queue behind it, or use another --out"
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def read_toml(path: str | os.PathLike, what: str = "TOML file") -> dict:
    """A TOML file's table (``tomllib``; the ``tomli`` backport on Python 3.10).

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: naming the file and position, for text that is not TOML.
    """
    import sys

    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:
        import tomli as toml
    try:
        with open(path, "rb") as f:
            return toml.load(f)
    except toml.TOMLDecodeError as error:
        raise ValueError(f"{path}: not a valid {what} ({error})") from None
