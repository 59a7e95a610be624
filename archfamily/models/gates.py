"""Channel gates: how a network is pruned before it is physically made smaller.

A gate multiplies each channel of one prunable group by its mask (1 kept, 0 pruned).
Pruning flips mask entries to 0; `archfamily.pruning.compress` later removes the
gated channels for real. `PruneGroup` names the convs around a gate so that
saliency, channel costs and compression work for every family alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class ChannelGate(nn.Module):
    """Per-channel 0/1 mask after an activation; the mask is saved with the weights."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.view(1, -1, 1, 1).to(x.dtype)

    def alive(self) -> torch.Tensor:
        """1 while any channel is open, else 0: lets a block drop its whole branch."""
        return self.mask.amax()

    @property
    def num_open(self) -> int:
        return int(self.mask.count_nonzero())

    def extra_repr(self) -> str:
        return f"{self.mask.numel()}"


@dataclass(frozen=True)
class PruneGroup:
    """One prunable channel group: `producer` makes it, `norm` normalises it, `consumer` reads it.

    `index` is the group's position in `spec.prunable_widths()`.
    """

    index: int
    gate: ChannelGate
    producer: nn.Conv2d
    norm: nn.BatchNorm2d
    consumer: nn.Conv2d


def make_gate(channels: int, gated: bool) -> nn.Module:
    """A real gate for models being pruned, a no-op for models being trained or deployed."""
    return ChannelGate(channels) if gated else nn.Identity()
