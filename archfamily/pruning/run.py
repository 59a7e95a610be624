"""The pruning engine: one run over any network, archfamily's own families and any timm CNN alike.

The network's channel groups come from its family (archfamily's own networks list theirs: `channel_groups()`) or
from Torch-Pruning's trace of a timm base (`anycnn`). One 0/1 mask per group (`masks.GroupMasks`) closes channels
while the network trains; every `prune` scores each open channel by the run's criterion (`criteria.CRITERIA`: any
registered method, on any base) and closes the lowest, globally. This is the paper's procedure: fine-tune while
pruning, Fisher saliency accumulated over the steps between prunes and reset after each.

Which groups may be pruned is a policy for a timm base: `all` (every traced group: the classifier's outputs and
the input image are never groups) or `inner` (only groups not tied to a residual stream, what the paper does for
WRNs); archfamily's own families prune their inner groups. A group keeps at least one channel unless it is
closable (a residual branch of archfamily's own families, which then computes its shortcut alone), so every
point of the trajectory is a network that runs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from archfamily.anycnn.table import prunable_groups
from archfamily.families import ChannelGroup
from archfamily.errors import UserError
from archfamily.models import build_model
from archfamily.pruning.compress import compress
from archfamily.pruning.costs import count_costs, latency_costs
from archfamily.pruning.criteria import CRITERIA, check_method
from archfamily.pruning.masks import GroupMasks
from archfamily.specs import ArchSpec, block_ratios

if TYPE_CHECKING:
    from archfamily.latency.model import LatencyModel


def channel_groups_of(spec: ArchSpec, model: Optional[nn.Module] = None) -> dict[int, ChannelGroup]:
    """Each prunable width's channel group (by its index in `spec.prunable_widths()`): as Torch-Pruning traced a
    timm base (the spec holds them), else as the network lists them (archfamily's own families, and plug-ins; a
    network built on the meta device when none is given)."""
    if hasattr(spec, "groups"):
        return dict(enumerate(spec.groups))
    if model is None:
        with torch.device("meta"):
            model = build_model(spec)
    return dict(model.channel_groups())


def lowest_open(scores: dict[int, torch.Tensor], masks: GroupMasks, least: dict[int, int],
                k: int) -> list[tuple[int, int]]:
    """The k lowest-scoring open (group, channel) pairs, ties broken by group then channel order, never closing a
    group below `least[group]` open channels."""
    candidates = []
    for i, score in scores.items():
        open_channels = torch.nonzero(masks.masks[i].cpu() > 0).flatten().tolist()
        candidates += [(float(score[c]), i, c) for c in open_channels]
    left = {i: int((masks.masks[i] > 0).sum()) for i in scores}
    chosen = []
    for _, i, c in sorted(candidates):
        if len(chosen) == k:
            break
        if left[i] > least[i]:
            chosen.append((i, c))
            left[i] -= 1
    return chosen


@dataclass
class PruneRun:
    """A pruning run in progress over `spec`'s network `model` (built from `spec`, trained or not)."""

    spec: ArchSpec
    model: nn.Module
    method: str = "fisher"
    policy: Optional[str] = None  # a timm base's groups: all (the default) or inner; archfamily's own: inner
    channels_per_prune: int = 1
    seed: int = 0
    cost: str = "params"  # what a channel costs, for the cost-weighing methods: params, macs or latency
    latency: Optional["LatencyModel"] = None  # the device's latency model, for a latency cost

    def __post_init__(self) -> None:
        check_method(self.method, self.cost)
        if self.cost == "latency" and self.latency is None:
            raise ValueError("a latency cost needs the latency model of the device it is measured on")
        self.criterion = CRITERIA[self.method]
        self.groups = channel_groups_of(self.spec, self.model)
        self.prunable = prunable_groups(self.groups, self.policy or "all")
        self.least = {i: 0 if self.groups[i].closable else 1 for i in self.prunable}
        self.masks = GroupMasks(self.model, self.groups, self.prunable)
        self.num_prunes = 0
        self.beta: Optional[float] = None  # fisher-penalty's trade-off at the last prune, for the trajectory

    def open_channels(self) -> int:
        """Channels a prune may still close."""
        return sum(int((self.masks.masks[i] > 0).sum()) - self.least[i] for i in self.prunable)

    def widths(self) -> list[int]:
        """Every prunable width now: a pruned group's open channels, the others as the base has them."""
        widths = list(self.spec.prunable_widths())
        for i in self.prunable:
            widths[i] = int((self.masks.masks[i] > 0).sum())
        return widths

    def member(self) -> ArchSpec:
        """The network the masks leave: the base at the open widths."""
        return self.spec.with_prunable_widths(self.widths())

    def channel_costs(self) -> dict[int, float]:
        """What one open channel of each prunable group costs now. A latency cost is measured on rank 0 alone and
        sent to the others, so every rank closes the same channels."""
        member = self.member()
        if self.cost != "latency":
            return count_costs(member, self.prunable, self.cost, min(self.least.values()))
        rank0 = not dist.is_initialized() or dist.get_rank() == 0
        least = min(self.least.values())
        costs = latency_costs(member, self.prunable, self.latency, least=least) if rank0 \
            else dict.fromkeys(self.prunable, 0.0)
        if dist.is_initialized():
            shared = torch.tensor([costs[i] for i in self.prunable], dtype=torch.float64,
                                  device=self.masks.masks[self.prunable[0]].device)
            dist.broadcast(shared, 0)
            costs = dict(zip(self.prunable, shared.tolist()))
        return costs

    def scores(self) -> dict[int, torch.Tensor]:
        """Every channel's saliency by the run's criterion, per prunable group (lower is closed first)."""
        return self.criterion.scores(self)

    def prune(self) -> dict[str, Any]:
        """Close the next channels, start a fresh saliency sum, and return the trajectory point this makes."""
        closed = lowest_open(self.scores(), self.masks, self.least, self.channels_per_prune)
        self.masks.close(closed)
        self.masks.reset()
        self.num_prunes += 1
        member = self.member()
        return {"prune_step": self.num_prunes, "closed": [list(c) for c in closed], "widths": member.prunable_widths(),
                "block_ratios": block_ratios(member, self.spec), "params": member.num_params(),
                "macs": member.num_macs()}

    def compressed(self) -> nn.Module:
        """The member for real, on the CPU, with the trained weights of the channels kept (the model is untouched)."""
        return compress(self.spec, self.model, self.groups, self.masks.closed_channels(), self.member())

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the masks: each pruned group's closed channels."""
        return {"closed": {str(i): c for i, c in self.masks.closed_channels().items() if c}}

    def restore(self, state: Optional[dict[str, Any]]) -> None:
        """The masks as a checkpoint's `state()` left them; a damaged entry is a one-line error."""
        closed = (state or {}).get("closed", {})
        pairs = []
        if not isinstance(closed, dict):
            raise UserError("a damaged prune checkpoint: 'closed' must map groups to channels")
        for key, channels in closed.items():
            i = int(key) if isinstance(key, str) and key.isdigit() else -1
            if i not in self.masks.masks or not isinstance(channels, list) or not all(
                    type(c) is int and 0 <= c < self.groups[i].width for c in channels):
                raise UserError(f"a damaged prune checkpoint: closed channels of group {key!r}")
            pairs += [(i, c) for c in channels]
        self.masks.close(pairs)

    def close(self) -> None:
        """Remove the masks' hooks."""
        self.masks.remove()


def run_pruning(run: PruneRun, train_step: Callable[[], Any], prune_every: int, prunes: int) -> list[dict[str, Any]]:
    """Fine-tune with `train_step` (one optimiser step of `run.model`, e.g. a `training.Trainer`'s), pruning every
    `prune_every` steps, `prunes` times; the trajectory points, in order."""
    points = []
    run.model.train()
    while len(points) < prunes:
        for _ in range(prune_every):
            train_step()
        points.append(run.prune())
    return points


def masked_network(base: ArchSpec, pruned: ArchSpec) -> nn.Module:
    """The pruned network as a masking framework runs it: the base at full size, every channel `pruned` lost
    zeroed by its group's mask at every forward, untrained (for timing)."""
    model = build_model(base)
    groups = channel_groups_of(base, model)
    widths, full = pruned.prunable_widths(), base.prunable_widths()
    shrunk = [i for i in groups if widths[i] < full[i]]
    if shrunk:
        model.masks = GroupMasks(model, groups, shrunk)
        model.masks.close([(i, c) for i in shrunk for c in range(widths[i], full[i])])
    return model


def smallest_member(spec: ArchSpec, policy: Optional[str]) -> ArchSpec:
    """The smallest network pruning can reach: every group it prunes at its fewest channels (closed where it may
    close, else one)."""
    groups = channel_groups_of(spec)
    widths = list(spec.prunable_widths())
    for i in prunable_groups(groups, policy or "all"):
        widths[i] = 0 if groups[i].closable else 1
    return spec.with_prunable_widths(widths)
