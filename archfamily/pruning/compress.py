"""Physically remove gated-off channels: masked model -> (smaller spec, dense smaller model)."""
from __future__ import annotations

import torch
from torch import nn

from archfamily.models import build_model
from archfamily.specs import ArchSpec

_NORM_KEYS = ("weight", "bias", "running_mean", "running_var")


def pruned_spec(model: nn.Module) -> ArchSpec:
    """The spec of the network that a gated model computes: its open channels per group."""
    widths = [0] * len(model.spec.prunable_widths())
    for g in model.prune_groups():
        widths[g.index] = g.gate.num_open
    return model.spec.with_prunable_widths(widths)


def compress(model: nn.Module) -> tuple[ArchSpec, nn.Module]:
    """The dense network that computes what `model` computes with its current masks.

    Each group keeps its open channels: rows of the producing conv and of the BN,
    input columns of the consuming conv. The result is built from its own spec, so
    the spec alone rebuilds it.
    """
    groups = model.prune_groups()
    names = {id(m): n for n, m in model.named_modules()}
    slices: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for g in groups:
        keep = g.gate.mask.nonzero().flatten()
        slices.setdefault(f"{names[id(g.producer)]}.weight", []).append((0, keep))
        slices.setdefault(f"{names[id(g.consumer)]}.weight", []).append((1, keep))
        for key in _NORM_KEYS:
            slices.setdefault(f"{names[id(g.norm)]}.{key}", []).append((0, keep))
    spec = pruned_spec(model)
    small = build_model(spec).to(next(model.parameters()).device)
    old = model.state_dict()
    new = {}
    for key in small.state_dict():
        tensor = old[key]
        for dim, keep in slices.get(key, []):
            tensor = tensor.index_select(dim, keep.to(tensor.device))
        new[key] = tensor.clone()
    small.load_state_dict(new)
    small.train(model.training)
    return spec, small
