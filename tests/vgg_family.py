"""A fourth base family in one module, registered the way a plug-in registers one: a plain VGG-style CIFAR net.

Every 3x3 convolution but the last of the network is a prunable group (conv -> BN -> ReLU -> gate -> the next
conv); a max-pool halves the map before every stage after the first; a 1x1 convolution of `out_width` channels
feeds the head. Registered (`register_family(VGG_FAMILY)`, which a plug-in does when it is imported; the tests do it
in a fixture, so that the other tests see the built-in families alone), base names `vgg-N-W` (N convolutions in 3
stages, width W in the first stage and doubling) work for `derive --base`, `scale`, `export` and timm's
`archfamily_vgg` as the built-in families' do.
"""
import math
import re
from dataclasses import dataclass, replace
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from archfamily.models.classifier_net import ClassifierNet
from archfamily.families import ChannelGroup, Place
from archfamily.specs import FamilyType


@dataclass(frozen=True)
class VGGSpec:
    """Conv widths per stage (`widths[s][i]`), the last convolution's width and the classes."""

    family: ClassVar[str] = "vgg"
    input_size: ClassVar[int] = 32
    widths: tuple[tuple[int, ...], ...]
    out_width: int = 64
    num_classes: int = 10
    in_chans: int = 3

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return tuple(stage[-1] for stage in self.widths)

    def _layers(self, side: int) -> list[tuple[int, int, int]]:
        """(in channels, out channels, map side) of every 3x3 conv, in order, for `side`x`side` inputs."""
        layers, cin = [], self.in_chans
        for s, stage in enumerate(self.widths):
            side = side if s == 0 else math.ceil(side / 2)
            for w in stage:
                layers.append((cin, w, side))
                cin = w
        return layers

    def num_params(self) -> int:
        convs = sum(9 * cin * cout + 2 * cout for cin, cout, _ in self._layers(self.input_size))
        last = self.widths[-1][-1]
        return convs + last * self.out_width + 2 * self.out_width + self.out_width * self.num_classes + self.num_classes

    def num_macs(self, input_size: Optional[int] = None) -> int:
        layers = self._layers(input_size or self.input_size)
        side = layers[-1][2]
        return (sum(9 * cin * cout * s * s for cin, cout, s in layers) + self.widths[-1][-1] * self.out_width * side * side
                + self.out_width * self.num_classes)

    def prunable_widths(self) -> list[int]:
        return [w for stage in self.widths for w in stage]

    def with_prunable_widths(self, widths: list[int]) -> "VGGSpec":
        it = iter(widths)
        return replace(self, widths=tuple(tuple(next(it) for _ in stage) for stage in self.widths))

    def prunable_stages(self) -> list[int]:
        return [s for s, stage in enumerate(self.widths) for _ in stage]

    def block_counts(self) -> list[int]:
        return [len(stage) for stage in self.widths]

    def with_block_counts(self, counts: list[int]) -> "VGGSpec":
        return replace(self, widths=tuple(tuple(stage[min(i, len(stage) - 1)] for i in range(n))
                                          for stage, n in zip(self.widths, counts)))

    def scaled(self, outer: float, inner: list[float], round_to: int = 1) -> "VGGSpec":
        def rounded(w: float) -> int:
            return max(round_to, int(round(w / round_to)) * round_to)

        return replace(self, out_width=rounded(outer * self.out_width)).with_prunable_widths(
            [rounded(w) for w in inner])


class ConvLayer(nn.Module):
    """conv3x3 -> BN -> ReLU: one prunable group's producer and norm."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class VGG(ClassifierNet):
    """VGG-style CIFAR net built from a `VGGSpec`."""

    def _build_body(self, spec: VGGSpec) -> int:
        self.stem = nn.Identity()
        stages, cin = [], spec.in_chans
        for s, stage in enumerate(spec.widths):
            layers: list[nn.Module] = [nn.MaxPool2d(2, ceil_mode=True)] if s else []
            for w in stage:
                layers.append(ConvLayer(cin, w))
                cin = w
            stages.append(nn.Sequential(*layers))
        stages.append(nn.Sequential(nn.Conv2d(cin, spec.out_width, 1, bias=False), nn.BatchNorm2d(spec.out_width),
                                    nn.ReLU()))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=spec.in_chans, reduction=1, module="stem")] + [
            dict(num_chs=w, reduction=2**s, module=f"stages.{s}") for s, w in enumerate(spec.stage_widths)]
        return spec.out_width

    def channel_groups(self) -> dict[int, ChannelGroup]:
        """Each conv layer's outputs: made by its conv, normalised by its norm, read by the next conv. A plain
        chain has no shortcut, so a group keeps at least one channel (not closable)."""
        layers = [name for name, m in self.named_modules() if isinstance(m, ConvLayer)]
        readers = [f"{name}.conv" for name in layers[1:]] + [f"stages.{len(self.stages) - 1}.0"]
        groups = {}
        for i, (name, reader) in enumerate(zip(layers, readers)):
            width = self.get_submodule(name).conv.out_channels
            places = (Place(f"{name}.conv", "out", width), Place(f"{name}.norm", "out", width), Place(reader, "in", width))
            groups[i] = ChannelGroup(f"{name}.conv", width, places, inner=True)
        return groups


def _vgg_base(match: "re.Match[str]", num_classes: int) -> VGGSpec:
    convs, width = int(match[1]), int(match[2])
    per_stage = [convs // 3 + (1 if s < convs % 3 else 0) for s in range(3)]
    return VGGSpec(widths=tuple(tuple([width * 2**s] * n) for s, n in enumerate(per_stage)), out_width=4 * width,
                   num_classes=num_classes)


VGG_FAMILY = FamilyType(
    name="vgg", spec=VGGSpec, model=f"{__name__}:VGG", bases=((r"vgg-(\d+)-(\d+)", _vgg_base),),
    default_base="vgg-6-16", width_rows=("widths",), first_conv="stages.0.0.conv", feature_indices=(1, 2, 3))


def register() -> None:
    """The plug-in's entry point (`archfamily.plugins`): what a package that ships this family would declare."""
    from archfamily.specs import register_family

    register_family(VGG_FAMILY)
