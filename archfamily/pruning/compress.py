"""A masked network made smaller for real: each group's closed channels removed, weights and all.

The result is the member's network, the one its spec alone builds, with the trained weights of the channels kept
(so it saves and loads as any model file). For archfamily's own families the member is built from its spec and
each tensor is the base's, sliced to the open channels of every group at every place it occupies; a branch that
closed entirely is absent from the member, and its tensors with it. For a timm base, whose groups reach through
concatenations and flattens, Torch-Pruning removes the closed channels through its dependency graph
(`anycnn.compress`) and the network's recorded sizes are refreshed.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import torch
from torch import nn

from archfamily.anycnn.compress import remove_channels
from archfamily.anycnn.rebuild import refresh_sizes
from archfamily.families import ChannelGroup
from archfamily.models import build_model
from archfamily.specs import ArchSpec


def compress(base: ArchSpec, model: nn.Module, groups: Mapping[int, ChannelGroup], closed: Mapping[int, list[int]],
             member: ArchSpec) -> nn.Module:
    """`model` (the network of `base`, masked) as the dense network of `member`, on the CPU, in eval mode; `closed`
    lists each group's closed channels. The model itself is untouched."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if hasattr(base, "groups"):  # a traced timm base
        small = base.build()
        small.load_state_dict(state)
        remove_channels(small, base.groups, dict(closed), base.input_size, base.in_chans)
        small = refresh_sizes(small, member.base, member.input_size, member.in_chans)
        small.spec = member
        return small.eval()
    small = build_model(member)
    slices = _slices(model, groups, closed)
    kept = {}
    for key in small.state_dict():
        tensor = state[key]
        for dim, keep in slices.get(key, []):
            tensor = tensor.index_select(dim, keep)
        kept[key] = tensor.clone()
    small.load_state_dict(kept)
    return small.eval()


def _slices(model: nn.Module, groups: Mapping[int, ChannelGroup],
            closed: Mapping[int, list[int]]) -> dict[str, list[tuple[int, torch.Tensor]]]:
    """Tensor name -> the (dimension, channels kept) selections each group's closed channels make of it: a place's
    output channels are its tensors' first dimension (weights, biases, a norm's statistics), its input channels a
    convolution's or linear layer's second."""
    slices: dict[str, list[tuple[int, torch.Tensor]]] = defaultdict(list)
    for i, group in groups.items():
        shut = set(closed.get(i, ()))
        if not shut:
            continue
        keep = torch.tensor([c for c in range(group.width) if c not in shut], dtype=torch.long)
        for place in group.places:
            layer = model.get_submodule(place.module)
            dim = 1 if place.dim == "in" else 0
            for name, tensor in [*layer.named_parameters(recurse=False), *layer.named_buffers(recurse=False)]:
                if tensor.dim() > dim and not (dim == 1 and name == "bias"):
                    slices[f"{place.module}.{name}"].append((dim, keep + place.start))
    return slices
