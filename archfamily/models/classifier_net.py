"""`ClassifierNet`: the base class of the three families, with the timm model API they share.

As in timm's `resnet.py`: `forward_features` returns the unpooled feature map,
`forward_head` pools, applies dropout and the classifier, and `reset_classifier`
swaps the classifier (0 classes gives an identity, `global_pool=''` no pooling).
Every network is built from its spec and keeps it as `model.spec`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from torch import nn


class ClassifierNet(nn.Module):
    """Base for the three families: the spec, the pooled linear head and the methods timm expects.

    The constructor takes timm's keywords once for every family; a family builds its body in `_build_body`
    and defines `forward_features` and `prune_groups`.
    """

    __jit_ignored_attributes__ = ["spec"]

    def __init__(self, spec: Any, num_classes: Optional[int] = None, in_chans: Optional[int] = None,
                 drop_rate: float = 0.0, global_pool: str = "avg", gated: bool = False) -> None:
        """timm passes `num_classes` and `in_chans` as keywords of their own; given, they replace the spec's.
        `gated` puts a channel gate on every prunable group, for pruning."""
        super().__init__()
        changes = {k: v for k, v in (("num_classes", num_classes), ("in_chans", in_chans)) if v is not None}
        self.spec = replace(spec, **changes) if changes else spec
        num_features = self._build_body(self.spec, gated)
        self.num_classes = self.spec.num_classes
        self.num_features = self.head_hidden_size = num_features
        self.drop_rate = drop_rate
        self.global_pool, self.fc = create_classifier(num_features, self.num_classes, pool_type=global_pool)
        _init_weights(self)

    def _build_body(self, spec: Any, gated: bool) -> int:
        """Build the stem, the stages and `feature_info`; returns the number of features the head pools."""
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.spec = replace(self.spec, num_classes=num_classes)
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


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
