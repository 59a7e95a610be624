"""What one channel of a group costs, for cost-aware Fisher pruning, as a difference of two members' costs.

A channel's cost is what the network loses with it: the member's params (or MACs) less those of the member with
one channel fewer in that group. The specs count without building a network (the built-in families analytically,
a timm member from its base's count table, `anycnn.table`), so costs follow the network as it shrinks wherever
the channel's effect reaches (a closed branch's norm, a concatenation's readers). Latency asks the per-device
latency model what closing the group's next channels saves.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from archfamily.specs import ArchSpec

if TYPE_CHECKING:
    from archfamily.latency.model import LatencyModel

LATENCY_WINDOW = 8  # channels over which a latency cost is averaged: one SIMD block on CPUs


def _count(spec: ArchSpec, cost: str) -> int:
    return spec.num_params() if cost == "params" else spec.num_macs()


def count_costs(member: ArchSpec, indices: Sequence[int], cost: str, least: int) -> dict[int, float]:
    """For each prunable width index in `indices`: the params or MACs (`cost`) `member` saves with one channel
    fewer there. A width at `least` (the fewest its group may keep) costs what its next channel would add."""
    widths = list(member.prunable_widths())
    now = _count(member, cost)
    costs = {}
    for i in indices:
        other = list(widths)
        other[i] += -1 if widths[i] > least else 1
        costs[i] = float(abs(now - _count(member.with_prunable_widths(other), cost)))
    return costs


def latency_costs(spec: ArchSpec, indices: Sequence[int], model: "LatencyModel", window: int = LATENCY_WINDOW,
                  least: int = 0) -> dict[int, float]:
    """Cost of one open channel of each group in predicted milliseconds: what closing the group's next `window`
    channels (all it may close, when fewer: it keeps `least`) saves, per channel. `spec` is the network the masks
    compute now.

    One channel's saving alone is not a usable cost: CPU kernels work in blocks of 8 or 16 channels, so closing
    one channel of 32 can make a layer slower (0.11 ms at 32 channels, 0.14 ms at 33, for a 3x3 conv at 32x32
    on oneDNN) and the cost would be negative. Averaged over a block it is what pruning there buys. A cost the
    model still finds non-positive is raised to 1% of the median positive one, so Fisher / cost stays finite.
    """
    widths = list(spec.prunable_widths())
    now = model.predict(spec)
    costs = {}
    for i in indices:
        step = min(window, widths[i] - least)
        if step <= 0:
            costs[i] = float("inf")  # nothing it may close: the run skips the group's channels anyway
            continue
        fewer = list(widths)
        fewer[i] -= step
        costs[i] = (now - model.predict(spec.with_prunable_widths(fewer))) / step
    positive = sorted(c for c in costs.values() if 0 < c < float("inf"))
    floor = 0.01 * positive[len(positive) // 2] if positive else 1e-6
    return {i: max(c, floor) for i, c in costs.items()}
