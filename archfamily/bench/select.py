"""Which networks the bench times at each budget.

- `networks`: for a family, at each budget, `reduced-width` (every width scaled alike),
  `pruned (masked)` (the pruned network as a masking framework runs it: full-size convs
  with zeroed channels), `pruned (compressed)` (the same network with its channels
  removed for real), and `copycat` and `fitted` members at each rounding. Errors, where
  a trajectory point or a zoo entry measured one, come with them.
- `trained_networks`: the networks of a study that were really trained (`--trained
  ARM=GLOB`), grouped by architecture so that the seeds of one arm at one budget are one
  row, each at the budget nearest its size, with the masked pruned network per budget.

Both take the pruned network at a budget by one rule (`pruned_at`): the first trajectory
point at or below it, which is the network `derive --save-at` saves.
"""
from __future__ import annotations

import glob
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from torch import nn

from archfamily.models.checkpoint import load_model, model_test_error
from archfamily.errors import SettingError, UserError
from archfamily.pruning.run import masked_network
from archfamily.pruning.family_file import Family
from archfamily.models import build_model
from archfamily.scaling.rules import RULES, make_rule, solve
from archfamily.specs import ArchSpec
from archfamily.hub.timm_models import spec_from_model_args
from archfamily.training.metrics_file import METRICS_FILE, read_metrics


@dataclass
class BenchNet:
    """One network to time: what it is, its counts, how to build it, and its error if one was measured."""

    budget: int
    kind: str
    spec: ArchSpec
    build: Callable[[], nn.Module] = field(repr=False)
    error: Optional[float] = None
    trained: Optional["TrainedGroup"] = None

    @property
    def label(self) -> str:
        return f"{self.budget}/{self.kind}/{self.spec.num_params()}/{self.spec.num_macs()}"


@dataclass
class TrainedGroup:
    """The trained copies (one per seed) of one architecture in one arm of a study."""

    arm: str
    spec: ArchSpec
    errors: list[float] = field(default_factory=list)
    seeds: list[Optional[int]] = field(default_factory=list)  # None: the file records no seed
    sources: list[str] = field(default_factory=list)
    test_images: set[int] = field(default_factory=set)  # as recorded; files that record none add nothing

    @property
    def mean(self) -> float:
        return statistics.fmean(self.errors)

    @property
    def std(self) -> Optional[float]:
        """Sample standard deviation over seeds; None for a single seed."""
        return statistics.stdev(self.errors) if len(self.errors) > 1 else None


def _trained_record(path: Path) -> tuple[ArchSpec, float, Optional[int], Optional[int]]:
    """(spec, test error, seed, test images) of a train run folder (metrics.json) or a model file's metadata;
    None where a model file does not record them."""
    if path.is_dir():
        if not (path / METRICS_FILE).is_file():
            raise UserError(f"{path} holds no finished training (no {METRICS_FILE})")
        m = read_metrics(path)
        return m.spec, m.test_error, m.seed, m.test_images
    spec, _, meta = load_model(path)  # its weights checked too: a file of another network is refused here
    if "test_error" not in meta:
        raise UserError(f"{path} records no measured test error")
    seed, images = meta.get("seed"), meta.get("test_images")
    return (spec, model_test_error(path, meta), int(seed) if seed is not None else None,
            int(images) if images is not None else None)


def trained_groups(patterns: list[tuple[str, str]]) -> list[TrainedGroup]:
    """Group what each (arm, glob) matches by architecture: one group per arm and spec, its seeds inside."""
    groups: dict[tuple[str, ArchSpec], TrainedGroup] = {}
    for arm, pattern in patterns:
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise SettingError("{trained} {arm}={pattern} matches nothing", arm=arm, pattern=pattern)
        for path in paths:
            spec, error, seed, images = _trained_record(Path(path))
            group = groups.setdefault((arm, spec), TrainedGroup(arm, spec))
            group.errors.append(error)
            group.seeds.append(seed)
            group.sources.append(path)
            if images is not None:
                group.test_images.add(images)
    return list(groups.values())


def _count(spec: ArchSpec, metric: str) -> int:
    return spec.num_params() if metric == "params" else spec.num_macs()


def pruned_at(family: Family, budget: int, metric: str) -> Optional[ArchSpec]:
    """The first trajectory point at or below `budget` (as `derive --save-at` saves it); None outside the run."""
    specs = family.specs
    counts = [_count(s, metric) for s in specs]
    if not min(counts) <= budget <= counts[0]:
        return None
    return next(s for s, c in zip(specs, counts) if c <= budget)


def _masked_builder(base: ArchSpec, pruned: ArchSpec) -> Callable[[], nn.Module]:
    """The base network with the pruned channels zeroed: full-size convs (`run.masked_network`)."""
    return lambda: masked_network(base, pruned)


def _nearest_budget(count: int, budgets: tuple[int, ...]) -> int:
    return min(budgets, key=lambda b: abs(math.log(count / b)))


def trained_networks(family: Family, budgets: tuple[int, ...], metric: str,
                     groups: list[TrainedGroup]) -> list[BenchNet]:
    """The trained networks, each at the budget nearest its size (log scale), and the masked pruned network per budget."""
    nets = []
    for budget in budgets:
        pruned = pruned_at(family, budget, metric)
        if pruned is not None:
            nets.append(BenchNet(budget, "pruned (masked)", pruned, _masked_builder(family.base, pruned)))
        for g in groups:
            if _nearest_budget(_count(g.spec, metric), budgets) == budget:
                nets.append(BenchNet(budget, g.arm, g.spec, lambda s=g.spec: build_model(s), g.mean, g))
    return nets


def networks(family: Family, budgets: tuple[int, ...], metric: str, round_tos: tuple[int, ...],
             zoo_entries: list[dict[str, Any]]) -> list[BenchNet]:
    """Every network the bench times for a family, budget by budget; errors from the trajectory and the zoo."""
    errors = {spec: e["test_error"] for e, spec in zip(family.trajectory, family.specs) if e.get("test_error") is not None}
    errors.update({spec_from_model_args(e["architecture"], e["model_args"]): e["test_error"] for e in zoo_entries})
    nets: list[BenchNet] = []

    def add(budget: int, kind: str, spec: ArchSpec, build: Optional[Callable[[], nn.Module]] = None) -> None:
        nets.append(BenchNet(budget, kind, spec, build or (lambda s=spec: build_model(s)), errors.get(spec)))

    def rule(name: str):
        return make_rule(name, family.base, family.trajectory, family.rules)

    held = [r for r in RULES.values() if r.name in family.rules or not r.needs_family]  # as `Rule.timed` says
    for budget in budgets:
        for name in (r.name for r in held if r.timed == "once"):
            add(budget, name, solve(rule(name), budget, metric).member.spec)
        pruned = pruned_at(family, budget, metric)
        if pruned is not None:
            add(budget, "pruned (masked)", pruned, _masked_builder(family.base, pruned))
            add(budget, "pruned (compressed)", pruned)
        for name in (r.name for r in held if r.timed == "rounded"):
            for round_to in round_tos:
                kind = name if round_to == 1 else f"{name} r{round_to}"
                add(budget, kind, solve(rule(name), budget, metric, round_to).member.spec)
    return nets
