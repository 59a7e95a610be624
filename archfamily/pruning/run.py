"""One pruning run of a timm CNN: train, and every `prune_every` steps close the least salient open channels of
the prunable groups, recording the widths (and so the member `TimmSpec(base, widths)`) after each prune.

This is the paper's procedure (fine-tune while pruning, Fisher saliency accumulated over the steps between
prunes, reset after each) on the dependency-graph engine's groups. Which groups may be pruned is a policy:
`all` (every traced group: the classifier's outputs and the input image are never groups) or `inner` (only
groups not tied to a residual stream, what the paper does for WRNs). A group keeps at least one channel, so
every point of the trajectory is a network that runs.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
from torch import nn

from archfamily.anycnn.compress import remove_channels
from archfamily.anycnn.costs import COSTS, channel_costs
from archfamily.anycnn.groups import ChannelGroup
from archfamily.anycnn.masks import GroupMasks
from archfamily.anycnn.rebuild import refresh_sizes
from archfamily.anycnn.spec import TimmSpec
from archfamily.errors import UserError
from archfamily.seeding import generator

POLICIES = ("all", "inner")
METHODS = ("fisher", "l1", "random", "fisher-cost", "fisher-penalty")  # the last two weigh Fisher by `cost`


def prunable_groups(groups: Sequence[ChannelGroup], policy: str) -> list[int]:
    """The indices of the groups `policy` lets the run prune."""
    if policy not in POLICIES:
        raise UserError(f"--groups must be one of {', '.join(POLICIES)}, got {policy!r}")
    # A group in a grouped convolution would have to lose channels evenly from each of its convolution groups to
    # be removed for real; that is not done yet, so those groups stay whole (RegNet's, ResNeXt's inner groups).
    chosen = [i for i, g in enumerate(groups) if (policy == "all" or g.inner) and g.step == 1]
    if not chosen:
        raise UserError(f"the network has no {policy} channel groups to prune")
    return chosen


def l1_scores(model: nn.Module, groups: Sequence[ChannelGroup], prunable: Sequence[int]) -> dict[int, torch.Tensor]:
    """Each channel's L1 norm of the filters that make it (summed over the group's convolutions and linears)."""
    scores = {}
    for i in prunable:
        total = torch.zeros(groups[i].width, dtype=torch.float64)
        for place in groups[i].places:
            layer = model.get_submodule(place.module)
            if place.dim == "out" and isinstance(layer, (nn.Conv2d, nn.Linear)) and place.start >= 0:
                w = layer.weight.detach().cpu().double()
                total += w[place.start:place.start + groups[i].width].abs().flatten(1).sum(1)
        scores[i] = total
    return scores


def lowest_open(scores: dict[int, torch.Tensor], masks: GroupMasks, k: int) -> list[tuple[int, int]]:
    """The k lowest-scoring open (group, channel) pairs, ties broken by group then channel order, never a group's
    last open channel."""
    candidates = []
    for i, score in scores.items():
        open_channels = torch.nonzero(masks.masks[i].cpu() > 0).flatten().tolist()
        candidates += [(float(score[c]), i, c) for c in open_channels]
    left = {i: int((masks.masks[i] > 0).sum()) for i in scores}
    chosen = []
    for _, i, c in sorted(candidates):
        if len(chosen) == k:
            break
        if left[i] > 1:
            chosen.append((i, c))
            left[i] -= 1
    return chosen


@dataclass
class GraphPruneRun:
    """A pruning run in progress over `spec`'s network `model` (built from `spec`, trained or not)."""

    spec: TimmSpec
    model: nn.Module
    method: str = "fisher"
    policy: str = "all"
    channels_per_prune: int = 1
    seed: int = 0
    cost: str = "params"  # what a channel costs, for fisher-cost and fisher-penalty: params or macs

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"--method must be one of {', '.join(METHODS)} for a timm base, got {self.method!r}")
        if self.cost not in COSTS:
            raise UserError(f"--cost {self.cost} is not available for a timm base; choose from {', '.join(COSTS)}")
        self.groups = self.spec.groups
        self.prunable = prunable_groups(self.groups, self.policy)
        self.masks = GroupMasks(self.model, self.groups, self.prunable)
        self.num_prunes = 0

    beta: Optional[float] = None  # fisher-penalty's trade-off at the last prune, for the trajectory

    def open_channels(self) -> int:
        """Channels a prune may still close (every group keeps one)."""
        return sum(int((self.masks.masks[i] > 0).sum()) - 1 for i in self.prunable)

    def member(self) -> TimmSpec:
        """The network the masks leave: the base at the open widths."""
        return replace(self.spec, widths=self.widths())

    def compressed(self) -> nn.Module:
        """The member for real, on the CPU, with the trained weights of the channels kept (the model is untouched)."""
        small = self.spec.build()
        small.load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        closed = self.masks.closed_channels()
        remove_channels(small, self.groups, closed, self.spec.input_size, self.spec.in_chans)
        member = self.member()
        small = refresh_sizes(small, member.base, member.input_size, member.in_chans)
        small.spec = member
        return small

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

    def widths(self) -> tuple[int, ...]:
        """The open channels of every group now."""
        return tuple(int((self.masks.masks[i] > 0).sum()) if i in self.masks.masks else g.width
                     for i, g in enumerate(self.groups))

    def scores(self) -> dict[int, torch.Tensor]:
        if self.method == "fisher":
            return self.masks.saliency()
        if self.method in ("fisher-cost", "fisher-penalty"):
            return self.weighed(self.masks.saliency())
        if self.method == "l1":
            return l1_scores(self.model, self.groups, self.prunable)
        g = generator(self.seed, 1, self.num_prunes)
        return {i: torch.rand(self.groups[i].width, generator=g, dtype=torch.float64) for i in self.prunable}

    def weighed(self, saliency: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Fisher weighed against what one channel of each group saves now (`anycnn.costs`), as the gated engine
        weighs it: divided by the cost (`fisher-cost`), or less beta times the cost (`fisher-penalty`, Theis et
        al.'s form), beta the ratio of the open channels' median saliency and median cost."""
        costs = channel_costs(self.member(), list(saliency), self.cost)
        if self.method == "fisher-cost":
            return {i: s / costs[i] for i, s in saliency.items()}
        open_saliency = torch.cat([s[self.masks.masks[i].to(s.device) > 0] for i, s in saliency.items()])
        open_costs = torch.tensor([costs[i] for i in saliency for _ in range(int((self.masks.masks[i] > 0).sum()))])
        self.beta = float(open_saliency.median()) / max(float(open_costs.median()), 1e-12)
        return {i: s - self.beta * costs[i] for i, s in saliency.items()}

    def prune(self) -> dict[str, Any]:
        """Close the next channels, start a fresh saliency sum, and return the trajectory point this makes."""
        closed = lowest_open(self.scores(), self.masks, self.channels_per_prune)
        self.masks.close(closed)
        self.masks.reset()
        self.num_prunes += 1
        member = self.member()
        return {"prune_step": self.num_prunes, "closed": [list(c) for c in closed], "widths": list(member.widths),
                "block_ratios": member.ratios(self.spec), "params": member.num_params(), "macs": member.num_macs()}


def run_pruning(run: GraphPruneRun, train_step: Callable[[], Any], prune_every: int, prunes: int) -> list[dict[str, Any]]:
    """Fine-tune with `train_step` (one optimiser step of `run.model`, e.g. a `training.Trainer`'s), pruning every
    `prune_every` steps, `prunes` times; the trajectory points, in order."""
    points = []
    run.model.train()
    while len(points) < prunes:
        for _ in range(prune_every):
            train_step()
        points.append(run.prune())
    return points
