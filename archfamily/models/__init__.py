"""Build a network from its spec: `build_model(spec)`; `gated=True` adds channel gates for pruning. Also here:
measured counts of a built model (`counting`) and model files and resumable training state (`checkpoint`).

Floor 2: may import the helpers (the modules directly under `archfamily/`, `specs` among them) and nothing else.
"""
from __future__ import annotations

from torch import nn

from archfamily.models.classifier_net import ClassifierNet
from archfamily.models.densenet import DenseNetBC
from archfamily.models.gates import ChannelGate, PruneGroup
from archfamily.models.resnet import ResNet
from archfamily.models.wrn import WideResNet
from archfamily.specs import ArchSpec

MODEL_TYPES: dict[str, type[ClassifierNet]] = {"wrn": WideResNet, "densenet_bc": DenseNetBC, "resnet": ResNet}


def build_model(spec: ArchSpec, gated: bool = False) -> nn.Module:
    """The network a spec describes; its parameter count is `spec.num_params()` exactly."""
    return MODEL_TYPES[spec.family](spec, gated=gated)


__all__ = ["build_model", "ClassifierNet", "ChannelGate", "PruneGroup", "WideResNet", "DenseNetBC", "ResNet"]
