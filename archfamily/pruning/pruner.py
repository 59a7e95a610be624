"""The pruning loop's decision: close the k least salient open channels, globally."""
from __future__ import annotations

import torch
from torch import nn

from archfamily.errors import UserError
from archfamily.pruning.costs import channel_costs, conv_output_areas
from archfamily.pruning.saliency import FisherAccumulator, l1_saliency, random_saliency

METHODS = ("fisher", "fisher-cost", "l1", "random")
COSTS = ("params", "macs")


def check_method(method: str, cost: str) -> None:
    """One-line errors for an unknown saliency method or channel cost."""
    if method not in METHODS:
        raise UserError(f"unknown pruning method {method!r}; choose from {', '.join(METHODS)}")
    if cost not in COSTS:
        raise UserError(f"unknown cost {cost!r}; choose from {', '.join(COSTS)}")


class Pruner:
    """Ranks every open channel of a gated model by one method and closes the lowest.

    `fisher` is the paper's default. `fisher-cost` divides Delta by what the
    channel costs (`cost`: parameters or MACs), preferring to drop expensive
    channels. Saliency is compared across all layers at once (global pruning).
    """

    def __init__(self, model: nn.Module, method: str = "fisher", cost: str = "params", seed: int = 0) -> None:
        check_method(method, cost)
        self.model, self.method, self.cost, self.seed = model, method, cost, seed
        self.groups = model.prune_groups()
        self.fisher = FisherAccumulator(self.groups) if method.startswith("fisher") else None
        spec = model.spec
        self._areas = conv_output_areas(model, self.groups, spec.input_size, spec.in_chans) if method == "fisher-cost" else {}
        self.num_prunes = 0

    def scores(self) -> list[torch.Tensor]:
        """Per-group saliency of every channel (lower is pruned first)."""
        if self.method == "l1":
            return l1_saliency(self.groups)
        if self.method == "random":
            return random_saliency(self.groups, self.seed, self.num_prunes)
        scores = self.fisher.saliency()
        if self.method == "fisher-cost":
            costs = channel_costs(self.groups, self._areas, self.cost)
            scores = [s / c for s, c in zip(scores, costs)]
        return scores

    def open_channels(self) -> int:
        return sum(g.gate.num_open for g in self.groups)

    def prune(self, k: int = 1) -> list[tuple[int, int]]:
        """Close the k lowest-scoring open channels; returns (spec width index, channel) pairs."""
        scores = self.scores()
        flat = torch.cat(scores).clone()
        open_mask = torch.cat([g.gate.mask.detach().cpu() > 0 for g in self.groups])
        flat[~open_mask] = float("inf")
        k = min(k, int(open_mask.sum()))
        order = torch.sort(flat, stable=True).indices[:k].tolist()
        offsets, start = [], 0
        for s in scores:
            offsets.append(start)
            start += s.numel()
        closed = []
        for pos in order:
            gi = max(i for i, o in enumerate(offsets) if o <= pos)
            channel = pos - offsets[gi]
            self.groups[gi].gate.mask[channel] = 0.0
            closed.append((self.groups[gi].index, channel))
        if self.fisher is not None:
            self.fisher.reset()
        self.num_prunes += 1
        return closed

    def remove_hooks(self) -> None:
        if self.fisher is not None:
            self.fisher.remove()
