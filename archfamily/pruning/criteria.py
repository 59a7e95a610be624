"""The pruning methods, registered by name in `CRITERIA`: a method is a saliency criterion (`fisher`, `l1`,
`random`), or one weighed against what each channel costs (`cost_weighted`: `fisher-cost` divides Fisher by
the cost, `fisher-penalty` subtracts a scaled cost).

A `Criterion` is its name, `scores(pruner)` (every channel's saliency, one tensor per prune group; the pruner
closes the lowest) and, for a saliency gathered while training, `accumulator(groups)`: hooks on the gates that
the pruner resets after every prune. Adding one is its scores (the saliency itself in `saliency.py`, or a module
of its own) and one `register` here. The `--method` choices, a study plan's checks and what family.json records
of the cost all read `CRITERIA`.

Nothing here imports torch at import time: the names are read by the CLI and the plan reader; a criterion
imports its saliency (and torch) when a pruner first uses it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from archfamily.registry import Registry

if TYPE_CHECKING:
    import torch

    from archfamily.models.gates import PruneGroup

Scores = list["torch.Tensor"]  # one per prune group: every channel's saliency, lower pruned first


class PrunerState(Protocol):
    """What a criterion reads of the pruner it scores for (`pruner.Pruner`)."""

    groups: list["PruneGroup"]
    seed: int
    num_prunes: int  # prunes so far
    accumulator: Any  # the criterion's own accumulator, if it has one
    beta: Optional[float]  # written by `fisher-penalty`: its trade-off at the last prune, for the trajectory

    def channel_costs(self) -> list[float]:
        """What one open channel of each group costs (the pruner's `cost`)."""


@dataclass(frozen=True)
class Criterion:
    """A named pruning method: how a pruner scores every channel."""

    name: str
    scores: Callable[[PrunerState], Scores]
    accumulator: Optional[Callable[[list["PruneGroup"]], Any]] = None  # gathers the saliency while training
    weighs_cost: bool = False  # the scores weigh the pruner's channel costs (--cost)


NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")  # a method names run folders: runs/<preset>-<base>-<method>-s<seed>


def _check_name(criterion: Criterion) -> None:
    if not NAME.fullmatch(criterion.name):
        raise ValueError(f"a criterion's name is lower-case letters, digits, '_', '.' or '-': {criterion.name!r}")


CRITERIA: Registry[Criterion] = Registry("criterion", check=_check_name)
register = CRITERIA.add


def cost_weighing() -> tuple[str, ...]:
    """The registered methods that weigh saliency against `--cost`."""
    return tuple(name for name, c in CRITERIA.items() if c.weighs_cost)


def cost_weighted(name: str, criterion: Criterion,
                  weigh: Callable[[PrunerState, Scores, list[float]], Scores]) -> Criterion:
    """`criterion` weighed against what each open channel of a group costs (the pruner's `cost`: parameters,
    MACs or predicted latency): `weigh(pruner, scores, costs)`. It keeps the criterion's accumulator."""

    def scores(pruner: PrunerState) -> Scores:
        return weigh(pruner, criterion.scores(pruner), pruner.channel_costs())

    return Criterion(name, scores, criterion.accumulator, weighs_cost=True)


def fisher_accumulator(groups: list["PruneGroup"]) -> Any:
    from archfamily.pruning.saliency import FisherAccumulator

    return FisherAccumulator(groups)


def fisher_scores(pruner: PrunerState) -> Scores:
    """Fisher's Delta, accumulated on the gates since the last prune."""
    return pruner.accumulator.saliency()


def l1_scores(pruner: PrunerState) -> Scores:
    from archfamily.pruning.saliency import l1_saliency

    return l1_saliency(pruner.groups)


def random_scores(pruner: PrunerState) -> Scores:
    from archfamily.pruning.saliency import random_saliency

    return random_saliency(pruner.groups, pruner.seed, pruner.num_prunes)


def divide_by_cost(pruner: PrunerState, scores: Scores, costs: list[float]) -> Scores:
    """Saliency per unit of cost: expensive channels go first."""
    return [s / c for s, c in zip(scores, costs)]


def subtract_scaled_cost(pruner: PrunerState, scores: Scores, costs: list[float]) -> Scores:
    """Theis et al.'s additive form, saliency - beta * cost, with beta the ratio of the open channels' median
    saliency and median cost, so the two terms are in the same units whatever the cost's."""
    import torch

    open_scores = [s[g.gate.mask.detach().cpu() > 0] for s, g in zip(scores, pruner.groups)]
    open_costs = [c for c, s in zip(costs, open_scores) for _ in range(s.numel())]
    pruner.beta = float(torch.cat(open_scores).median()) / max(float(torch.tensor(open_costs).median()), 1e-12)
    return [s - pruner.beta * c for s, c in zip(scores, costs)]


FISHER = Criterion("fisher", fisher_scores, fisher_accumulator)

register(FISHER)
register(cost_weighted("fisher-cost", FISHER, divide_by_cost))
register(cost_weighted("fisher-penalty", FISHER, subtract_scaled_cost))
register(Criterion("l1", l1_scores))
register(Criterion("random", random_scores))
