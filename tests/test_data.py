"""CIFAR-10 from its three sources, the cache, and the batch stream (any other dataset: test_your_data.py)."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from archfamily.data.batches import BatchStream, random_crop_flip
from archfamily.data.cifar import CLASSES, DEFAULT_ARCHIVE, MEAN, STD
from archfamily.files import cache_dir
from archfamily.data.dataset import load_data
from archfamily.errors import UserError


def _fake_images(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8), [i % 10 for i in range(n)]


def _write_batches(folder: Path, per_batch: int = 20) -> Path:
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        data, labels = _fake_images(per_batch, i)
        with open(root / name, "wb") as fh:
            pickle.dump({b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": []}, fh)
    return root


def test_reads_torchvision_batches_folder_and_its_parent(tmp_path: Path) -> None:
    root = _write_batches(tmp_path)
    for source in (root, tmp_path):
        data = load_data(str(source))
        assert data.train_x.shape == (100, 3, 32, 32) and data.train_x.dtype == torch.uint8
        assert data.test_x.shape == (20, 3, 32, 32)
    raw, _ = _fake_images(20, 0)
    assert torch.equal(data.train_x[0], torch.from_numpy(raw[0]).reshape(3, 32, 32))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_batches_loader_refuses_code_in_pickles(tmp_path: Path) -> None:
    root = _write_batches(tmp_path)
    with open(root / "data_batch_3", "wb") as fh:
        pickle.dump({b"labels": [0], b"data": _Evil()}, fh)
    with pytest.raises(UserError, match="refusing to load posix.system|refusing to load os.system"):
        load_data(str(root))


def _write_image_folder(folder: Path, per_class: int = 3, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in CLASSES:
            (folder / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / split / cls / f"{i}.png")
    return folder


def test_reads_image_folder_tree(tmp_path: Path) -> None:
    data = load_data(str(_write_image_folder(tmp_path)))
    assert data.train_x.shape == (30, 3, 32, 32) and data.train_y.tolist() == sorted(data.train_y.tolist())
    assert data.train_y.bincount().tolist() == [3] * 10
    first = np.array(Image.open(tmp_path / "train" / "airplane" / "0.png"))
    assert torch.equal(data.train_x[0], torch.from_numpy(first).permute(2, 0, 1))


def test_cache_notices_a_changed_image(tmp_path: Path) -> None:
    root = _write_image_folder(tmp_path)
    before = load_data(str(root))
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / "train" / "airplane" / "0.png")
    after = load_data(str(root))
    assert after.train_x[0].sum() == 0 and not torch.equal(before.train_x[0], after.train_x[0])


def test_image_folder_of_another_size_trains_at_its_own_size_or_the_one_asked(tmp_path: Path) -> None:
    root = _write_image_folder(tmp_path, per_class=1, size=28)
    assert load_data(str(root)).train_x.shape == (10, 3, 28, 28)
    assert load_data(str(root), input_size=32).test_x.shape == (10, 3, 32, 32)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "dataset not found"),
    (lambda p: p, "not a dataset folder"),
    (lambda p: (p / "train" / "cat").mkdir(parents=True) or (p / "test").mkdir() or p, "no images under train"),
    (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "not a dataset"),
    (lambda p: (p / "bad.tar.gz").write_bytes(b"not a tarball") and p / "bad.tar.gz", "cannot read dataset archive"),
])
def test_bad_dataset_paths(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_data(str(make(tmp_path)))


def test_vendored_archive_subset_is_class_balanced_and_cached() -> None:
    assert DEFAULT_ARCHIVE.is_file()
    before = set(cache_dir().glob("*.safetensors")) if cache_dir().exists() else set()
    data = load_data(subset=130, test_subset=70)  # sizes no other test loads, so this call must cache them
    assert data.train_x.shape == (130, 3, 32, 32) and data.test_x.shape == (70, 3, 32, 32)
    assert data.train_y.bincount().tolist() == [13] * 10
    assert (data.mean, data.std) == (MEAN, STD)  # the whole training split's statistics, whatever the subset
    assert data.classes == CLASSES and data.split == "test" and data.final_x is None
    created = set(cache_dir().glob("*.safetensors")) - before
    assert len(created) == 1
    again = load_data(subset=130, test_subset=70)
    assert torch.equal(again.train_x, data.train_x)


def test_subset_must_hold_every_class() -> None:
    with pytest.raises(UserError, match="at least 10"):
        load_data(subset=5)


def test_crop_with_centre_offset_and_no_flip_is_identity() -> None:
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    found_identity = found_flip = False
    for img, src in zip(out, images):
        found_identity |= torch.equal(img, src)
        found_flip |= torch.equal(img, src.flip(-1))
        assert torch.isin(img[:, 8:24, 8:24].flatten(), src.flatten()).all()  # crops move pixels, never invent them
    assert found_identity and found_flip


def test_batches_are_a_function_of_seed_and_step_and_shard_over_ranks() -> None:
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(100) % 10
    cpu = torch.device("cpu")
    full = BatchStream(images, labels, 20, seed=5, device=cpu, mean=MEAN, std=STD)
    again = BatchStream(images, labels, 20, seed=5, device=cpu, mean=MEAN, std=STD)
    for step in (7, 0, 7, 12):
        torch.testing.assert_close(full.batch(step), again.batch(step))
    x, y = full.batch(3)
    ranks = [BatchStream(images, labels, 20, seed=5, device=cpu, mean=MEAN, std=STD, rank=r, world=2).batch(3)
             for r in (0, 1)]
    torch.testing.assert_close(torch.cat([ranks[0][0], ranks[1][0]]), torch.cat([x[0::2], x[1::2]]))
    assert not torch.equal(full.batch(0)[0], full.batch(5)[0])  # a new epoch reshuffles
