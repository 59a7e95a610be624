"""CIFAR-10 as uint8 tensors, from any of three sources, decoded once and cached.

Sources, in the order they are recognised:
- `None`: the archive vendored in this package (`datasets/cifar10-jpeg.tar.gz`, a
  JPEG copy of CIFAR-10 in ImageFolder layout), so a fresh clone needs no download;
- a `.tar`/`.tar.gz` archive with that same `train/` and `test/` layout;
- torchvision's `cifar-10-batches-py/` folder (or its parent). Those files are
  pickles, so they are read with an unpickler that admits only the numpy types
  CIFAR-10 uses: a crafted file cannot run code;
- an ImageFolder tree with `train/<class>/*` and `test/<class>/*` (listed by
  torchvision's `ImageFolder`).

torchvision's own `CIFAR10` dataset is not used for the batches folder because it
unpickles without restriction. Images are decoded with Pillow.

Decoded images are cached as safetensors under `ARCHFAMILY_CACHE` (default
`~/.cache/archfamily`), keyed by the source's path, size and mtime and the subset.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load_file
from torchvision.datasets import ImageFolder

from archfamily.errors import SettingError, UserError
from archfamily.files import atomic_save_safetensors

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4913, 0.4821, 0.4465)  # decoded statistics of the vendored training split
STD = (0.2452, 0.2428, 0.2606)
DEFAULT_ARCHIVE = Path(__file__).parent.parent / "datasets" / "cifar10-jpeg.tar.gz"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


@dataclass
class Cifar10:
    """Both splits as uint8 NCHW images and int64 labels; `source` says where they came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str


def cache_dir() -> Path:
    return Path(os.environ.get("ARCHFAMILY_CACHE", Path.home() / ".cache" / "archfamily"))


def load_cifar10(path: Optional[str] = None, subset: Optional[int] = None, test_subset: Optional[int] = None) -> Cifar10:
    """Load (from cache when possible) CIFAR-10; `subset`/`test_subset` keep the first n/10 images per class."""
    for n, what in ((subset, "subset"), (test_subset, "test_subset")):
        if n is not None and n < 10:
            raise SettingError("{" + what + "} must be at least 10 (one image per class), got {n}", n=n)
    source = Path(path).expanduser() if path else DEFAULT_ARCHIVE
    if not source.exists():
        raise UserError(f"dataset not found: {source}")
    kind, root = detect_source(source)
    label = f"built-in:{DEFAULT_ARCHIVE.name}" if path is None else str(source)
    key = hashlib.sha256(f"{_signature(kind, root)}|{kind}|{subset}|{test_subset}".encode())
    cached = cache_dir() / f"cifar10-{key.hexdigest()[:16]}.safetensors"
    if cached.exists():
        t = load_file(str(cached))
        return Cifar10(t["train_x"], t["train_y"], t["test_x"], t["test_y"], label)
    reader = {"archive": _read_archive, "batches": _read_batches, "folder": _read_folder}[kind]
    train_x, train_y, test_x, test_y = reader(root, subset, test_subset)
    data = Cifar10(train_x, train_y, test_x, test_y, label)
    atomic_save_safetensors({"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}, cached)
    return data


def _signature(kind: str, root: Path) -> str:
    """Path, size and mtime of every file the source reads, so any change to them misses the cache."""
    if kind == "archive":
        files = [root]
    elif kind == "batches":
        files = sorted(root.glob("*_batch*"))
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file())
    return "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def detect_source(source: Path) -> tuple[str, Path]:
    """(kind, root) of a CIFAR-10 source: an archive, a cifar-10-batches-py folder or an ImageFolder tree."""
    if source.is_file():
        if source.name.endswith((".tar", ".tar.gz", ".tgz")):
            return "archive", source
        raise UserError(f"not a CIFAR-10 source: {source} (expected a folder or a .tar.gz archive)")
    for candidate in (source, source / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file():
            return "batches", candidate
    if (source / "train").is_dir() and (source / "test").is_dir():
        return "folder", source
    raise UserError(f"not a CIFAR-10 folder: {source} (expected cifar-10-batches-py/ or train/ and test/ subfolders)")


def _take_per_class(labels: list[int], n: Optional[int]) -> list[int]:
    """Indices of the first n // 10 items of each class, in their original order."""
    if n is None:
        return list(range(len(labels)))
    per_class, seen, keep = n // 10, [0] * len(CLASSES), []
    for i, y in enumerate(labels):
        if seen[y] < per_class:
            seen[y] += 1
            keep.append(i)
    return keep


def _labelled_files(names: list[str], split: str) -> list[tuple[str, int]]:
    """(path, label) of every image under `split/<class>/`, sorted as ImageFolder sorts them."""
    out = []
    for name in names:
        parts = Path(name).parts
        if len(parts) >= 3 and parts[-3] == split and name.lower().endswith(_IMAGE_SUFFIXES):
            if parts[-2] not in CLASSES:
                raise UserError(f"unknown CIFAR-10 class folder {parts[-2]!r} in {split}/ (expected {', '.join(CLASSES)})")
            out.append((name, CLASSES.index(parts[-2])))
    if {y for _, y in out} != set(range(len(CLASSES))):
        raise UserError(f"the {split}/ split must hold images of all ten CIFAR-10 classes")
    return sorted(out, key=lambda item: (item[1], item[0]))


def _decode(files: list[Union[str, BinaryIO]], where: str) -> torch.Tensor:
    """Decode images with Pillow into one uint8 NCHW tensor; all must be 32x32."""
    images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                if img.size != (32, 32):
                    raise UserError(f"CIFAR-10 images must be 32x32; found one of {img.size[0]}x{img.size[1]} in {where}")
                images[i] = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"cannot decode an image in {where}: {exc}") from None
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _read_archive(root: Path, subset: Optional[int], test_subset: Optional[int]):
    try:
        with tarfile.open(root, "r:*") as tar:
            members = {m.name: m for m in tar if m.isfile()}
            out = []
            for split, n in (("train", subset), ("test", test_subset)):
                files = _labelled_files(list(members), split)
                files = [files[i] for i in _take_per_class([y for _, y in files], n)]
                raw = [io.BytesIO(tar.extractfile(members[f]).read()) for f, _ in files]
                out += [_decode(raw, str(root)), torch.tensor([y for _, y in files])]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"cannot read CIFAR-10 archive {root}: {exc}") from None
    return tuple(out)


def _read_folder(root: Path, subset: Optional[int], test_subset: Optional[int]):
    out = []
    for split, n in (("train", subset), ("test", test_subset)):
        try:
            folder = ImageFolder(str(root / split))
        except (FileNotFoundError, OSError) as exc:
            raise UserError(f"not a CIFAR-10 ImageFolder tree: {root / split} ({exc})") from None
        if tuple(folder.classes) != CLASSES:
            raise UserError(f"{root / split} must hold exactly the ten CIFAR-10 class folders ({', '.join(CLASSES)})")
        keep = _take_per_class(folder.targets, n)
        out += [_decode([folder.samples[i][0] for i in keep], str(root / split)),
                torch.tensor([folder.targets[i] for i in keep])]
    return tuple(out)


class _CifarUnpickler(pickle.Unpickler):
    """Admits only what torchvision's CIFAR-10 batch files contain: numpy arrays and builtins."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[torch.Tensor, list[int]]:
    try:
        with open(path, "rb") as fh:
            batch = _CifarUnpickler(fh, encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
        images = torch.as_tensor(data).reshape(-1, 3, 32, 32).clone()
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError, RuntimeError) as exc:
        raise UserError(f"not a CIFAR-10 batch file: {path} ({exc})") from None
    return images, [int(y) for y in labels]


def _read_batches(root: Path, subset: Optional[int], test_subset: Optional[int]):
    files = [root / f"data_batch_{i}" for i in range(1, 6)]
    missing = [f.name for f in files + [root / "test_batch"] if not f.is_file()]
    if missing:
        raise UserError(f"incomplete cifar-10-batches-py folder {root}: missing {', '.join(missing)}")
    parts = [_read_batch(f) for f in files]
    train_x, train_y = torch.cat([p[0] for p in parts]), sum((p[1] for p in parts), [])
    test_x, test_y = _read_batch(root / "test_batch")
    keep, keep_test = _take_per_class(train_y, subset), _take_per_class(test_y, test_subset)
    return (
        train_x[keep], torch.tensor(train_y)[keep], test_x[keep_test], torch.tensor(test_y)[keep_test],
    )


__all__ = ["Cifar10", "load_cifar10", "CLASSES", "MEAN", "STD", "DEFAULT_ARCHIVE"]
