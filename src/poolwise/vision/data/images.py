"""Image data: Fashion-MNIST (idx files), the embedded Fashion-MNIST subset, ImageFolder trees.

Every loader returns :class:`ImageSplit`s: ``dataset`` (map-style, items are
``(image float32 (C, H, W) normalised, label)``), ``labels`` (numpy int64), ``classes`` (names),
``channels`` and ``image_size``. In-memory splits (:class:`ArrayImages`) also hand out whole
batches at once (``__getitems__``), so a DataLoader over them costs almost nothing.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from poolwise._names import check_distinct
from poolwise.vision.data.image_lists import find_list_file, partition_files, unreadable_images

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# mean and std of the 60,000 Fashion-MNIST training images, pixel values in [0, 1]
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
EMBEDDED = Path(__file__).parents[1] / "assets" / "fashion_mnist_subset.npz"

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (``.gz`` or plain) as a numpy array.

    Raises:
        ValueError: naming the file, for a bad magic number, dtype code or size.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an idx file (magic bytes {data[:4]!r})")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown idx dtype code 0x{code:02x}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes) but {len(data) - header} "
            "bytes follow"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


class ArrayImages(Dataset):
    """Images held in memory as uint8 ``(N, C, H, W)``; normalised on the fly."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float, std: float) -> None:
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.targets = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.mean, self.std = float(mean), float(std)

    def __len__(self) -> int:
        return len(self.targets)

    def _convert(self, images: Tensor) -> Tensor:
        return (images.float() / 255.0 - self.mean) / self.std

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self._convert(self.images[index]), int(self.targets[index])

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self._convert(self.images[index]), self.targets[index]


def collate_batch(batch: Any) -> Any:
    """DataLoader collate for datasets that return whole batches from ``__getitems__``."""
    if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], Tensor):
        return batch
    return torch.utils.data.default_collate(batch)


@dataclass
class ImageSplit:
    dataset: Dataset
    labels: np.ndarray
    classes: tuple[str, ...]
    channels: int
    image_size: int
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset_classes(self, keep: list[int]) -> ImageSplit:
        """The images whose label is in ``keep``, labels renumbered 0..len(keep)-1."""
        if not isinstance(self.dataset, ArrayImages):
            from torch.utils.data import Subset

            index = np.flatnonzero(np.isin(self.labels, keep))
            mapping = {c: i for i, c in enumerate(keep)}
            labels = np.array([mapping[c] for c in self.labels[index]], dtype=np.int64)
            return ImageSplit(
                _Relabel(Subset(self.dataset, index.tolist()), mapping), labels,
                tuple(self.classes[c] for c in keep), self.channels, self.image_size, self.source,
            )
        index = np.flatnonzero(np.isin(self.labels, keep))
        mapping = np.full(max(len(self.classes), max(keep) + 1), -1, dtype=np.int64)
        mapping[keep] = np.arange(len(keep))
        labels = mapping[self.labels[index]]
        ds = ArrayImages(self.dataset.images[index].numpy(), labels, self.dataset.mean,
                         self.dataset.std)
        return ImageSplit(ds, labels, tuple(self.classes[c] for c in keep), self.channels,
                          self.image_size, self.source)


class _Relabel(Dataset):
    def __init__(self, dataset: Dataset, mapping: dict[int, int]) -> None:
        self.dataset, self.mapping = dataset, mapping

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, self.mapping[int(label)]


def _array_split(images: np.ndarray, labels: np.ndarray, source: str) -> ImageSplit:
    ds = ArrayImages(images, labels, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    return ImageSplit(ds, ds.targets.numpy(), FASHION_MNIST_CLASSES, 1, images.shape[-1], source)


def fashion_mnist_places(root: str | Path | None = None) -> list[Path]:
    """Where :func:`load_fashion_mnist` looks, in order."""
    places = [Path(root)] if root is not None else []
    if os.environ.get("POOLWISE_FASHION_MNIST"):
        places.append(Path(os.environ["POOLWISE_FASHION_MNIST"]))
    places.append(DEBIAN_FASHION_MNIST)
    places.append(Path.home() / ".cache" / "poolwise" / "FashionMNIST" / "raw")
    return places


def _has_files(folder: Path) -> bool:
    return all((folder / name).is_file() for pair in FASHION_MNIST_FILES.values() for name in pair)


def load_fashion_mnist(
    root: str | Path | None = None, *, download: bool = True
) -> dict[str, ImageSplit]:
    """The full Fashion-MNIST (60,000 train, 10,000 test) from the four idx .gz files.

    Looks in ``root``, ``$POOLWISE_FASHION_MNIST``, the Debian package folder
    (/usr/share/datasets/fashion-mnist) and ~/.cache/poolwise; if none has the files and
    ``download``, torchvision downloads them into the cache.

    Raises:
        FileNotFoundError: naming every place it looked (and the download error, if any).
    """
    places = fashion_mnist_places(root)
    folder = next((p for p in places if _has_files(p)), None)
    download_error = None
    if folder is None and download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(places[-1].parent.parent), train=True, download=True)
            FashionMNIST(str(places[-1].parent.parent), train=False, download=True)
            folder = places[-1] if _has_files(places[-1]) else None
        except Exception as error:
            download_error = error
    if folder is None:
        needed = ", ".join(n for pair in FASHION_MNIST_FILES.values() for n in pair)
        looked = "\n  ".join(str(p) for p in places)
        extra = f"\ntorchvision download failed: {download_error}" if download_error else ""
        raise FileNotFoundError(
            f"Fashion-MNIST not found; looked for {needed} in:\n  {looked}{extra}\n"
            "Pass the folder, or install the Debian package dataset-fashion-mnist."
        )
    splits = {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        images = read_idx(folder / images_name)
        labels = read_idx(folder / labels_name)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{folder}: {images_name} has shape {images.shape}, {labels_name} {labels.shape}"
            )
        splits[split] = _array_split(images, labels, f"fashion-mnist:{folder}")
    return splits


def load_embedded() -> dict[str, ImageSplit]:
    """The Fashion-MNIST subset shipped inside the package (see docs/vision.md): the first 300
    training and the first 100 test images of each class, in file order."""
    with np.load(EMBEDDED) as data:
        return {
            split: _array_split(data[f"{split}_images"], data[f"{split}_labels"], "embedded")
            for split in ("train", "test")
        }


HOLDOUT_EVERY = 10  # retrieval layouts: every 10th training image of a class scores accuracy


def read_image(path: str) -> Any:
    """An image file as an RGB PIL image; a file PIL cannot decode (truncated, not an image,
    over PIL's pixel limit) is a ValueError naming it."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: cannot be read as an image ({type(error).__name__}: "
                         f"{error}); replace or remove the file") from None


def _folder(path: Path, transform, classes: list[str], source: str,
            image_size: int) -> ImageSplit:
    """An ImageFolder split with labels indexing ``classes`` (a shared class list)."""
    from torchvision import datasets

    # picklable (spawned workers); every file read through read_image
    ds = datasets.ImageFolder(str(path), transform=transform, loader=read_image)
    unreadable_images([Path(p) for p, _ in ds.samples], str(path))
    mapping = {i: classes.index(name) for i, name in enumerate(ds.classes)}
    labels = np.array([mapping[t] for t in ds.targets], dtype=np.int64)
    dataset = ds if all(i == j for i, j in mapping.items()) else _Relabel(ds, mapping)
    return ImageSplit(dataset, labels, tuple(classes), 3, image_size, source)


def _holdout(split: ImageSplit) -> tuple[ImageSplit, ImageSplit]:
    """(fitting part, held-out part): every ``HOLDOUT_EVERY``-th image of each class (in file
    order) is held out."""
    from torch.utils.data import Subset

    held = np.zeros(len(split), dtype=bool)
    for c in np.unique(split.labels):
        index = np.flatnonzero(split.labels == c)
        held[index[HOLDOUT_EVERY - 1 :: HOLDOUT_EVERY]] = True

    def part(mask: np.ndarray) -> ImageSplit:
        index = np.flatnonzero(mask)
        return ImageSplit(Subset(split.dataset, index.tolist()), split.labels[index],
                          split.classes, split.channels, split.image_size, split.source)

    return part(~held), part(held)


def load_image_folder(root: str | Path, *, image_size: int = 224) -> dict[str, ImageSplit]:
    """An ImageFolder tree, one folder per class, in one of three layouts, or images named by
    an In-Shop partition list (:mod:`poolwise.vision.data.image_lists`; ``train`` / ``test`` /
    ``query`` / ``gallery`` as for the query/gallery layout):

    - ``train/`` and ``test/`` (or ``val/``) with the same classes: ``train`` and ``test``;
    - ``train/`` and ``test/`` with disjoint classes (CUB-200, Cars-196, SOP as shipped):
      ``train`` and ``test`` from ``train/`` (every 10th image of a class held out, for the
      classification accuracy) and ``retrieval`` (``test/``, the unseen classes);
    - ``train/``, ``query/`` and ``gallery/`` (In-Shop): ``train`` / ``test`` as above, and
      ``query`` and ``gallery`` with labels of one shared class list.

    Images are resized to ``image_size`` and normalised with ImageNet statistics.

    Raises:
        FileNotFoundError: naming the subfolders it expected.
        ValueError: for train/ and test/ whose class sets overlap without being equal (naming
            a few shared classes).
    """
    from torchvision import transforms

    root = Path(root)
    transform = transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    source = f"imagefolder:{root}"
    if find_list_file(root) is not None:
        parts = {status: ImageSplit(ds, labels, classes, 3, image_size, f"imagelist:{root}")
                 for status, (ds, labels, classes) in partition_files(root, transform).items()}
        train, test = _holdout(parts["train"])
        return {"train": train, "test": test, "query": parts["query"],
                "gallery": parts["gallery"]}

    def classes_of(path: Path) -> list[str]:
        return sorted(p.name for p in path.iterdir() if p.is_dir())

    if not (root / "train").is_dir():
        raise FileNotFoundError(f"{root}: expected subfolders train/ and test/ (or val/), or "
                                "train/, query/ and gallery/, or an In-Shop "
                                "list_eval_partition.txt")
    train_classes = classes_of(root / "train")
    if (root / "query").is_dir() or (root / "gallery").is_dir():
        for name in ("query", "gallery"):
            if not (root / name).is_dir():
                raise FileNotFoundError(f"{root}: a query/gallery layout needs both query/ and "
                                        f"gallery/; {name}/ is missing")
        shared = sorted(set(classes_of(root / "query")) | set(classes_of(root / "gallery")))
        check_distinct(train_classes + shared, "class folder", f"{root} (train/, query/ and "
                       "gallery/)")
        train, test = _holdout(_folder(root / "train", transform, train_classes, source,
                                       image_size))
        return {"train": train, "test": test,
                "query": _folder(root / "query", transform, shared, source, image_size),
                "gallery": _folder(root / "gallery", transform, shared, source, image_size)}
    test_name = "test" if (root / "test").is_dir() else "val"
    if not (root / test_name).is_dir():
        raise FileNotFoundError(f"{root}: expected subfolders train/ and test/ (or val/), or "
                                "train/, query/ and gallery/")
    test_classes = classes_of(root / test_name)
    check_distinct(train_classes + test_classes, "class folder", f"{root} (train/ and "
                   f"{test_name}/)")
    if train_classes == test_classes:
        return {"train": _folder(root / "train", transform, train_classes, source, image_size),
                "test": _folder(root / test_name, transform, test_classes, source,
                                image_size)}
    common = sorted(set(train_classes) & set(test_classes))
    if common:
        raise ValueError(f"{root}: train/ and {test_name}/ share {len(common)} class folders "
                         f"({', '.join(common[:3])}{' ...' if len(common) > 3 else ''}) but not "
                         "all: use the same classes in both (classification) or disjoint "
                         "ones (class-disjoint retrieval)")
    train, test = _holdout(_folder(root / "train", transform, train_classes, source, image_size))
    return {"train": train, "test": test,
            "retrieval": _folder(root / test_name, transform, test_classes, source, image_size)}


def load_images(name: str, *, image_size: int | None = None) -> dict[str, ImageSplit]:
    """``"embedded"``, ``"fashion-mnist"`` (the full set, found as above), a folder holding the
    Fashion-MNIST idx files, or an ImageFolder tree.

    ``image_size``: the side an ImageFolder tree's images are resized to (default 224).
    In-memory data is used as it is: an ``image_size`` it does not have is refused."""
    path = Path(name)
    if name in ("embedded", "fashion-mnist") or (path.is_dir() and _has_files(path)):
        splits = (load_embedded() if name == "embedded" else
                  load_fashion_mnist() if name == "fashion-mnist" else
                  load_fashion_mnist(path, download=False))
        side = splits["train"].image_size
        if image_size is not None and image_size != side:
            raise ValueError(
                f"data {name!r} holds {side}x{side} images in memory, which are used as they "
                f"are, and {image_size}x{image_size} was asked for (img_size); give --img-size "
                f"{side} (recipe: img_size = {side} under [model_kwargs]) or leave it out")
        return splits
    if path.is_dir():
        return load_image_folder(path, image_size=image_size or 224)
    raise FileNotFoundError(
        f"{name}: not 'embedded', 'fashion-mnist', a Fashion-MNIST folder or an ImageFolder tree"
    )


def random_crop_flip(images: Tensor, padding: int, generator: torch.Generator,
                     hflip: float = 0.5) -> Tensor:
    """Per-image random crop after zero padding, and a horizontal flip with probability
    ``hflip`` (a batch op)."""
    b, _, h, w = images.shape
    if padding > 0:
        padded = torch.nn.functional.pad(images, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None]).view(b, 1, h, 1)
        cols = (dx[:, None] + torch.arange(w)[None]).view(b, 1, 1, w)
        batch = torch.arange(b).view(b, 1, 1, 1)
        chans = torch.arange(images.shape[1]).view(1, -1, 1, 1)
        images = padded[batch, chans, rows, cols]
    flip = torch.rand(b, generator=generator) < hflip
    return torch.where(flip.view(b, 1, 1, 1), images.flip(-1), images)
