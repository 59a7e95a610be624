"""CIFAR WideResNet (Zagoruyko & Komodakis 2016) with prunable inner widths.

Pre-activation basic blocks. The residual branch of block b in stage s is
conv3x3 -> BN -> ReLU -> conv3x3, and its inner width is `inner_widths[s][b]`:
one channel group (`channel_groups`), which pruning may close entirely. With
inner width 0 the block is its shortcut alone.
"""
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from archfamily.families import ChannelGroup
from archfamily.models.classifier_net import ClassifierNet, inner_group
from archfamily.specs import BlockPlan, WideResNetSpec


class WideBasicBlock(nn.Module):
    """Pre-activation block; the shortcut is a 1x1 conv when width or stride change."""

    __constants__ = ["has_branch", "projection"]  # constants, so TorchScript drops the parts a block lacks

    def __init__(self, plan: BlockPlan, drop_path: float = 0.0) -> None:
        super().__init__()
        (mid,) = plan.inner
        self.has_branch, self.projection = plan.has_branch, plan.projection
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if self.has_branch or self.projection:
            self.norm1 = nn.BatchNorm2d(plan.cin)
        if self.has_branch:
            self.conv1 = nn.Conv2d(plan.cin, mid, 3, plan.stride, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(mid)
            self.conv2 = nn.Conv2d(mid, plan.cout, 3, 1, 1, bias=False)
        if self.projection:
            self.shortcut = nn.Conv2d(plan.cin, plan.cout, 1, plan.stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_branch and not self.projection:
            return x
        act = F.relu(self.norm1(x))
        shortcut = x
        if self.projection:
            shortcut = self.shortcut(act)
        if not self.has_branch:
            return shortcut
        return shortcut + self.drop_path(self.conv2(F.relu(self.norm2(self.conv1(act)))))


class WideResNet(ClassifierNet):
    """WRN-d-k for 32x32 inputs, built from a `WideResNetSpec`."""

    def _build_body(self, spec: WideResNetSpec) -> int:
        self.stem = nn.Conv2d(spec.in_chans, spec.stem_width, 3, 1, 1, bias=False)
        plans = spec.blocks()
        rates = iter(self._drop_path_rates(sum(len(stage) for stage in plans)))
        self.stages = nn.Sequential(*[
            nn.Sequential(*[WideBasicBlock(plan, next(rates)) for plan in stage]) for stage in plans
        ])
        self.feature_info = [dict(num_chs=spec.stem_width, reduction=1, module="stem")] + [
            dict(num_chs=w, reduction=2**s, module=f"stages.{s}") for s, w in enumerate(spec.stage_widths)
        ]
        self.norm = nn.BatchNorm2d(spec.stage_widths[-1])
        return spec.stage_widths[-1]

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(x))

    def channel_groups(self) -> dict[int, ChannelGroup]:
        """Each block's inner channels (by block, the spec's prunable width order): made by conv1, normalised by
        norm2, read by conv2."""
        blocks = [(f"stages.{s}.{b}", block) for s, stage in enumerate(self.stages) for b, block in enumerate(stage)]
        return {index: inner_group(name, block.conv1.out_channels, "conv1", "norm2", "conv2")
                for index, (name, block) in enumerate(blocks) if block.has_branch}
