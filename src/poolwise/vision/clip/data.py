"""Image-caption pairs: a built-in set from Fashion-MNIST, and CSV/TSV files as open_clip reads.

Built-in captions: every class has several names (synonyms) and every caption is a template
filled with one of them, e.g. "a photo of a pair of trousers." A training image gets a caption
drawn at random each epoch. For evaluation, the captions of a split are the distinct
(template, name) sentences of its classes, and the explicit image-to-captions map gives each
image all the captions of its class (a multi-positive evaluation: any of them is a hit).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poolwise.vision.data import ArrayImages, ImageSplit, load_images

FASHION_MNIST_NAMES = (
    ("t-shirt", "top", "tee"),
    ("pair of trousers", "pair of pants", "pair of jeans"),
    ("pullover", "sweater", "jumper"),
    ("dress", "gown", "frock"),
    ("coat", "jacket", "overcoat"),
    ("sandal", "summer sandal", "open shoe"),
    ("shirt", "button-up shirt", "blouse"),
    ("sneaker", "trainer", "running shoe"),
    ("bag", "handbag", "purse"),
    ("ankle boot", "boot", "short boot"),
)
TRAIN_TEMPLATES = (
    "a photo of a {}.",
    "a grayscale photo of a {}.",
    "a small picture of a {}.",
    "a {} on a plain background.",
    "an image showing a {}.",
)
# zero-shot prompts: templates never used in training, the first name of each class
ZERO_SHOT_TEMPLATES = ("a picture of a {}.", "a low resolution photo of a {}.", "this is a {}.")


@dataclass
class PairedSplit:
    """Images, the distinct captions, and which captions describe which image."""

    images: ImageSplit
    captions: list[str]
    image_to_captions: list[list[int]]  # for image i, the indices of its captions
    class_captions: list[list[int]] | None = None  # for class c, its captions (built-in set)


def fashion_mnist_pairs(data: str = "embedded") -> dict[str, PairedSplit]:
    """The built-in paired set from ``embedded`` or the full ``fashion-mnist``."""
    splits = load_images(data)
    captions, class_captions = [], []
    for names in FASHION_MNIST_NAMES:
        start = len(captions)
        captions += [t.format(n) for t in TRAIN_TEMPLATES for n in names]
        class_captions.append(list(range(start, len(captions))))
    out = {}
    for name, split in splits.items():
        mapping = [class_captions[int(c)] for c in split.labels]
        out[name] = PairedSplit(split, captions, mapping, class_captions)
    return out


def _image_path(csv_path: Path, value: str, number: int) -> Path:
    file = Path(value)
    file = file if file.is_absolute() else csv_path.parent / file
    if not file.is_file():
        raise ValueError(f"{csv_path}: row {number}: image {file} does not exist")
    return file


def pair_image_files(path: str | Path, *, image_key: str = "filepath",
                     separator: str = "\t") -> list[Path]:
    """The distinct image files a pairs CSV names (as :func:`read_pairs_csv` resolves them).

    Raises:
        ValueError: naming the file, the missing column, or the row whose image is missing.
    """
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter=separator)
        if reader.fieldnames is None or image_key not in reader.fieldnames:
            raise ValueError(f"{path}: no column {image_key!r} (columns: {reader.fieldnames}); "
                             f"separator {separator!r}")
        files = {str(_image_path(path, row[image_key], n)): None
                 for n, row in enumerate(reader, start=2)}
    return [Path(f) for f in files]


def read_pairs_csv(path: str | Path, *, image_key: str = "filepath", caption_key: str = "title",
                   separator: str = "\t", image_size: int = 224) -> PairedSplit:
    """Pairs from a CSV/TSV with an image path column and a caption column (open_clip's
    ``--csv-img-key``/``--csv-caption-key``/``--csv-separator``; defaults are open_clip's).
    Rows with the same image give it several captions. Relative paths are relative to the file.

    Raises:
        ValueError: naming the file, the missing column, or the row whose image is missing.
    """
    from PIL import Image

    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter=separator)
        for key in (image_key, caption_key):
            if reader.fieldnames is None or key not in reader.fieldnames:
                raise ValueError(f"{path}: no column {key!r} (columns: {reader.fieldnames}); "
                                 f"separator {separator!r}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no rows")
    order: dict[str, int] = {}
    captions: list[str] = []
    image_to_captions: list[list[int]] = []
    for number, row in enumerate(rows, start=2):
        file = _image_path(path, row[image_key], number)
        if str(file) not in order:
            order[str(file)] = len(order)
            image_to_captions.append([])
        image_to_captions[order[str(file)]].append(len(captions))
        captions.append(row[caption_key])
    arrays = []
    for file in order:
        with Image.open(file) as image:
            arrays.append(np.asarray(image.convert("RGB").resize((image_size, image_size))))
    images = np.stack(arrays).transpose(0, 3, 1, 2)
    dataset = ArrayImages(images.astype(np.uint8), np.arange(len(images)), 0.5, 0.5)
    split = ImageSplit(dataset, np.arange(len(images)), tuple(order), 3, image_size, str(path))
    return PairedSplit(split, captions, image_to_captions)
