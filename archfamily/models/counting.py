"""Measured counts of a built model, to cross-check the analytic counts of `archfamily.specs`."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_macs(model: nn.Module, input_size: int, in_chans: int = 3) -> int:
    """MACs of one forward pass of one image: `FlopCounterMode` FLOPs / 2 (convs and matmuls)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_chans, input_size, input_size, device=next(model.parameters()).device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
