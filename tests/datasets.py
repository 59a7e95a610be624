"""Small image datasets the tests make themselves: ImageFolder trees of non-square PNGs and JPEGs, in colour or grey,
any number of classes, and tar archives of them. Each class is told apart by a drawn shape, so a network learns it."""
from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

SHAPES = ("disc", "square", "stripes")


def _image(shape: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    pixels = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    kind = shape % 3
    if kind == 0:
        mask = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2
    elif kind == 1:
        mask = (abs(yy - h / 2) < h / 4) & (abs(xx - w / 2) < w / 4)
    else:
        mask = (xx // 4) % 2 == 0
    pixels[mask] += np.uint8(100 + 10 * (shape // 3))  # classes past three: the shapes again, brighter
    return pixels


def write_folder(root: Path, classes: int = 3, per_class: Sequence[int] = (6, 3, 3),
                 splits: Sequence[str] = ("train", "val", "test"), sizes: Sequence[tuple[int, int]] = ((40, 56), (64, 64)),
                 grey: bool = False, seed: int = 0) -> Path:
    """`root/<split>/<class>/<i>.png|jpg`: `per_class[k]` images of each class in split k, their sizes and formats
    taking turns; every third image (or every image, `grey`) in grey."""
    rng = np.random.default_rng(seed)
    names = [f"c{k:02d}-{SHAPES[k % 3]}" for k in range(classes)]
    for split, n in zip(splits, per_class):
        for k, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = sizes[i % len(sizes)]
                img = Image.fromarray(_image(k, h, w, rng))
                if grey or i % 3 == 2:
                    img = img.convert("L")
                img.save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def tar_of(folder: Path, archive: Path, top: str = "data") -> Path:
    """A .tar.gz of `folder`, its tree under `top/` as archives of datasets usually hold it."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=top)
    return archive
