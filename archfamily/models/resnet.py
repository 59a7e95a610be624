"""ResNet (He et al. 2016) with basic or bottleneck blocks and prunable inner widths.

Post-activation blocks as in torchvision, so that `resnet-18-imagenet` has exactly
torchvision's parameter count. Because BN follows the last conv of a branch, a fully
gated branch would still add BN's bias; a gated block therefore multiplies its branch
by `gate.alive()`, so a block whose channels are all pruned is its shortcut alone.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from archfamily.models.classifier_net import ClassifierNet
from archfamily.models.gates import PruneGroup, make_gate
from archfamily.specs import BlockPlan, ResNetSpec


def _downsample(plan: BlockPlan) -> Optional[nn.Sequential]:
    if not plan.projection:
        return None
    return nn.Sequential(nn.Conv2d(plan.cin, plan.cout, 1, plan.stride, bias=False), nn.BatchNorm2d(plan.cout))


class BasicBlock(nn.Module):
    __constants__ = ["gated", "has_branch"]  # constants, so TorchScript drops the branch a block lacks

    def __init__(self, plan: BlockPlan, gated: bool, drop_path: float = 0.0) -> None:
        super().__init__()
        (mid,) = plan.inner
        self.downsample = _downsample(plan)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.has_branch, self.gated = plan.has_branch, gated
        if self.has_branch:
            self.conv1 = nn.Conv2d(plan.cin, mid, 3, plan.stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.gate = make_gate(mid, gated)
            self.conv2 = nn.Conv2d(mid, plan.cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(plan.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        if not self.has_branch:
            return F.relu(shortcut)
        out = self.bn2(self.conv2(self.gate(F.relu(self.bn1(self.conv1(x))))))
        if self.gated:
            out = out * self.gate.alive()
        return F.relu(shortcut + self.drop_path(out))

    def prune_groups(self, index: int) -> list[PruneGroup]:
        return [PruneGroup(index, self.gate, self.conv1, self.bn1, self.conv2)] if self.has_branch else []


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1, with a gate after each of the first two convs."""

    __constants__ = ["gated", "has_branch"]  # constants, so TorchScript drops the branch a block lacks

    def __init__(self, plan: BlockPlan, gated: bool, drop_path: float = 0.0) -> None:
        super().__init__()
        mid, mid2 = plan.inner
        self.downsample = _downsample(plan)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.has_branch, self.gated = plan.has_branch, gated
        if self.has_branch:
            self.conv1 = nn.Conv2d(plan.cin, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.gate1 = make_gate(mid, gated)
            self.conv2 = nn.Conv2d(mid, mid2, 3, plan.stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(mid2)
            self.gate2 = make_gate(mid2, gated)
            self.conv3 = nn.Conv2d(mid2, plan.cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(plan.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        if not self.has_branch:
            return F.relu(shortcut)
        out = self.gate1(F.relu(self.bn1(self.conv1(x))))
        out = self.bn3(self.conv3(self.gate2(F.relu(self.bn2(self.conv2(out))))))
        if self.gated:
            out = out * torch.minimum(self.gate1.alive(), self.gate2.alive())
        return F.relu(shortcut + self.drop_path(out))

    def prune_groups(self, index: int) -> list[PruneGroup]:
        if not self.has_branch:
            return []
        return [
            PruneGroup(index, self.gate1, self.conv1, self.bn1, self.conv2),
            PruneGroup(index + 1, self.gate2, self.conv2, self.bn2, self.conv3),
        ]


class ResNet(ClassifierNet):
    """ResNet with a CIFAR (3x3) or ImageNet (7x7 + max pool) stem, built from a `ResNetSpec`."""

    def _build_body(self, spec: ResNetSpec, gated: bool) -> int:
        if spec.stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(spec.in_chans, spec.stem_width, 7, 2, 3, bias=False), nn.BatchNorm2d(spec.stem_width),
                nn.ReLU(), nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(nn.Conv2d(spec.in_chans, spec.stem_width, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(spec.stem_width), nn.ReLU())
        reduction = 4 if spec.stem == "imagenet" else 1
        # the stem's last layer (ReLU, or max pool): timm flattens the Sequential stem into stem.0, stem.1, ...
        self.feature_info = [dict(num_chs=spec.stem_width, reduction=reduction, module=f"stem.{len(self.stem) - 1}")]
        block = BasicBlock if spec.block == "basic" else Bottleneck
        plans = spec.blocks()
        rates = iter(self._drop_path_rates(sum(len(stage) for stage in plans)))
        self.stages = nn.Sequential(*[nn.Sequential(*[block(plan, gated, next(rates)) for plan in stage])
                                      for stage in plans])
        self.feature_info += [dict(num_chs=w, reduction=reduction * 2**s, module=f"stages.{s}")
                              for s, w in enumerate(spec.stage_widths)]
        return spec.stage_widths[-1]

    def prune_groups(self) -> list[PruneGroup]:
        groups, index = [], 0
        per_block = 2 if self.spec.block == "bottleneck" else 1
        for stage in self.stages:
            for block in stage:
                groups.extend(block.prune_groups(index))
                index += per_block
        return groups
