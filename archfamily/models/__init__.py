"""Build a network from its spec: `build_model(spec)`; `gated=True` adds channel gates for pruning."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from archfamily.models.densenet import DenseNetBC
from archfamily.models.gates import ChannelGate, PruneGroup
from archfamily.models.resnet import ResNet
from archfamily.models.wrn import WideResNet
from archfamily.specs import ArchSpec

MODEL_TYPES: dict[str, type[nn.Module]] = {"wrn": WideResNet, "densenet_bc": DenseNetBC, "resnet": ResNet}


def spec_kwargs(spec: ArchSpec) -> dict[str, Any]:
    """The spec as JSON-ready constructor arguments (timm's `model_args`)."""
    return {k: [list(r) if isinstance(r, tuple) else r for r in v] if isinstance(v, tuple) else v
            for k, v in asdict(spec).items()}


def build_model(spec: ArchSpec, gated: bool = False) -> nn.Module:
    """The network a spec describes; its parameter count is `spec.num_params()` exactly."""
    return MODEL_TYPES[spec.family](**spec_kwargs(spec), gated=gated)


__all__ = ["build_model", "spec_kwargs", "ChannelGate", "PruneGroup", "WideResNet", "DenseNetBC", "ResNet"]
