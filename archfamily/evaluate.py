"""Counting a classifier's mistakes on uint8 images, normalised with the mean and std it was trained with."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from archfamily.batches import normalize


@torch.inference_mode()
def count_errors(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float],
                 std: Sequence[float], device: torch.device, batch_size: int = 500,
                 bf16: bool = False) -> tuple[int, int]:
    """(wrong, total) over `images` (uint8 NCHW), in eval mode; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    wrong = 0
    try:
        for start in range(0, images.shape[0], batch_size):
            x = normalize(images[start:start + batch_size].to(device), mean, std, channels_last=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                pred = model(x).argmax(1)
            wrong += int((pred != labels[start:start + batch_size].to(device)).sum())
    finally:
        model.train(was_training)
    return wrong, int(images.shape[0])
