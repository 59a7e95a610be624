"""`ClassifierNet`: the base class of the three families, with the timm model API they share.

As in timm's `resnet.py`: `forward_features` returns the unpooled feature map,
`forward_head` pools, applies dropout and the classifier, `reset_classifier` swaps
the classifier (0 classes gives an identity, `global_pool=''` no pooling), and
`forward_intermediates` returns the feature maps `feature_info` lists (the stem and
each stage). `set_grad_checkpointing` recomputes each stage in the backward pass
instead of keeping its activations; `drop_path_rate` is stochastic depth on the
residual branches, rising linearly over the blocks. Every network is built from its
spec and keeps it as `model.spec`.

No `from __future__ import annotations` here or in the family modules: FX-traced
copies of these networks are compiled by TorchScript, which must read real types.
"""
from dataclasses import replace
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from torch import nn

from archfamily.families import ChannelGroup, Place

class ClassifierNet(nn.Module):
    """Base for the three families: the spec, the pooled linear head and the methods timm expects.

    The constructor takes timm's keywords once for every family; a family builds its body
    (`stem`, `stages`, `feature_info`) in `_build_body` and may override `forward_final`, what
    follows the last stage before pooling.
    """

    __jit_ignored_attributes__ = ["spec"]

    def __init__(self, spec: Any, num_classes: Optional[int] = None, in_chans: Optional[int] = None,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "avg") -> None:
        """timm passes `num_classes` and `in_chans` as keywords of their own; given, they replace the spec's."""
        super().__init__()
        changes = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans)) if v is not None}
        self.spec = replace(spec, **changes) if changes else spec
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.drop_path_rate = drop_path_rate
        self.grad_checkpointing = False
        num_features = self._build_body(self.spec)
        self.num_classes = self.spec.num_classes
        self.num_features = self.head_hidden_size = num_features
        self.drop_rate = drop_rate
        self.global_pool, self.fc = create_classifier(num_features, self.num_classes, pool_type=global_pool)
        _init_weights(self)

    def _build_body(self, spec: Any) -> int:
        """Build the stem, the stages and `feature_info`; returns the number of features the head pools."""
        raise NotImplementedError

    def channel_groups(self) -> dict[int, ChannelGroup]:
        """The channel group of each prunable width (by its index in `spec.prunable_widths()`; a width of 0 in
        this network has none): what pruning masks, scores and removes."""
        raise NotImplementedError

    def _drop_path_rates(self, blocks: int) -> list[float]:
        """Stochastic depth per block, rising linearly from 0 to `drop_path_rate` (as in timm)."""
        return [self.drop_path_rate * b / max(1, blocks - 1) for b in range(blocks)]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise lr decay: the stem, then each stage (coarse) or each block."""
        blocks = r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.(\d+)", None), (r"^stages\.(\d+)", None),
                                                    (r"^norm", (99999,))]
        return dict(stem=r"^stem", blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.spec = replace(self.spec, num_classes=num_classes)
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        """What follows the last stage before pooling (the pre-activation families' last norm and ReLU)."""
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.forward_final(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _feature_stages(self) -> list[int]:
        """Which children of `stages` end at a feature map `feature_info` lists."""
        names = {info["module"] for info in self.feature_info}
        return [i for i in range(len(self.stages)) if f"stages.{i}" in names]

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, list[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False
                              ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """The feature maps of `feature_info` (the stem, then each stage) at `indices`, as timm's ResNet gives them.

        `norm` is accepted for timm's API; these networks have no norm to apply to an intermediate.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be NCHW, got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        ends = self._feature_stages()
        intermediates = []
        x = self.stem(x)
        if 0 in take:
            intermediates.append(x)
        stop = len(self.stages)
        if stop_early:
            stop = ends[max_index - 1] + 1 if max_index > 0 else 0
        for i in range(stop):
            x = self.stages[i](x)
            if i in ends and ends.index(i) + 1 in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return self.forward_final(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, list[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last feature map `indices` asks for (and the head); returns those indices.

        `prune_norm` is accepted for timm's API: the final norm goes whenever its stage does.
        """
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        ends = self._feature_stages()
        keep = ends[max_index - 1] + 1 if max_index > 0 else 0
        if keep < len(self.stages) and isinstance(getattr(self, "norm", None), nn.BatchNorm2d):
            self.norm = nn.Identity()  # it normalised the last stage, which is gone
        self.stages = self.stages[:keep]
        if prune_head:
            self.reset_classifier(0, "")
        return take


def _init_weights(model: nn.Module) -> None:
    """He init for convs, unit BN, zero biases: the initialisation of the WRN/DenseNet papers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def inner_group(block: str, width: int, producer: str, norm: str, consumer: str, branch: str = "") -> ChannelGroup:
    """The channel group of a block's inner width: `producer` (a convolution of `block`) makes its channels, `norm`
    normalises them, `consumer` reads them. It may close entirely (the block is then its shortcut, or appends
    zeros); `branch` names the layer whose output is zeroed then, where the branch would still add a norm's bias."""
    places = (Place(f"{block}.{producer}", "out", width), Place(f"{block}.{norm}", "out", width),
              Place(f"{block}.{consumer}", "in", width))
    return ChannelGroup(f"{block}.{producer}", width, places, inner=True, closable=True,
                        branch=f"{block}.{branch}" if branch else "")
