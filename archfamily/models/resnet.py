"""ResNet (He et al. 2016) with basic or bottleneck blocks and prunable inner widths.

Post-activation blocks as in torchvision, so that `resnet-18-imagenet` has exactly
torchvision's parameter count. Because BN follows the last conv of a branch, a fully
gated branch would still add BN's bias; a gated block therefore multiplies its branch
by `gate.alive()`, so a block whose channels are all pruned is its shortcut alone.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from archfamily.models.gates import PruneGroup, init_weights, make_gate
from archfamily.models.head import ClassifierNet
from archfamily.specs import ResNetSpec


def _downsample(cin: int, cout: int, stride: int) -> Optional[nn.Sequential]:
    if cin == cout and stride == 1:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    __constants__ = ["gated", "has_branch"]  # constants, so TorchScript drops the branch a block lacks

    def __init__(self, cin: int, mid: int, cout: int, stride: int, gated: bool) -> None:
        super().__init__()
        self.downsample = _downsample(cin, cout, stride)
        self.has_branch, self.gated = mid > 0, gated
        if self.has_branch:
            self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.gate = make_gate(mid, gated)
            self.conv2 = nn.Conv2d(mid, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        if not self.has_branch:
            return F.relu(shortcut)
        out = self.bn2(self.conv2(self.gate(F.relu(self.bn1(self.conv1(x))))))
        if self.gated:
            out = out * self.gate.alive()
        return F.relu(shortcut + out)

    def prune_groups(self, index: int) -> list[PruneGroup]:
        return [PruneGroup(index, self.gate, self.conv1, self.bn1, self.conv2)] if self.has_branch else []


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1, with a gate after each of the first two convs."""

    __constants__ = ["gated", "has_branch"]  # constants, so TorchScript drops the branch a block lacks

    def __init__(self, cin: int, mid: int, mid2: int, cout: int, stride: int, gated: bool) -> None:
        super().__init__()
        self.downsample = _downsample(cin, cout, stride)
        self.has_branch, self.gated = mid > 0 and mid2 > 0, gated
        if self.has_branch:
            self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.gate1 = make_gate(mid, gated)
            self.conv2 = nn.Conv2d(mid, mid2, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(mid2)
            self.gate2 = make_gate(mid2, gated)
            self.conv3 = nn.Conv2d(mid2, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        if not self.has_branch:
            return F.relu(shortcut)
        out = self.gate1(F.relu(self.bn1(self.conv1(x))))
        out = self.bn3(self.conv3(self.gate2(F.relu(self.bn2(self.conv2(out))))))
        if self.gated:
            out = out * torch.minimum(self.gate1.alive(), self.gate2.alive())
        return F.relu(shortcut + out)

    def prune_groups(self, index: int) -> list[PruneGroup]:
        if not self.has_branch:
            return []
        return [
            PruneGroup(index, self.gate1, self.conv1, self.bn1, self.conv2),
            PruneGroup(index + 1, self.gate2, self.conv2, self.bn2, self.conv3),
        ]


class ResNet(ClassifierNet):
    """ResNet with a CIFAR (3x3) or ImageNet (7x7 + max pool) stem; built from `ResNetSpec` fields."""

    def __init__(self, block: str, stage_widths: Sequence[int], mid_widths: Sequence[Sequence[int]],
                 mid2_widths: Sequence[Sequence[int]] = (), stem: str = "cifar", stem_width: int = 64,
                 num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg",
                 gated: bool = False) -> None:
        super().__init__()
        spec = ResNetSpec(block, tuple(stage_widths), tuple(tuple(r) for r in mid_widths),
                          tuple(tuple(r) for r in mid2_widths), stem, stem_width, num_classes, in_chans)
        self._spec = spec
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False), nn.BatchNorm2d(stem_width), nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_width),
                                      nn.ReLU())
        reduction = 4 if stem == "imagenet" else 1
        # the stem's last layer (ReLU, or max pool): timm flattens the Sequential stem into stem.0, stem.1, ...
        self.feature_info = [dict(num_chs=stem_width, reduction=reduction, module=f"stem.{len(self.stem) - 1}")]
        inputs = spec.block_inputs()
        stages = []
        for s, row in enumerate(spec.mid_widths):
            blocks: list[nn.Module] = []
            for b in range(len(row)):
                cin, cout, stride, ws = inputs[s][b], spec.stage_widths[s], spec.block_stride(s, b), spec.block_widths(s, b)
                if block == "basic":
                    blocks.append(BasicBlock(cin, ws[0], cout, stride, gated))
                else:
                    blocks.append(Bottleneck(cin, ws[0], ws[1], cout, stride, gated))
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=spec.stage_widths[s], reduction=reduction * 2**s, module=f"stages.{s}"))
        self.stages = nn.Sequential(*stages)
        self._init_head(spec.stage_widths[-1], num_classes, global_pool, drop_rate)
        init_weights(self)

    @property
    def spec(self) -> ResNetSpec:
        s = self._spec
        return ResNetSpec(s.block, s.stage_widths, s.mid_widths, s.mid2_widths, s.stem, s.stem_width,
                          self.num_classes, s.in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def prune_groups(self) -> list[PruneGroup]:
        groups, index = [], 0
        per_block = 2 if self._spec.block == "bottleneck" else 1
        for stage in self.stages:
            for block in stage:
                groups.extend(block.prune_groups(index))
                index += per_block
        return groups
