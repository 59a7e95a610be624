"""What one channel of each group of a timm CNN costs: the parameters or MACs the network loses when that group
loses one channel, at the member's current widths (what `fisher-cost` and `fisher-penalty` weigh saliency by).

Counting the whole member again for every group would build it once per group per prune (about 0.1-0.2 s each
for mobilenetv2_050's 25 groups: seconds per prune). A channel's cost lives in the layers its group occupies, so
this counts those layers alone, from what each is in the base (its type, kernel, grouping, and how many output
positions it computes per image, read off one forward pass on the meta device) and the widths of every group
that sizes it. `TimmSpec.num_params` and `num_macs` (the whole network, counted by PyTorch) check it in the tests.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from archfamily.anycnn.groups import NORM_TYPES, ChannelGroup, is_depthwise
from archfamily.anycnn.rebuild import new_sizes
from archfamily.anycnn.spec import TimmSpec
from archfamily.errors import UserError

COSTS = ("params", "macs")  # a channel's latency would need a latency model of any timm network: not yet


@dataclass(frozen=True)
class _Layer:
    """A layer some group occupies, as the base has it."""

    kind: str  # conv, depthwise, linear, norm or param
    out: int  # output channels (or features; a norm's or parameter's channels)
    inp: int  # input channels (or features); a norm's or parameter's: 0
    per_weight: int  # a conv's kernel area; a norm's or parameter's values per channel; a linear's 1
    group_width: int  # a grouped conv's input channels per group; otherwise 0
    bias: bool
    positions: int  # output positions per image (a conv's H*W; a linear's rows per image); a norm's: 0


def _params(layer: _Layer, out: int, inp: int) -> int:
    if layer.kind in ("norm", "param"):
        return layer.per_weight * out
    if layer.kind == "depthwise":
        return out * layer.per_weight + layer.bias * out
    fan_in = layer.group_width if layer.group_width else inp
    return out * fan_in * layer.per_weight + layer.bias * out


def _macs(layer: _Layer, out: int, inp: int) -> int:
    """What `torch.utils.flop_counter` counts (halved): a conv's or linear's weights times its output positions;
    norms and parameters outside layers count nothing."""
    if layer.kind in ("norm", "param"):
        return 0
    return (_params(layer, out, inp) - layer.bias * out) * layer.positions


@functools.lru_cache(maxsize=16)
def _layers(spec_base: TimmSpec) -> dict[str, _Layer]:
    """Every layer a group of the base occupies, with its output positions per image at the base's input."""
    with torch.device("meta"):
        model = spec_base.build().eval()
    names = {module for g in spec_base.groups for module in {p.module for p in g.places}}
    positions: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if name in names and isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(
                lambda m, i, out, name=name: positions.__setitem__(name, out.numel() // out.shape[0] // (
                    out.shape[1] if isinstance(m, nn.Conv2d) else out.shape[-1]))))
    with torch.no_grad():
        model(torch.empty(1, spec_base.in_chans, spec_base.input_size, spec_base.input_size, device="meta"))
    for hook in hooks:
        hook.remove()
    layers = {}
    for name in names:
        layers[name] = _describe(model, name, positions.get(name, 0))
    return layers


def _describe(model: nn.Module, name: str, positions: int) -> _Layer:
    try:
        layer = model.get_submodule(name)
    except AttributeError:  # a parameter outside any layer (ConvNeXt's layer scale)
        owner, _, key = name.rpartition(".")
        tensor = getattr(model.get_submodule(owner), key)
        return _Layer("param", tensor.shape[0], 0, tensor.numel() // tensor.shape[0], 0, False, 0)
    if isinstance(layer, nn.Conv2d):
        area = math.prod(layer.kernel_size)
        if is_depthwise(layer):
            return _Layer("depthwise", layer.out_channels, layer.in_channels, area, 0, layer.bias is not None,
                          positions)
        width = layer.in_channels // layer.groups if layer.groups > 1 else 0
        return _Layer("conv", layer.out_channels, layer.in_channels, area, width, layer.bias is not None, positions)
    if isinstance(layer, nn.Linear):
        return _Layer("linear", layer.out_features, layer.in_features, 1, 0, layer.bias is not None, positions)
    if isinstance(layer, NORM_TYPES):
        channels = layer.normalized_shape[0] if isinstance(layer, nn.LayerNorm) else (
            layer.num_channels if isinstance(layer, nn.GroupNorm) else layer.num_features)
        own = sum(p.numel() for p in layer.parameters(recurse=False))
        return _Layer("norm", channels, 0, own // channels, 0, False, 0)
    raise UserError(f"{name}: archfamily cannot count a layer of type {type(layer).__name__}")


def channel_costs(member: TimmSpec, groups: Sequence[int], cost: str) -> dict[int, float]:
    """For each group index in `groups`: the `cost` (params or macs) the network `member` saves when that group
    loses one channel."""
    if cost not in COSTS:
        raise UserError(f"--cost {cost} is not available for a timm base; choose from {', '.join(COSTS)}")
    base = TimmSpec.of_base(member.base, member.num_classes, member.in_chans, member.input_size, member.model_kwargs)
    layers = _layers(base)
    count = _params if cost == "params" else _macs
    sizes = _sizes(base.groups, member.widths, layers)
    costs = {}
    for i in groups:
        group = base.groups[i]
        saved = 0
        for module in {p.module for p in group.places}:
            layer = layers[module]
            out, inp = sizes[module]
            d_out, d_in = _per_channel(group, module, layer)
            saved += count(layer, out, inp) - count(layer, out - d_out, inp - d_in)
        costs[i] = float(saved)
    return costs


def _per_channel(group: ChannelGroup, module: str, layer: _Layer) -> tuple[int, int]:
    """How many of `module`'s outputs and inputs one channel of `group` is (a flatten spreads one over several),
    combined as `_sizes` combines a layer's changes."""
    d_out = sum(p.count // group.width for p in group.places if p.module == module and p.dim in ("out", "param"))
    d_in = sum(p.count // group.width for p in group.places if p.module == module and p.dim == "in")
    return _combined(layer, d_out, d_in)


def _combined(layer: _Layer, d_out: int, d_in: int) -> tuple[int, int]:
    """A layer's change in outputs and inputs as `rebuild` applies it: a depthwise convolution's two sides move
    together (Torch-Pruning records one), a norm's or parameter's channels are whichever side holds them."""
    if layer.kind == "depthwise":
        return (d_out or d_in,) * 2
    if layer.kind in ("norm", "param"):
        return (d_out + d_in,) * 2
    return d_out, d_in


def _sizes(groups: Sequence[ChannelGroup], widths: Sequence[int], layers: dict[str, _Layer]) -> dict[str, tuple[int, int]]:
    """Each occupied layer's (outputs, inputs) at `widths`: the base's, changed as `rebuild` resizes it."""
    change = new_sizes(groups, widths)
    sizes = {}
    for name, layer in layers.items():
        d_out, d_in = _combined(layer, change.get((name, "out"), 0) + change.get((name, "param"), 0),
                                change.get((name, "in"), 0))
        sizes[name] = (layer.out + d_out, layer.inp + d_in)
    return sizes
