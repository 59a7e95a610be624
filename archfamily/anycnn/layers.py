"""The layer kinds the tracing, the rebuild and the masks tell apart: norms over channels, and depthwise
convolutions (whose inputs and outputs are one group's channels alike)."""
from __future__ import annotations

from torch import nn

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)  # timm's norm-act layers included


def is_depthwise(conv: nn.Conv2d) -> bool:
    """One group per channel: the convolution passes each channel through (Torch-Pruning records its outputs only)."""
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
