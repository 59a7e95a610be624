"""ResNet (He et al. 2016) with basic or bottleneck blocks and prunable inner widths.

Post-activation blocks as in torchvision, so that `resnet-18-imagenet` has exactly
torchvision's parameter count. Each inner width is one channel group
(`channel_groups`). Because BN follows the last conv of a branch, a branch whose
channels are all closed would still add BN's bias; its groups therefore name that BN
as their `branch`, whose output pruning zeroes once they close, so the block is its
shortcut alone, as the network without the branch is.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from archfamily.models.classifier_net import ClassifierNet, inner_group
from archfamily.families import ChannelGroup
from archfamily.specs import BlockPlan, ResNetSpec


def _downsample(plan: BlockPlan) -> Optional[nn.Sequential]:
    if not plan.projection:
        return None
    return nn.Sequential(nn.Conv2d(plan.cin, plan.cout, 1, plan.stride, bias=False), nn.BatchNorm2d(plan.cout))


class BasicBlock(nn.Module):
    __constants__ = ["has_branch"]  # a constant, so TorchScript drops the branch a block lacks

    def __init__(self, plan: BlockPlan, drop_path: float = 0.0) -> None:
        super().__init__()
        (mid,) = plan.inner
        self.downsample = _downsample(plan)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.has_branch = plan.has_branch
        if self.has_branch:
            self.conv1 = nn.Conv2d(plan.cin, mid, 3, plan.stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.conv2 = nn.Conv2d(mid, plan.cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(plan.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        if not self.has_branch:
            return F.relu(shortcut)
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(shortcut + self.drop_path(out))

    def channel_groups(self, name: str, index: int) -> dict[int, ChannelGroup]:
        if not self.has_branch:
            return {}
        return {index: inner_group(name, self.conv1.out_channels, "conv1", "bn1", "conv2", branch="bn2")}


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1; the outputs of the first two convs are its two channel groups."""

    __constants__ = ["has_branch"]  # a constant, so TorchScript drops the branch a block lacks

    def __init__(self, plan: BlockPlan, drop_path: float = 0.0) -> None:
        super().__init__()
        mid, mid2 = plan.inner
        self.downsample = _downsample(plan)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.has_branch = plan.has_branch
        if self.has_branch:
            self.conv1 = nn.Conv2d(plan.cin, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.conv2 = nn.Conv2d(mid, mid2, 3, plan.stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(mid2)
            self.conv3 = nn.Conv2d(mid2, plan.cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(plan.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        if not self.has_branch:
            return F.relu(shortcut)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        return F.relu(shortcut + self.drop_path(out))

    def channel_groups(self, name: str, index: int) -> dict[int, ChannelGroup]:
        if not self.has_branch:
            return {}
        return {index: inner_group(name, self.conv1.out_channels, "conv1", "bn1", "conv2", branch="bn3"),
                index + 1: inner_group(name, self.conv2.out_channels, "conv2", "bn2", "conv3", branch="bn3")}


class ResNet(ClassifierNet):
    """ResNet with a CIFAR (3x3) or ImageNet (7x7 + max pool) stem, built from a `ResNetSpec`."""

    def _build_body(self, spec: ResNetSpec) -> int:
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
        self.stages = nn.Sequential(*[nn.Sequential(*[block(plan, next(rates)) for plan in stage])
                                      for stage in plans])
        self.feature_info += [dict(num_chs=w, reduction=reduction * 2**s, module=f"stages.{s}")
                              for s, w in enumerate(spec.stage_widths)]
        return spec.stage_widths[-1]

    def channel_groups(self) -> dict[int, ChannelGroup]:
        """Each block's inner widths (one for a basic block, two for a bottleneck), in the spec's prunable width
        order."""
        groups, index = {}, 0
        per_block = 2 if self.spec.block == "bottleneck" else 1
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage):
                groups.update(block.channel_groups(f"stages.{s}.{b}", index))
                index += per_block
        return groups
