"""CIFAR DenseNet-BC (Huang et al. 2017) with prunable bottleneck widths.

Each dense layer is BN -> ReLU -> conv1x1 -> BN -> ReLU -> [gate] -> conv3x3 and
appends `growth` channels. Its bottleneck width (4k by default) is
`bottleneck_widths[s][l]`; a layer of width 0 appends zeros, which is what the
fully gated layer computes, so masked and compressed networks agree exactly.
`stages` alternates dense blocks and transitions: stages.0, .2, .4 are the blocks.
"""
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from archfamily.models.classifier_net import ClassifierNet
from archfamily.models.gates import PruneGroup, make_gate
from archfamily.specs import BlockPlan, DenseNetBCSpec


class DenseLayer(nn.Module):
    __constants__ = ["has_branch"]  # a constant, so TorchScript drops the branch a layer lacks

    def __init__(self, plan: BlockPlan, gated: bool, drop_path: float = 0.0) -> None:
        super().__init__()
        (mid,) = plan.inner
        self.growth, self.has_branch = plan.cout, plan.has_branch
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()  # drops the layer's new features
        if self.has_branch:
            self.norm1 = nn.BatchNorm2d(plan.cin)
            self.conv1 = nn.Conv2d(plan.cin, mid, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(mid)
            self.gate = make_gate(mid, gated)
            self.conv2 = nn.Conv2d(mid, plan.cout, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_branch:
            return torch.cat([x, x.new_zeros(x.shape[0], self.growth, x.shape[2], x.shape[3])], 1)
        return torch.cat([x, self.drop_path(self.conv2(self.gate(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))))], 1)


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

    def _build_body(self, spec: DenseNetBCSpec, gated: bool) -> int:
        self.stem = nn.Conv2d(spec.in_chans, spec.stem_channels, 3, 1, 1, bias=False)
        plans = spec.blocks()
        stages: list[nn.Module] = []
        self.feature_info = [dict(num_chs=spec.stem_channels, reduction=1, module="stem")]
        rates = iter(self._drop_path_rates(sum(len(stage) for stage in plans)))
        for s, stage in enumerate(plans):
            stages.append(nn.Sequential(*[DenseLayer(plan, gated, next(rates)) for plan in stage]))
            self.feature_info.append(dict(num_chs=spec.stage_out(stage), reduction=2**s, module=f"stages.{2 * s}"))
            if s + 1 < len(plans):
                stages.append(Transition(spec.stage_out(stage), plans[s + 1][0].cin))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(spec.stage_out(plans[-1]))
        return spec.stage_out(plans[-1])

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(x))

    def prune_groups(self) -> list[PruneGroup]:
        layers = [layer for stage in self.stages[::2] for layer in stage]
        return [PruneGroup(index, layer.gate, layer.conv1, layer.norm2, layer.conv2)
                for index, layer in enumerate(layers) if layer.has_branch]
