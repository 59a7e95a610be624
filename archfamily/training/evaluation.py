"""A classifier's test error: its mistakes on uint8 images, normalised with the mean and std it was trained with.

The trainer measures with its recipe's normalisation (`count_errors`); the zoo measures
any timm model with the normalisation of its pretrained cfg (`test_error`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import torch
from timm.data import resolve_model_data_config
from torch import nn

from archfamily.data.batches import norm_constants, normalize, to_device
from archfamily.progress import progress_bar

if TYPE_CHECKING:
    from archfamily.data.dataset import ImageData
    from archfamily.data.streaming import FileSplit


TTA_MODES = ("", "mirror", "mirror-shift")


def _mirrored(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).float() + model(x.flip(3)).float()


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`x` moved by (dy, dx) pixels, the uncovered border filled by edge replication (airbench's translate)."""
    h, w = x.shape[-2:]
    rows = (torch.arange(h, device=x.device) - dy).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device) - dx).clamp(0, w - 1)
    return x[:, :, rows][:, :, :, cols].contiguous(memory_format=torch.channels_last)


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Logits of `x` with test-time augmentation: none, each image's `mirror` added, or `mirror-shift`:
    airbench's weighting, half the mirrored pair plus a quarter each of the pair shifted by one pixel
    up-left and down-right."""
    if tta == "":
        return model(x)
    if tta == "mirror":
        return _mirrored(model, x)
    if tta == "mirror-shift":
        return 0.5 * _mirrored(model, x) + 0.25 * (_mirrored(model, _shifted(x, -1, -1))
                                                   + _mirrored(model, _shifted(x, 1, 1)))
    raise ValueError(f"unknown test-time augmentation {tta!r}; one of {TTA_MODES}")


def _batches(images: "torch.Tensor | FileSplit", labels: torch.Tensor, batch_size: int,
             device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) in order: slices of a tensor, or a streamed split read by timm's evaluation transform."""
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start:start + batch_size], labels[start:start + batch_size]
    else:
        from archfamily.data.streaming import eval_batches

        yield from eval_batches(images, batch_size, pin=device.type == "cuda")


@torch.inference_mode()
def count_errors(model: nn.Module, images: "torch.Tensor | FileSplit", labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], device: torch.device, batch_size: int = 500,
                 bf16: bool = False, tta: str = "", desc: Optional[str] = None) -> tuple[int, int]:
    """(wrong, total) over `images` (uint8 NCHW, or a streamed split's files), in eval mode; the model's mode is
    restored after.

    `tta` is a test-time augmentation of `tta_logits` ("" for none). With `desc`, a progress bar of that
    name counts the images (10,000 take half a minute on a CPU); without, it is silent (a pruning run's checks).
    The count stays on the device until the end, so a GPU is never made to wait per batch.
    """
    was_training = model.training
    model.eval()
    m, s = norm_constants(mean, std, device)
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    try:
        with progress_bar(total=len(images), desc=desc, unit="img", disable=desc is None) as bar:
            for batch, truth in _batches(images, labels, batch_size, device):
                x = normalize(to_device(batch, device), m, s, channels_last=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logits = tta_logits(model, x, tta)
                wrong += (logits.argmax(1) != to_device(truth, device)).sum()
                bar.update(x.shape[0])
    finally:
        model.train(was_training)
    return int(wrong), len(images)


def test_error(model: nn.Module, data: "ImageData", device: torch.device, desc: Optional[str] = "test error") -> float:
    """Top-1 error (%) on the test split, with the normalisation of the model's pretrained cfg (timm's), under a
    progress bar named `desc` (None: none)."""
    cfg = resolve_model_data_config(model)
    wrong, total = count_errors(model.to(device), data.test_x, data.test_y, cfg["mean"], cfg["std"], device,
                                desc=desc)
    return error_percent(wrong, total)


def error_percent(wrong: int, total: int) -> float:
    """`wrong` of `total` images in percent, to 4 decimals: a count's own precision (to 1 in 1,000,000 images),
    without float artefacts such as 33.900000000000006 in trajectory.jsonl and metrics.json."""
    return round(100 * wrong / total, 4)
