"""Small image trees for the vision tests: random RGB PNGs in ImageFolder layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def image_tree(root: Path, *, per_class: int = 4, size: int = 28, classes: str = "ab",
               splits: tuple[str, ...] = ("train", "test")) -> Path:
    """``root/<split>/<class>/<i>.png`` for every split and class; returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")
    return root
