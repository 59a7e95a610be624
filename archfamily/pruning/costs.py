"""What one channel of a prune group costs, for cost-aware Fisher pruning.

A channel of a group costs its producing filter, its two BN parameters and its
slice of the consuming conv. Fan-ins and fan-outs that are themselves gated (the
inner convs of a bottleneck) count only their open channels, so costs follow the
network as it shrinks. MACs multiply each conv's share by its output area.
"""
from __future__ import annotations

import torch
from torch import nn

from archfamily.models.gates import PruneGroup


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
