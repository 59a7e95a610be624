"""The classifier head and the timm model API that every archfamily network shares.

As in timm's `resnet.py`: `forward_features` returns the unpooled feature map,
`forward_head` pools, applies dropout and the classifier, and `reset_classifier`
swaps the classifier (0 classes gives an identity, `global_pool=''` no pooling).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from torch import nn


class ClassifierNet(nn.Module):
    """Base for the three families: the pooled linear head and the methods timm expects.

    Subclasses define `forward_features` and a `spec` property.
    """

    __jit_unused_properties__ = ["spec"]

    def _init_head(self, num_features: int, num_classes: int, global_pool: str, drop_rate: float) -> None:
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = num_features
        self.drop_rate = drop_rate
        self.global_pool, self.fc = create_classifier(num_features, num_classes, pool_type=global_pool)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
