"""Images named by a list file rather than by folders: In-Shop's query/gallery partition, and
any set of image files (the revisited Oxford/Paris database and queries).

In-Shop (DeepFashion In-Shop Clothes Retrieval) ships ``list_eval_partition.txt``: a first line
with the number of images, a header line ``image_name item_id evaluation_status``, then one
line per image, ``img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train``, the path
relative to the data set's root and the status ``train``, ``query`` or ``gallery``. Items are
the classes; the training items and the query/gallery items are disjoint. Any data set written
in this form loads the same way (``poolwise vision retrieval --data ROOT`` with the list file
at ``ROOT/list_eval_partition.txt`` or ``ROOT/Eval/list_eval_partition.txt``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

LIST_NAMES = ("list_eval_partition.txt", "Eval/list_eval_partition.txt")
STATUSES = ("train", "query", "gallery")


class ImageFiles(Dataset):
    """Image files as ``(transform(RGB image), label)`` items; ``boxes`` (x1, y1, x2, y2 per
    image, or None) crop each image before the transform. Picklable (spawned workers)."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int],
                 transform: Callable | None = None,
                 boxes: Sequence[Sequence[float] | None] | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = [int(v) for v in labels]
        self.transform = transform
        self.boxes = None if boxes is None else list(boxes)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            image = image.convert("RGB")
        if self.boxes is not None and self.boxes[index] is not None:
            image = image.crop(tuple(round(v) for v in self.boxes[index]))
        return (image if self.transform is None else self.transform(image)), self.labels[index]


def find_list_file(root: str | Path) -> Path | None:
    """The In-Shop partition list under ``root``, or None."""
    root = Path(root)
    return next((root / name for name in LIST_NAMES if (root / name).is_file()), None)


def missing_files(paths: Sequence[Path], source: str) -> None:
    """Raises FileNotFoundError naming ``source``, the count and the first missing images."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{source} names {len(missing)} image(s) that do not exist "
                                f"(first: {', '.join(missing[:3])}); fix the list or the "
                                "image folder")


@cache
def _header_problem(path: str, size: int, mtime_ns: int, limit: int | None) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as image:  # reads the header only
            image.size  # noqa: B018
    except Image.DecompressionBombError as error:
        return (f"{error} (raise PIL.Image.MAX_IMAGE_PIXELS in your script if you trust the "
                "file)")
    except (OSError, SyntaxError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def unreadable_images(paths: Sequence[Path], source: str) -> None:
    """Opens every image's header before any work (PIL reads the format, size and mode only,
    so this costs a short read per file; results are kept per process for unchanged files).

    Raises:
        ValueError: naming ``source``, the count and the first images PIL cannot open (not
            an image, a truncated header, over PIL's pixel limit), with the reason.
    """
    from PIL import Image

    bad = []
    for path in paths:
        stat = Path(path).stat()
        problem = _header_problem(str(path), stat.st_size, stat.st_mtime_ns,
                                  Image.MAX_IMAGE_PIXELS)
        if problem is not None:
            bad.append(f"{path} ({problem})")
    if bad:
        raise ValueError(f"{source}: {len(bad)} of {len(paths)} image(s) cannot be opened "
                         f"(first: {'; '.join(bad[:3])}); replace or remove them")


def read_partition(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """``{status: [(image path, item id), ...]}`` of an In-Shop partition list.

    Raises:
        ValueError: naming the file and line, for a line that is not ``path item status``, an
            unknown status, a count that differs from the first line, or an item that is both
            a training item and a query/gallery item.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise ValueError(f"{path}: line 1 must be the number of images (In-Shop's "
                         "list_eval_partition.txt form)")
    parts: dict[str, list[tuple[str, str]]] = {s: [] for s in STATUSES}
    for n, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(f"{path}:{n}: expected 'image_name item_id evaluation_status', "
                             f"got {line!r}")
        name, item, status = fields
        if status not in parts:
            raise ValueError(f"{path}:{n}: evaluation_status {status!r} is not one of "
                             f"{', '.join(STATUSES)}")
        parts[status].append((name, item))
    total = sum(map(len, parts.values()))
    if total != int(lines[0]):
        raise ValueError(f"{path}: line 1 says {int(lines[0])} images, the list holds {total}")
    for status in STATUSES:
        if not parts[status]:
            raise ValueError(f"{path}: no {status} image")
    shared = sorted({i for _, i in parts["train"]}
                    & {i for s in ("query", "gallery") for _, i in parts[s]})
    if shared:
        raise ValueError(f"{path}: {len(shared)} item(s) are both training and query/gallery "
                         f"items ({', '.join(shared[:3])}); retrieval needs disjoint items")
    return parts


def partition_files(root: str | Path, transform: Callable | None = None
                    ) -> dict[str, tuple[ImageFiles, np.ndarray, tuple[str, ...]]]:
    """``{"train" | "query" | "gallery": (dataset, labels, classes)}`` of an In-Shop-form root:
    training labels index the training items, query and gallery labels one shared list.

    Raises:
        FileNotFoundError: when the root has no list file, or the list names missing images.
    """
    root = Path(root)
    path = find_list_file(root)
    if path is None:
        raise FileNotFoundError(f"{root}: no {' or '.join(LIST_NAMES)}")
    parts = read_partition(path)
    files = [root / name for rows in parts.values() for name, _ in rows]
    missing_files(files, str(path))
    unreadable_images(files, str(path))
    out = {}
    shared = tuple(sorted({i for s in ("query", "gallery") for _, i in parts[s]}))
    for status, rows in parts.items():
        classes = tuple(sorted({i for _, i in rows})) if status == "train" else shared
        index = {c: k for k, c in enumerate(classes)}
        labels = np.array([index[i] for _, i in rows], dtype=np.int64)
        out[status] = (ImageFiles([root / name for name, _ in rows], labels, transform),
                       labels, classes)
    return out
