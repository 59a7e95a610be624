"""CIFAR DenseNet-BC (Huang et al. 2017) with prunable bottleneck widths.

Each dense layer is BN -> ReLU -> conv1x1 -> BN -> ReLU -> [gate] -> conv3x3 and
appends `growth` channels. Its bottleneck width (4k by default) is
`spec.bottleneck_widths[s][l]`; a layer of width 0 appends zeros, which is what the
fully gated layer computes, so masked and compressed networks agree exactly.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from archfamily.models.gates import PruneGroup, init_weights, make_gate
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


class DenseNetBC(nn.Module):
    """DenseNet-BC for 32x32 inputs, built from a `DenseNetBCSpec`."""

    def __init__(self, spec: DenseNetBCSpec, gated: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.stem = nn.Conv2d(spec.in_chans, spec.stem_channels, 3, 1, 1, bias=False)
        inputs = spec.block_inputs()
        stages: list[nn.Module] = []
        for s, row in enumerate(spec.bottleneck_widths):
            stage = nn.Sequential(*[DenseLayer(inputs[s][i], mid, spec.growth, gated) for i, mid in enumerate(row)])
            if s < len(spec.bottleneck_widths) - 1:
                stage.add_module("transition", Transition(inputs[s][-1], int(inputs[s][-1] * spec.compression)))
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.num_features = inputs[-1][-1]
        self.norm = nn.BatchNorm2d(self.num_features)
        self.fc = nn.Linear(self.num_features, spec.num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.stages(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean((2, 3)))

    def prune_groups(self) -> list[PruneGroup]:
        groups, index = [], 0
        for stage in self.stages:
            for layer in stage:
                if not isinstance(layer, DenseLayer):
                    continue
                if layer.conv1 is not None:
                    groups.append(PruneGroup(index, layer.gate, layer.conv1, layer.norm2, layer.conv2))
                index += 1
        return groups
