"""CIFAR-10's own facts: its classes, the vendored JPEG archive, and torchvision's `cifar-10-batches-py` files.

Those files are pickles, so they are read with an unpickler that admits only the numpy types CIFAR-10 uses: a
crafted file cannot run code (torchvision's own `CIFAR10` dataset unpickles without restriction). Every other
source, the vendored archive included, is read as any dataset is (`data.dataset`). `MEAN` and `STD` are the
vendored training split's statistics, the cfg of archfamily's timm entrypoints before a network says its own.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import torch

from archfamily.errors import UserError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4913, 0.4821, 0.4465)  # decoded statistics of the vendored training split
STD = (0.2452, 0.2428, 0.2606)
DEFAULT_ARCHIVE = Path(__file__).parent.parent / "datasets" / "cifar10-jpeg.tar.gz"


def find_batches(source: Path) -> Optional[Path]:
    """The cifar-10-batches-py folder `source` is (or holds), or None when it is another kind of source."""
    if source.is_dir():
        for candidate in (source, source / "cifar-10-batches-py"):
            if (candidate / "data_batch_1").is_file():
                return candidate
    return None


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


def read_batches(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y) of a cifar-10-batches-py folder, whole."""
    files = [root / f"data_batch_{i}" for i in range(1, 6)]
    missing = [f.name for f in files + [root / "test_batch"] if not f.is_file()]
    if missing:
        raise UserError(f"incomplete cifar-10-batches-py folder {root}: missing {', '.join(missing)}")
    parts = [_read_batch(f) for f in files]
    train_x, train_y = torch.cat([p[0] for p in parts]), sum((p[1] for p in parts), [])
    test_x, test_y = _read_batch(root / "test_batch")
    return train_x, torch.tensor(train_y), test_x, torch.tensor(test_y)
