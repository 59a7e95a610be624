"""CIFAR WideResNet (Zagoruyko & Komodakis 2016) with prunable inner widths.

Pre-activation basic blocks. The residual branch of block b in stage s is
conv3x3 -> BN -> ReLU -> [gate] -> conv3x3, and its inner width is
`inner_widths[s][b]`. With inner width 0 the block is its shortcut alone.
The constructor takes the fields of `WideResNetSpec`, so timm's `model_args`
rebuild any member of a family.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from archfamily.models.gates import PruneGroup, init_weights, make_gate
from archfamily.models.head import ClassifierNet
from archfamily.specs import WideResNetSpec


class WideBasicBlock(nn.Module):
    """Pre-activation block; the shortcut is a 1x1 conv when width or stride change."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, gated: bool) -> None:
        super().__init__()
        projection = cin != cout or stride != 1
        self.norm1: Optional[nn.BatchNorm2d] = nn.BatchNorm2d(cin) if mid > 0 or projection else None
        self.conv1: Optional[nn.Conv2d] = None
        self.norm2: Optional[nn.BatchNorm2d] = None
        self.gate: Optional[nn.Module] = None
        self.conv2: Optional[nn.Conv2d] = None
        if mid > 0:
            self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(mid)
            self.gate = make_gate(mid, gated)
            self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
        self.shortcut: Optional[nn.Conv2d] = nn.Conv2d(cin, cout, 1, stride, bias=False) if projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm1 is None:
            return x
        act = F.relu(self.norm1(x))
        shortcut = self.shortcut(act) if self.shortcut is not None else x
        if self.conv1 is None or self.norm2 is None or self.gate is None or self.conv2 is None:
            return shortcut
        return shortcut + self.conv2(self.gate(F.relu(self.norm2(self.conv1(act)))))


class WideResNet(ClassifierNet):
    """WRN-d-k for 32x32 inputs; `WideResNet(**spec_kwargs(spec))` builds a spec's network."""

    def __init__(self, stage_widths: Sequence[int], inner_widths: Sequence[Sequence[int]], stem_width: int = 16,
                 num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg",
                 gated: bool = False) -> None:
        super().__init__()
        spec = WideResNetSpec(tuple(stage_widths), tuple(tuple(r) for r in inner_widths), stem_width, num_classes,
                              in_chans)
        self._spec = spec
        self.stem = nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False)
        inputs = spec.block_inputs()
        self.stages = nn.Sequential(*[
            nn.Sequential(*[
                WideBasicBlock(inputs[s][b], mid, spec.stage_widths[s], spec.block_stride(s, b), gated)
                for b, mid in enumerate(row)
            ])
            for s, row in enumerate(spec.inner_widths)
        ])
        self.feature_info = [dict(num_chs=stem_width, reduction=1, module="stem")] + [
            dict(num_chs=w, reduction=2**s, module=f"stages.{s}") for s, w in enumerate(spec.stage_widths)
        ]
        self.norm = nn.BatchNorm2d(spec.stage_widths[-1])
        self._init_head(spec.stage_widths[-1], num_classes, global_pool, drop_rate)
        init_weights(self)

    @property
    def spec(self) -> WideResNetSpec:
        return WideResNetSpec(self._spec.stage_widths, self._spec.inner_widths, self._spec.stem_width,
                              self.num_classes, self._spec.in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.stages(self.stem(x))))

    def prune_groups(self) -> list[PruneGroup]:
        groups, index = [], 0
        for stage in self.stages:
            for block in stage:
                if block.conv1 is not None:
                    groups.append(PruneGroup(index, block.gate, block.conv1, block.norm2, block.conv2))
                index += 1
        return groups
