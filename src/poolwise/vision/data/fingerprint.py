"""What a vision run was made from: a fingerprint of its data's content, not of its path.

A run records the fingerprint in ``run.json``; resuming checks it, so a data folder whose
images were replaced between a kill and the resume is refused, while the same data reached by
another path (relative or absolute, a copy, a symbolic link) is accepted.

The fingerprint is a sha256 over the sorted list of the data's files, each as its path relative
to the data's root, its size in bytes and a sha256 of its content: the whole file up to
:data:`WHOLE` bytes, else its first and last :data:`PART` bytes (so that ImageNet's 1.3 million
files are fingerprinted in two short reads each; an edit that keeps a large file's size, head
and tail is not seen). Which files: the embedded subset's archive; the four Fashion-MNIST idx
files; every file under an image tree (hidden files aside); CLIP pairs CSV files and the images
they name. Digests are
kept per process for files whose size and modification time have not changed.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

PART = 64 * 1024
WHOLE = 2 * PART


@cache
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= WHOLE:
            digest.update(f.read())
        else:
            digest.update(f.read(PART))
            f.seek(size - PART)
            digest.update(f.read(PART))
    return digest.hexdigest()


def files_fingerprint(root: Path, files: list[Path]) -> dict:
    """``{"sha256", "files", "bytes"}`` of ``files`` named relative to ``root``."""
    total = hashlib.sha256()
    n_bytes = 0
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        stat = path.stat()
        n_bytes += stat.st_size
        line = (f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t"
                f"{_file_digest(str(path), stat.st_size, stat.st_mtime_ns)}\n")
        total.update(line.encode())
    return {"sha256": total.hexdigest(), "files": len(files), "bytes": n_bytes}


def _tree_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".")
                                       for part in p.relative_to(root).parts)]


def data_fingerprint(name: str) -> dict:
    """The fingerprint of the data ``name`` as :func:`poolwise.vision.data.load_images` (or
    the CLIP loader, for ``TRAIN.csv[,TEST.csv]``) reads it.

    Raises:
        FileNotFoundError: as the loader does, for data that is not there.
    """
    from poolwise.vision.data import images as data

    if name == "embedded":
        return files_fingerprint(data.EMBEDDED.parent, [data.EMBEDDED])
    if name == "fashion-mnist" or (Path(name).is_dir() and data._has_files(Path(name))):
        root = None if name == "fashion-mnist" else name
        folder = next((p for p in data.fashion_mnist_places(root) if data._has_files(p)), None)
        if folder is None:  # the loader downloads it, or says where it looked
            data.load_fashion_mnist(root)
            folder = next(p for p in data.fashion_mnist_places(root) if data._has_files(p))
        names = [n for pair in data.FASHION_MNIST_FILES.values() for n in pair]
        return files_fingerprint(folder, [folder / n for n in names])
    path = Path(name)
    if path.is_dir():
        return files_fingerprint(path, _tree_files(path))
    csvs = [Path(p) for p in name.split(",")]
    if all(p.suffix.lower() in (".csv", ".tsv") and p.is_file() for p in csvs):
        from poolwise.vision.clip.data import pair_image_files

        files = {p.resolve(): None for p in csvs}
        for p in csvs:
            files.update({image.resolve(): None for image in pair_image_files(p)})
        return files_fingerprint(Path(os.path.commonpath([f.parent for f in files])),
                                 list(files))
    data.load_images(name)  # raises the loader's own error for data that is not there
    raise FileNotFoundError(f"{name}: no data to fingerprint")


__all__ = ["PART", "WHOLE", "data_fingerprint", "files_fingerprint"]
