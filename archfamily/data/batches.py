"""Deterministic training batches with batched augmentation on the data's device.

Batch `step` is a pure function of (seed, step): the epoch's permutation comes from
a generator seeded by (seed, epoch) and the crops and flips from one seeded by
(seed, step). A resumed run therefore sees exactly the batches an uninterrupted run
would, and a DistributedDataParallel rank takes its share of the same global batch.
Augmentation is one gather (or one `grid_sample`) and one mask over the whole batch, with no per-image Python
work in the hot loop: up to `RESIZED_CROP_ABOVE` pixels, CIFAR's random crop of the image padded by the recipe's
`translate` (4 at 32 pixels, scaled with the side); above it, a random-resized crop (timm's `RandomResizedCrop`
drawn for a whole batch, from the image decoded at the training size); then a horizontal flip, random or
alternating by epoch, and optionally cutout (its side scaled as `translate` is). On a GPU nothing here makes the host
wait: the random offsets are drawn on the CPU (so batches match across devices) and
copied from pinned memory without blocking, and the normalisation constants are made once.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from archfamily.errors import UserError
from archfamily.seeding import generator

PAD = 4
RESIZED_CROP_ABOVE = 64  # input sizes above this train on random-resized crops, at or below it on padded crops
RESIZED_CROP_SCALE = (0.25, 1.0)  # the share of the image a crop covers (timm's `scale`; 0.08 is ImageNet's)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)  # its aspect ratio (timm's `ratio`)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; to a GPU through pinned memory, so the copy does not block the host."""
    if device.type != "cuda" or t.device.type == "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def norm_constants(mean: Sequence[float], std: Sequence[float], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`mean` and `std` as (1, C, 1, 1) tensors on `device`: make them once, pass them to `normalize`."""
    return (to_device(torch.tensor(mean).view(1, -1, 1, 1), device),
            to_device(torch.tensor(std).view(1, -1, 1, 1), device))


def normalize(images: torch.Tensor, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float],
              channels_last: bool = False) -> torch.Tensor:
    """uint8 NCHW -> float, standardised with `mean` and `std`.

    Pass tensors from `norm_constants` in a loop; sequences are turned into tensors on every call.
    """
    if not isinstance(mean, torch.Tensor) or not isinstance(std, torch.Tensor):
        mean, std = norm_constants(mean, std, images.device)
    x = (images.float() / 255 - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def random_crop_flip(images: torch.Tensor, gen: torch.Generator, pad: int = PAD,
                     flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pad by `pad` with zeros, crop at a random offset, flip half of the images (or those `flip` says); one gather.

    The offsets and flips are drawn in the same order whatever `flip` is, so runs that differ only in it see
    the same crops.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    drawn = (torch.rand(n, generator=gen) < 0.5).long()
    flip = drawn if flip is None else flip.long()
    dy, dx, flip = to_device(torch.stack([dy, dx, flip]), images.device)  # one copy to the device
    flip = flip.bool()
    ar_h, ar_w = torch.arange(h, device=images.device), torch.arange(w, device=images.device)
    rows = dy[:, None] + ar_h
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    chans = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def random_resized_crop_flip(images: torch.Tensor, gen: torch.Generator,
                             flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A crop of each image covering a random share (`RESIZED_CROP_SCALE`) of it at a random aspect ratio
    (`RESIZED_CROP_RATIO`) and place, resized back to the image's size, half of them (or those `flip` says)
    mirrored: one `grid_sample` for the batch. Returns float images in [0, 255]."""
    n, _, h, w = images.shape
    area = torch.empty(n).uniform_(*RESIZED_CROP_SCALE, generator=gen)
    log_ratio = torch.empty(n).uniform_(*[math.log(r) for r in RESIZED_CROP_RATIO], generator=gen)
    ratio = torch.exp(log_ratio)
    sx, sy = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)  # halves of the side, in [-1, 1]
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sx)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sy)
    drawn = (torch.rand(n, generator=gen) < 0.5).long()
    sign = 1.0 - 2.0 * (drawn if flip is None else flip.long()).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * sign, cx, sy, cy
    grid = F.affine_grid(to_device(theta, images.device), [n, 3, h, w], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def cutout_mask(n: int, h: int, w: int, size: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 1, h, w) True inside one `size` x `size` square per image, centred anywhere on it and clipped at its
    border (DeVries & Taylor's cutout, whose CIFAR-10 setting is 16): the pixels a batch loses."""
    cy, cx = to_device(torch.stack([torch.randint(0, h, (n,), generator=gen),
                                    torch.randint(0, w, (n,), generator=gen)]), device)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=device)[None, :] - top[:, None]
    cols = torch.arange(w, device=device)[None, :] - left[:, None]
    inside_rows, inside_cols = (rows >= 0) & (rows < size), (cols >= 0) & (cols < size)
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]


class BatchStream:
    """Endless shuffled, augmented batches of a uint8 image tensor (kept on `device`).

    `flip="alternating"` flips image i on epoch e when (its random start bit + e) is odd, so over any two
    epochs every image is seen once each way (airbench's derandomised flip). `cutout > 0` sets a square of that
    side to the dataset mean (0 after normalisation) in every image, from a generator of its own, so the crops
    and flips are those of a run without it.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int,
                 device: torch.device, mean: Sequence[float], std: Sequence[float], rank: int = 0, world: int = 1,
                 channels_last: bool = False, translate: int = PAD, flip: str = "random", cutout: int = 0) -> None:
        if batch_size > images.shape[0]:
            batch_size = images.shape[0]
        if batch_size % world:
            raise UserError(f"batch size {batch_size} does not split over {world} processes")
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        scale = images.shape[-1] / 32  # the recipe's pixels are CIFAR-10's
        self.channels_last, self.translate, self.cutout = channels_last, round(translate * scale), round(cutout * scale)
        self.resized_crops = images.shape[-1] > RESIZED_CROP_ABOVE
        # one start bit per image, on the host: the flips are decided where the crop offsets are drawn
        self._flip_start = torch.randint(0, 2, (images.shape[0],), generator=generator(seed, 3)) \
            if flip == "alternating" else None
        self.mean, self.std = norm_constants(mean, std, device)
        self.steps_per_epoch = images.shape[0] // batch_size
        self._perm_epoch, self._perm_host, self._perm = -1, torch.empty(0), torch.empty(0)

    def _permutation(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's order, on the host and on the data's device."""
        if epoch != self._perm_epoch:
            self._perm_host = torch.randperm(self.images.shape[0], generator=generator(self.seed, 1, epoch))
            self._perm = to_device(self._perm_host, self.images.device)
            self._perm_epoch = epoch
        return self._perm_host, self._perm

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.steps_per_epoch)
        window = slice(i * self.batch_size, (i + 1) * self.batch_size)
        perm_host, perm = self._permutation(epoch)
        idx = perm[window]
        flip = None
        if self._flip_start is not None:
            flip = (self._flip_start[perm_host[window]] + epoch) % 2
        crop = random_resized_crop_flip if self.resized_crops else \
            lambda x, gen, flip: random_crop_flip(x, gen, self.translate, flip)
        images = crop(self.images[idx], generator(self.seed, 2, step), flip)
        mine = slice(self.rank, None, self.world)
        x = normalize(images[mine], self.mean, self.std, self.channels_last)
        if self.cutout:  # drawn for the whole global batch, so every rank's share matches a single process's
            n, _, h, w = images.shape
            x.masked_fill_(cutout_mask(n, h, w, self.cutout, generator(self.seed, 4, step), x.device)[mine], 0.0)
        return x, self.labels[idx][mine]
