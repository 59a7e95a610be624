"""The pruning loop's decision: close the k least salient open channels, globally."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from archfamily.errors import SettingError, UserError
from archfamily.pruning.compress import pruned_spec
from archfamily.pruning.costs import channel_costs, conv_output_areas, latency_costs
from archfamily.pruning.criteria import CRITERIA, cost_weighing

if TYPE_CHECKING:
    from archfamily.latency.model import LatencyModel

COSTS = ("params", "macs", "latency")


def check_method(method: str, cost: str) -> None:
    """One-line errors for an unknown saliency method or channel cost, or a cost no method weighs."""
    if method not in CRITERIA:
        raise UserError(f"unknown pruning method {method!r}; choose from {', '.join(CRITERIA)}")
    if cost not in COSTS:
        raise UserError(f"unknown cost {cost!r}; choose from {', '.join(COSTS)}")
    if cost == "latency" and method not in cost_weighing():
        raise SettingError("{cost} latency weighs saliency by time: use it with {method} fisher-penalty (per "
                           "millisecond the better of the two in RESULTS.md) or fisher-cost")


def check_cost_device(cost: str, on: Optional[str]) -> None:
    """A latency cost names its device (`--on`), and only a latency cost does. (`latency.parse_target` checks
    the device itself.)"""
    if cost == "latency" and not on:
        raise SettingError("{cost} latency needs {on}: the device whose latency pruning saves (cpu, cpu:THREADS or "
                           "cuda)")
    if on and cost != "latency":
        raise SettingError("{on} says where {cost} latency is measured; give {cost} latency with it")


class Pruner:
    """Ranks every open channel of a gated model by one method and closes the lowest.

    `fisher` is the paper's default. `fisher-cost` divides Delta by what the channel costs (`cost`: parameters,
    MACs or predicted latency on one device), preferring to drop expensive channels. `fisher-penalty` is Theis
    et al.'s additive form, Delta - beta * cost, with beta rescaled at every prune to the ratio of the open
    channels' median Delta and median cost, so the two terms are in the same units whatever the cost's. The
    channels pruned are those of least Delta, far below the median, so among them cost mostly decides: the
    penalty form follows the cost more closely than the quotient does. Saliency is compared across
    all layers at once (global pruning).
    """

    def __init__(self, model: nn.Module, method: str = "fisher", cost: str = "params", seed: int = 0,
                 latency: Optional["LatencyModel"] = None) -> None:
        check_method(method, cost)
        if cost == "latency" and latency is None:
            raise ValueError("a latency cost needs the latency model of the device it is measured on")
        self.model, self.method, self.cost, self.seed, self.latency = model, method, cost, seed, latency
        self.groups = model.prune_groups()
        self.criterion = CRITERIA[method]
        self.accumulator = self.criterion.accumulator(self.groups) if self.criterion.accumulator else None
        spec = model.spec
        self._areas = conv_output_areas(model, self.groups, spec.input_size, spec.in_chans) \
            if self.criterion.weighs_cost and cost != "latency" else {}
        self.num_prunes = 0
        self.beta: Optional[float] = None  # fisher-penalty's trade-off at the last prune, for the trajectory

    @property
    def fisher(self) -> Any:
        """The Fisher criteria's accumulator (`accumulator`, by the name its readers know)."""
        return self.accumulator

    def channel_costs(self) -> list[float]:
        """What one open channel of each group costs. A latency cost is measured on rank 0 alone and sent to the
        others, so every rank closes the same channels."""
        if self.cost != "latency":
            return channel_costs(self.groups, self._areas, self.cost)
        rank0 = not dist.is_initialized() or dist.get_rank() == 0
        costs = latency_costs(pruned_spec(self.model), self.groups, self.latency) if rank0 else [0.0] * len(self.groups)
        if dist.is_initialized():
            shared = torch.tensor(costs, dtype=torch.float64, device=self.groups[0].gate.mask.device)
            dist.broadcast(shared, 0)
            costs = shared.tolist()
        return costs

    def scores(self) -> list[torch.Tensor]:
        """Per-group saliency of every channel (lower is pruned first), by the method's criterion."""
        return self.criterion.scores(self)

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
        if self.accumulator is not None:
            self.accumulator.reset()
        self.num_prunes += 1
        return closed

    def remove_hooks(self) -> None:
        if self.accumulator is not None:
            self.accumulator.remove()
