"""Which traced channel groups can be resized safely: those the network still runs with, at half and at one and a
half times their width, giving logits of the same shape.

Torch-Pruning's trace is blind to what a module's own code does with channel counts it recorded at construction:
a ghost module slices its concatenation to `out_chs`, Res2Net splits by its `width`, a group may reach the
classifier's outputs (resizing it would change the number of classes). Such a group is left fixed (never
resized, never pruned: it is not one of the network's groups) rather than crash a rebuild later. Each try builds
nothing: the traced network is copied to the meta device and resized there; the groups are tried together, then
by halves down to the single groups that fail, so a network whose groups all resize costs two tries.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn

from archfamily.anycnn.rebuild import resize_layers
from archfamily.families import ChannelGroup

SCALES = (0.5, 1.5)  # the widths a group must resize to: below and above the base's


def _scaled(group: ChannelGroup, scale: float) -> int:
    return max(group.step, round(group.width * scale / group.step) * group.step)


def _runs(meta: nn.Module, x: torch.Tensor, shape: tuple[int, ...], groups: Sequence[ChannelGroup],
          chosen: set[int], scale: float) -> bool:
    """Whether `meta` (a copy of it) runs with the `chosen` groups resized by `scale`, giving logits of `shape` (a
    network without a classifier, `num_classes=0`, gives its features, whose width is a group's: only their number
    of dimensions must stay)."""
    model = copy.deepcopy(meta)
    widths = [_scaled(g, scale) if i in chosen else g.width for i, g in enumerate(groups)]
    try:
        resize_layers(model, groups, widths)
        with torch.no_grad():
            out = model(x)
    except Exception:  # any failure to resize or to run (shapes, negative sizes, a layer the rebuild does not know)
        return False
    headless = getattr(meta, "num_classes", None) == 0
    return isinstance(out, torch.Tensor) and (out.dim() == len(shape) if headless else tuple(out.shape) == shape)


def _failing(tries: Callable[[set[int]], bool], indices: list[int]) -> set[int]:
    """The single groups among `indices` that fail on their own, found by halving (a set that runs holds none)."""
    if not indices or tries(set(indices)):
        return set()
    if len(indices) == 1:
        return set(indices)
    half = len(indices) // 2
    return _failing(tries, indices[:half]) | _failing(tries, indices[half:])


def resizable_groups(model: nn.Module, groups: Sequence[ChannelGroup], input_size: int,
                     in_chans: int = 3) -> list[ChannelGroup]:
    """The groups of `model` (its traced base, on the CPU; left untouched) that resize safely, in their order.
    Where the base itself does not run on the meta device nothing can be tried, and every group is kept."""
    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.empty(1, in_chans, input_size, input_size, device="meta")
    try:
        with torch.no_grad():
            shape = tuple(meta(x).shape)
    except Exception:  # an operation without a meta kernel: the rebuild's own checks stand alone
        return list(groups)

    def tries(chosen: set[int]) -> bool:
        return all(_runs(meta, x, shape, groups, chosen, scale) for scale in SCALES)

    failing = _failing(tries, list(range(len(groups))))
    kept = [i for i in range(len(groups)) if i not in failing]
    while kept and not tries(set(kept)):  # groups that run alone but not together: keep them one by one
        together: list[int] = []
        for i in kept:
            if tries({*together, i}):
                together.append(i)
        kept = together
    return [groups[i] for i in kept]
