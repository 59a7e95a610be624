"""What one channel of a prune group costs, for cost-aware Fisher pruning.

A channel of a group costs its producing filter, its two BN parameters and its
slice of the consuming conv. Fan-ins and fan-outs that are themselves gated (the
inner convs of a bottleneck) count only their open channels, so costs follow the
network as it shrinks. MACs multiply each conv's share by its output area.
Latency asks the per-device latency model what closing the group's channels saves.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from archfamily.models.gates import PruneGroup
from archfamily.specs import ArchSpec

if TYPE_CHECKING:
    from archfamily.latency.model import LatencyModel

LATENCY_WINDOW = 8  # channels over which a latency cost is averaged: one SIMD block on CPUs


def conv_output_areas(model: nn.Module, groups: list[PruneGroup], input_size: int, in_chans: int) -> dict[int, int]:
    """Output H*W of every producer and consumer conv, from one eval-mode forward pass."""
    areas: dict[int, int] = {}
    convs = {id(c): c for g in groups for c in (g.producer, g.consumer)}
    handles = [
        c.register_forward_hook(lambda m, i, o: areas.__setitem__(id(m), o.shape[-2] * o.shape[-1]))
        for c in convs.values()
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, input_size, input_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return areas


def channel_costs(groups: list[PruneGroup], areas: dict[int, int], kind: str) -> list[float]:
    """Cost of one open channel of each group, in parameters or MACs (`kind`)."""
    by_consumer = {id(g.consumer): g for g in groups}
    by_producer = {id(g.producer): g for g in groups}
    costs = []
    for g in groups:
        feeder, reader = by_consumer.get(id(g.producer)), by_producer.get(id(g.consumer))
        fan_in = feeder.gate.num_open if feeder else g.producer.in_channels
        fan_out = reader.gate.num_open if reader else g.consumer.out_channels
        k_in = g.producer.kernel_size[0] * g.producer.kernel_size[1]
        k_out = g.consumer.kernel_size[0] * g.consumer.kernel_size[1]
        if kind == "params":
            costs.append(float(fan_in * k_in + 2 + fan_out * k_out))
        else:
            costs.append(float(fan_in * k_in * areas[id(g.producer)] + fan_out * k_out * areas[id(g.consumer)]))
    return costs


def latency_costs(spec: ArchSpec, groups: list[PruneGroup], model: "LatencyModel",
                  window: int = LATENCY_WINDOW) -> list[float]:
    """Cost of one open channel of each group in predicted milliseconds: what closing the group's next `window`
    channels (all that are open, when fewer) saves, per channel. `spec` is the network the gates compute now.

    One channel's saving alone is not a usable cost: CPU kernels work in blocks of 8 or 16 channels, so closing
    one channel of 32 can make a layer slower (0.11 ms at 32 channels, 0.14 ms at 33, for a 3x3 conv at 32x32
    on oneDNN) and the cost would be negative. Averaged over a block it is what pruning there buys. A cost the
    model still finds non-positive is raised to 1% of the median positive one, so Fisher / cost stays finite.
    """
    widths = list(spec.prunable_widths())
    now = model.predict(spec)
    costs = []
    for g in groups:
        step = min(window, widths[g.index])
        if step == 0:
            costs.append(float("inf"))  # nothing open: the pruner skips a closed group's channels anyway
            continue
        fewer = list(widths)
        fewer[g.index] -= step
        costs.append((now - model.predict(spec.with_prunable_widths(fewer))) / step)
    positive = sorted(c for c in costs if 0 < c < float("inf"))
    floor = 0.01 * positive[len(positive) // 2] if positive else 1e-6
    return [max(c, floor) for c in costs]
