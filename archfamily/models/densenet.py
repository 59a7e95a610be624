"""CIFAR DenseNet-BC (Huang et al. 2017) with prunable bottleneck widths.

Each dense layer is BN -> ReLU -> conv1x1 -> BN -> ReLU -> [gate] -> conv3x3 and
appends `growth` channels. Its bottleneck width (4k by default) is
`bottleneck_widths[s][l]`; a layer of width 0 appends zeros, which is what the
fully gated layer computes, so masked and compressed networks agree exactly.
`stages` alternates dense blocks and transitions: stages.0, .2, .4 are the blocks.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from archfamily.models.gates import PruneGroup, init_weights, make_gate
from archfamily.models.head import ClassifierNet
from archfamily.specs import DenseNetBCSpec


class DenseLayer(nn.Module):
    def __init__(self, cin: int, mid: int, growth: int, gated: bool) -> None:
        super().__init__()
        self.growth = growth
        self.norm1: Optional[nn.BatchNorm2d] = None
        self.conv1: Optional[nn.Conv2d] = None
        self.norm2: Optional[nn.BatchNorm2d] = None
        self.gate: Optional[nn.Module] = None
        self.conv2: Optional[nn.Conv2d] = None
        if mid > 0:
            self.norm1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(mid)
            self.gate = make_gate(mid, gated)
            self.conv2 = nn.Conv2d(mid, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm1 is None or self.conv1 is None or self.norm2 is None or self.gate is None or self.conv2 is None:
            new = x.new_zeros(x.shape[0], self.growth, x.shape[2], x.shape[3])
        else:
            new = self.conv2(self.gate(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x)))))))
        return torch.cat([x, new], 1)


class Transition(nn.Sequential):
    """BN -> ReLU -> conv1x1 (compressing) -> 2x2 average pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2)


class DenseNetBC(ClassifierNet):
    """DenseNet-BC for 32x32 inputs; `DenseNetBC(**spec_kwargs(spec))` builds a spec's network."""

    def __init__(self, growth: int, bottleneck_widths: Sequence[Sequence[int]], compression: float = 0.5,
                 stem_width: int = 0, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "avg", gated: bool = False) -> None:
        super().__init__()
        spec = DenseNetBCSpec(growth, tuple(tuple(r) for r in bottleneck_widths), compression, stem_width,
                              num_classes, in_chans)
        self._spec = spec
        self.stem = nn.Conv2d(in_chans, spec.stem_channels, 3, 1, 1, bias=False)
        inputs = spec.block_inputs()
        stages: list[nn.Module] = []
        self.feature_info = [dict(num_chs=spec.stem_channels, reduction=1, module="stem")]
        for s, row in enumerate(spec.bottleneck_widths):
            stages.append(nn.Sequential(*[DenseLayer(inputs[s][i], mid, growth, gated) for i, mid in enumerate(row)]))
            self.feature_info.append(dict(num_chs=inputs[s][-1], reduction=2**s, module=f"stages.{2 * s}"))
            if s < len(spec.bottleneck_widths) - 1:
                stages.append(Transition(inputs[s][-1], int(inputs[s][-1] * compression)))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(inputs[-1][-1])
        self._init_head(inputs[-1][-1], num_classes, global_pool, drop_rate)
        init_weights(self)

    @property
    def spec(self) -> DenseNetBCSpec:
        s = self._spec
        return DenseNetBCSpec(s.growth, s.bottleneck_widths, s.compression, s.stem_width, self.num_classes, s.in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.stages(self.stem(x))))

    def prune_groups(self) -> list[PruneGroup]:
        groups, index = [], 0
        for stage in self.stages[::2]:
            for layer in stage:
                if layer.conv1 is not None:
                    groups.append(PruneGroup(index, layer.gate, layer.conv1, layer.norm2, layer.conv2))
                index += 1
        return groups
