"""CIFAR DenseNet-BC (Huang et al. 2017) with prunable bottleneck widths.

Each dense layer is BN -> ReLU -> conv1x1 -> BN -> ReLU -> conv3x3 and
appends `growth` channels. Its bottleneck width (4k by default) is
`bottleneck_widths[s][l]`, one channel group (`channel_groups`); a layer of
width 0 appends zeros, which is what the layer with every channel closed
computes, so masked and compressed networks agree exactly.
`stages` alternates dense blocks and transitions: stages.0, .2, .4 are the blocks.
"""
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from archfamily.families import ChannelGroup
from archfamily.models.classifier_net import ClassifierNet, inner_group
from archfamily.specs import BlockPlan, DenseNetBCSpec


class DenseLayer(nn.Module):
    __constants__ = ["has_branch"]  # a constant, so TorchScript drops the branch a layer lacks

    def __init__(self, plan: BlockPlan, drop_path: float = 0.0) -> None:
        super().__init__()
        (mid,) = plan.inner
        self.growth, self.has_branch = plan.cout, plan.has_branch
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()  # drops the layer's new features
        if self.has_branch:
            self.norm1 = nn.BatchNorm2d(plan.cin)
            self.conv1 = nn.Conv2d(plan.cin, mid, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(mid)
            self.conv2 = nn.Conv2d(mid, plan.cout, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_branch:
            return torch.cat([x, x.new_zeros(x.shape[0], self.growth, x.shape[2], x.shape[3])], 1)
        return torch.cat([x, self.drop_path(self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x)))))))], 1)


class Transition(nn.Sequential):
    """BN -> ReLU -> conv1x1 (compressing) -> 2x2 average pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2)


class DenseNetBC(ClassifierNet):
    """DenseNet-BC for 32x32 inputs, built from a `DenseNetBCSpec`."""

    def _build_body(self, spec: DenseNetBCSpec) -> int:
        self.stem = nn.Conv2d(spec.in_chans, spec.stem_channels, 3, 1, 1, bias=False)
        plans = spec.blocks()
        stages: list[nn.Module] = []
        self.feature_info = [dict(num_chs=spec.stem_channels, reduction=1, module="stem")]
        rates = iter(self._drop_path_rates(sum(len(stage) for stage in plans)))
        for s, stage in enumerate(plans):
            stages.append(nn.Sequential(*[DenseLayer(plan, next(rates)) for plan in stage]))
            self.feature_info.append(dict(num_chs=spec.stage_out(stage), reduction=2**s, module=f"stages.{2 * s}"))
            if s + 1 < len(plans):
                stages.append(Transition(spec.stage_out(stage), plans[s + 1][0].cin))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(spec.stage_out(plans[-1]))
        return spec.stage_out(plans[-1])

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(x))

    def channel_groups(self) -> dict[int, ChannelGroup]:
        """Each dense layer's bottleneck channels (by layer, the spec's prunable width order): made by conv1,
        normalised by norm2, read by conv2."""
        layers = [(f"stages.{s}.{n}", layer) for s in range(0, len(self.stages), 2)
                  for n, layer in enumerate(self.stages[s])]
        return {index: inner_group(name, layer.conv1.out_channels, "conv1", "norm2", "conv2")
                for index, (name, layer) in enumerate(layers) if layer.has_branch}
