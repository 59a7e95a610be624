"""A classifier's test error: its mistakes on uint8 images, normalised with the mean and std it was trained with.

The trainer measures with its recipe's normalisation (`count_errors`); the zoo measures
any timm model with the normalisation of its pretrained cfg (`test_error`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from timm.data import resolve_model_data_config
from torch import nn

from archfamily.batches import norm_constants, normalize, to_device

if TYPE_CHECKING:
    from archfamily.data import Cifar10


@torch.inference_mode()
def count_errors(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], device: torch.device, batch_size: int = 500,
                 bf16: bool = False, tta: bool = False) -> tuple[int, int]:
    """(wrong, total) over `images` (uint8 NCHW), in eval mode; the model's mode is restored after.

    `tta` predicts from the sum of the logits of each image and its horizontal mirror.
    The count stays on the device until the end, so a GPU is never made to wait per batch.
    """
    was_training = model.training
    model.eval()
    m, s = norm_constants(mean, std, device)
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for start in range(0, images.shape[0], batch_size):
            x = normalize(to_device(images[start:start + batch_size], device), m, s, channels_last=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
                if tta:
                    logits = logits.float() + model(x.flip(3)).float()
            wrong += (logits.argmax(1) != to_device(labels[start:start + batch_size], device)).sum()
    finally:
        model.train(was_training)
    return int(wrong), int(images.shape[0])


def test_error(model: nn.Module, data: "Cifar10", device: torch.device) -> float:
    """Top-1 error (%) on the test split, with the normalisation of the model's pretrained cfg (timm's)."""
    cfg = resolve_model_data_config(model)
    wrong, total = count_errors(model.to(device), data.test_x, data.test_y, cfg["mean"], cfg["std"], device)
    return 100.0 * wrong / total
