"""The streaming data path: images read from their files as training goes, for datasets that do not fit in memory.

A `FileSplit` is one split's image files and labels. `StreamBatches` has the interface of the in-memory
`BatchStream` (`batch(step)`, `steps_per_epoch`), so the trainer and the pruning fine-tune take either: a
`torch.utils.data.DataLoader` with worker processes decodes and augments with timm's own training transform
(`timm.data.create_transform`: random-resized crop, flip, colour jitter) and the batch is normalised on the
device. It is deterministic per (seed, epoch, position) whatever the number of workers: the epoch's order comes
from a generator seeded by (seed, epoch), and each image's augmentation from Python's and torch's generators
seeded by its position in the run, so a run resumed mid-epoch sees exactly the batches an uninterrupted one
would. Held-out splits stream through timm's evaluation transform (`eval_batches`).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, replace
from typing import Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from archfamily.data.batches import cutout_mask, norm_constants, normalize, to_device
from archfamily.data.images import read_rgb
from archfamily.errors import UserError
from archfamily.seeding import generator


@dataclass(frozen=True)
class FileSplit:
    """One split of a dataset that streams: its image files (paths), their labels, the size they are read at and
    timm's crop_pct for reading them as held-out images."""

    files: tuple[str, ...]
    labels: torch.Tensor
    input_size: int
    crop_pct: float = 1.0

    def __len__(self) -> int:
        return len(self.files)

    def shard(self, rank: int, world: int) -> "FileSplit":
        """Every `world`-th image from `rank`: one process's share of an evaluation."""
        return replace(self, files=self.files[rank::world], labels=self.labels[rank::world])


def default_workers() -> int:
    """Decoding processes: every core this process may use (a GPU's input pipeline needs them all)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def train_transform(input_size: int):
    """timm's training transform at `input_size` (random-resized crop, flip, colour jitter), to uint8 CHW: the
    normalisation happens on the device."""
    from timm.data import create_transform

    return create_transform(input_size, is_training=True, interpolation="bilinear", use_prefetcher=True)


class Images(Dataset):
    """Images of a split through a transform; an item key is (index, seed), the seed that of its augmentation."""

    def __init__(self, split: FileSplit, transform) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        random.seed(seed)
        torch.manual_seed(seed)
        name = self.split.files[index]
        return self.transform(read_rgb(name, name)), int(self.split.labels[index])


def _loader(split: FileSplit, transform, batches: Sequence[Sequence[tuple[int, int]]], workers: int,
            pin: bool) -> DataLoader:
    return DataLoader(Images(split, transform), batch_sampler=batches, num_workers=workers, pin_memory=pin)


class StreamBatches:
    """Endless shuffled, augmented batches of a `FileSplit`, decoded by `workers` processes; as `BatchStream`, a
    DistributedDataParallel rank takes its share of the same global batch, and `cutout` (scaled with the side as
    the in-memory path scales it) is drawn for the whole batch."""

    def __init__(self, split: FileSplit, batch_size: int, seed: int, device: torch.device, mean: Sequence[float],
                 std: Sequence[float], rank: int = 0, world: int = 1, channels_last: bool = False, cutout: int = 0,
                 workers: Optional[int] = None) -> None:
        batch_size = min(batch_size, len(split))
        if batch_size % world:
            raise UserError(f"batch size {batch_size} does not split over {world} processes")
        self.split, self.batch_size, self.seed, self.device = split, batch_size, seed, device
        self.rank, self.world, self.channels_last = rank, world, channels_last
        self.cutout = round(cutout * split.input_size / 32)
        self.workers = default_workers() if workers is None else workers
        self.transform = train_transform(split.input_size)
        self.mean, self.std = norm_constants(mean, std, device)
        self.steps_per_epoch = len(split) // batch_size
        self._iterator: Optional[Iterator] = None
        self._next: tuple[int, int] = (-1, -1)

    def _epoch(self, epoch: int, start: int) -> Iterator:
        """The epoch's batches from batch `start` on, each image keyed by its index and its augmentation's seed."""
        order = torch.randperm(len(self.split), generator=generator(self.seed, 1, epoch)).tolist()
        step0 = epoch * self.steps_per_epoch
        batches = [[(order[b * self.batch_size + j], ((self.seed * 1_000_003 + step0 + b) * 65_537 + j) % 2**31)
                    for j in range(self.batch_size)] for b in range(start, self.steps_per_epoch)]
        return iter(_loader(self.split, self.transform, batches, self.workers, self.device.type == "cuda"))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._iterator is None or self._next != (epoch, i):
            self._iterator = self._epoch(epoch, i)
        images, labels = next(self._iterator)
        self._next = (epoch, i + 1)
        mine = slice(self.rank, None, self.world)
        x = normalize(to_device(images[mine], self.device), self.mean, self.std, self.channels_last)
        if self.cutout:
            n, _, h, w = images.shape
            x.masked_fill_(cutout_mask(n, h, w, self.cutout, generator(self.seed, 4, step), x.device)[mine], 0.0)
        return x, to_device(labels[mine], self.device)


def eval_batches(split: FileSplit, batch_size: int, workers: Optional[int] = None,
                 pin: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) of a held-out split in order, through timm's evaluation transform."""
    from timm.data import create_transform

    transform = create_transform(split.input_size, is_training=False, crop_pct=split.crop_pct,
                                 interpolation="bilinear", use_prefetcher=True)
    batches = [[(i, 0) for i in range(start, min(start + batch_size, len(split)))]
               for start in range(0, len(split), batch_size)]
    workers = default_workers() if workers is None else workers
    yield from _loader(split, transform, batches, workers, pin)

