"""The pruning methods, registered by name in `CRITERIA`: a method is a saliency criterion (`fisher`, `l1`,
`random`), or one weighed against what each channel costs (`cost_weighted`: `fisher-cost` divides Fisher by
the cost, `fisher-penalty` subtracts a scaled cost).

A `Criterion` is its name and `scores(run)`: every open channel's saliency, one tensor per prunable channel group
(the run closes the lowest), as Torch-Pruning's `Importance.__call__(group)` scores a group. Every network is
pruned by one engine (`run.PruneRun`), so a criterion registered here prunes archfamily's own families and any
timm CNN alike. Adding one is its scores function and one `register`. The `--method` choices, a study plan's
checks and what family.json records of the cost all read `CRITERIA`.

Nothing here imports torch at import time: the names are read by the CLI and the plan reader; a criterion
imports torch when a run first scores with it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol

from archfamily.errors import SettingError, UserError
from archfamily.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

COSTS = ("params", "macs", "latency")  # what a cost-weighing method can weigh a channel's saliency against
Scores = dict[int, "torch.Tensor"]  # prunable group index -> every channel's saliency, lower pruned first


class RunState(Protocol):
    """What a criterion reads of the pruning run it scores for (`run.PruneRun`)."""

    model: "nn.Module"
    groups: Mapping[int, Any]  # prunable width index -> its `ChannelGroup`
    prunable: list[int]  # the indices a run prunes, in order
    masks: Any  # the run's `masks.GroupMasks`: each group's 0/1 mask and its Fisher saliency
    seed: int
    num_prunes: int  # prunes so far
    beta: Optional[float]  # written by `fisher-penalty`: its trade-off at the last prune, for the trajectory

    def channel_costs(self) -> dict[int, float]:
        """What one open channel of each prunable group costs (the run's `cost`)."""


@dataclass(frozen=True)
class Criterion:
    """A named pruning method: how a run scores every channel."""

    name: str
    scores: Callable[[RunState], Scores]
    weighs_cost: bool = False  # the scores weigh the run's channel costs (--cost)


NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")  # a method names run folders: runs/<preset>-<base>-<method>-s<seed>


def _check_name(criterion: Criterion) -> None:
    if not NAME.fullmatch(criterion.name):
        raise ValueError(f"a criterion's name is lower-case letters, digits, '_', '.' or '-': {criterion.name!r}")


CRITERIA: Registry[Criterion] = Registry("criterion", check=_check_name)
register = CRITERIA.add


def cost_weighing() -> tuple[str, ...]:
    """The registered methods that weigh saliency against `--cost`."""
    return tuple(name for name, c in CRITERIA.items() if c.weighs_cost)


def check_method(method: str, cost: str) -> None:
    """One-line errors for an unknown saliency method or channel cost, or a cost no method weighs."""
    if method not in CRITERIA:
        raise UserError(f"unknown pruning method {method!r}; choose from {', '.join(CRITERIA)}")
    if cost not in COSTS:
        raise UserError(f"unknown cost {cost!r}; choose from {', '.join(COSTS)}")
    if cost == "latency" and method not in cost_weighing():
        raise SettingError("{cost} latency weighs saliency by time: use it with {method} fisher-penalty (per "
                           "millisecond the better of the two in RESULTS.md) or fisher-cost")


def check_cost_device(cost: str, on: Optional[str], runtime: Optional[str] = None) -> None:
    """A latency cost names its device (`--on`), and only a latency cost does, or names a runtime (eager, or
    ONNX Runtime on the CPU). (`latency.parse_target` checks the device itself.)"""
    if runtime is not None and cost != "latency":
        raise SettingError("{runtime} says what {cost} latency is predicted in; give {cost} latency with it")
    if runtime == "onnxruntime" and on and not on.startswith("cpu"):
        raise SettingError("{runtime} onnxruntime predicts the CPU's latency, not {device}'s", device=on)
    if cost == "latency" and not on:
        raise SettingError("{cost} latency needs {on}: the device whose latency pruning saves (cpu, cpu:THREADS or "
                           "cuda)")
    if on and cost != "latency":
        raise SettingError("{on} says where {cost} latency is measured; give {cost} latency with it")


def cost_weighted(name: str, criterion: Criterion, weigh: Callable[[RunState, Scores, dict[int, float]], Scores]) -> Criterion:
    """`criterion` weighed against what each open channel of a group costs (the run's `cost`: parameters, MACs or
    predicted latency): `weigh(run, scores, costs)`."""

    def scores(run: RunState) -> Scores:
        return weigh(run, criterion.scores(run), run.channel_costs())

    return Criterion(name, scores, weighs_cost=True)


def fisher_scores(run: RunState) -> Scores:
    """Fisher's Delta, accumulated through the masks since the last prune."""
    return run.masks.saliency()


def l1_scores(run: RunState) -> Scores:
    """Li et al. 2017: each channel's L1 norm of the filters that make it (summed over the convolutions and linear
    layers that write the group's channels)."""
    import torch
    from torch import nn

    scores = {}
    for i in run.prunable:
        group = run.groups[i]
        total = torch.zeros(group.width, dtype=torch.float64)
        for place in group.places:
            layer = run.model.get_submodule(place.module)
            if place.dim == "out" and isinstance(layer, (nn.Conv2d, nn.Linear)) and place.start >= 0:
                w = layer.weight.detach().cpu().double()
                total += w[place.start:place.start + group.width].abs().flatten(1).sum(1)
        scores[i] = total
    return scores


def random_scores(run: RunState) -> Scores:
    """Uniform scores from a generator seeded by (seed, prune): the same on every rank and on resume."""
    import torch

    from archfamily.seeding import generator

    g = generator(run.seed, 3, run.num_prunes)
    return {i: torch.rand(run.groups[i].width, generator=g, dtype=torch.float64) for i in run.prunable}


def divide_by_cost(run: RunState, scores: Scores, costs: dict[int, float]) -> Scores:
    """Saliency per unit of cost: expensive channels go first."""
    return {i: s / costs[i] for i, s in scores.items()}


def subtract_scaled_cost(run: RunState, scores: Scores, costs: dict[int, float]) -> Scores:
    """Theis et al.'s additive form, saliency - beta * cost, with beta the ratio of the open channels' median
    saliency and median cost, so the two terms are in the same units whatever the cost's."""
    import torch

    open_scores = {i: s[run.masks.masks[i].cpu() > 0] for i, s in scores.items()}
    open_costs = [costs[i] for i, s in open_scores.items() for _ in range(s.numel())]
    run.beta = float(torch.cat(list(open_scores.values())).median()) / max(float(torch.tensor(open_costs).median()), 1e-12)
    return {i: s - run.beta * costs[i] for i, s in scores.items()}


FISHER = Criterion("fisher", fisher_scores)

register(FISHER)
register(cost_weighted("fisher-cost", FISHER, divide_by_cost))
register(cost_weighted("fisher-penalty", FISHER, subtract_scaled_cost))
register(Criterion("l1", l1_scores))
register(Criterion("random", random_scores))
