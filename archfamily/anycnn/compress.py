"""A masked timm CNN made smaller for real: Torch-Pruning removes each group's closed channels, weights and all.

The result is the network `TimmSpec(base, widths)` describes (the widths less the closed channels), with the
trained weights of the channels kept, so it can be saved and loaded into `TimmSpec.build()`'s network.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

from archfamily.families import ChannelGroup


def remove_channels(model: nn.Module, groups: Sequence[ChannelGroup], closed: dict[int, list[int]],
                    input_size: int, in_chans: int = 3) -> nn.Module:
    """`model` (on the CPU, unmasked: hooks removed) with `closed[i]`'s channels of `groups[i]` removed, in place."""
    import torch_pruning as tp

    with warnings.catch_warnings(), torch.enable_grad():  # Torch-Pruning traces through autograd
        warnings.simplefilter("ignore")  # its note on parameters outside layers
        graph = tp.DependencyGraph().build_dependency(
            model.eval(), example_inputs=torch.randn(1, in_chans, input_size, input_size))
    layers = dict(model.named_modules())
    for i, channels in sorted(closed.items()):
        if not channels:
            continue
        root = layers[groups[i].name]
        prune = tp.prune_conv_out_channels if isinstance(root, nn.Conv2d) else tp.prune_linear_out_channels
        graph.get_pruning_group(root, prune, idxs=sorted(channels)).prune()
    return model
