"""Rebuilds src/poolwise/vision/assets/fashion_mnist_subset.npz from the Fashion-MNIST idx files.

The subset: the first 300 training and the first 100 test images of each class, in file order
(4,000 images, 28x28 uint8), with their labels and their indices in the original files.
Fashion-MNIST is (c) Zalando SE, MIT licence.

    python scripts/make_embedded_fashion_mnist.py [FOLDER_WITH_IDX_FILES]
"""

import sys
from pathlib import Path

import numpy as np

from poolwise.vision.data.images import (
    DEBIAN_FASHION_MNIST,
    EMBEDDED,
    FASHION_MNIST_FILES,
    read_idx,
)

PER_CLASS = {"train": 300, "test": 100}


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else DEBIAN_FASHION_MNIST
    arrays = {}
    for split, per_class in PER_CLASS.items():
        images = read_idx(folder / FASHION_MNIST_FILES[split][0])
        labels = read_idx(folder / FASHION_MNIST_FILES[split][1])
        firsts = [np.flatnonzero(labels == c)[:per_class] for c in range(10)]
        index = np.sort(np.concatenate(firsts))
        arrays[f"{split}_images"] = images[index]
        arrays[f"{split}_labels"] = labels[index].astype(np.uint8)
        arrays[f"{split}_index"] = index.astype(np.int32)
    tmp = EMBEDDED.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(EMBEDDED)
    print(f"wrote {EMBEDDED}")


if __name__ == "__main__":
    main()
