"""Scaling rules: one pruning trajectory -> a family member at any parameter or MAC budget.

Every rule maps a multiplier m to a spec, monotonically (a larger m never makes
a width smaller), so a budget is met by bisection on m using the specs' analytic
counts; no model is built inside the loop.

- `copycat` (the paper): take the per-block width ratios at one point of the
  trajectory (`at`, a fraction of the base's parameters; default 0.5), then scale
  every width, outer and inner, by one multiplier alpha.
- `fitted`: fit each block's width as a power law of the network's parameter count
  over the whole trajectory (least squares in log-log space, exponent >= 0, zero
  below the size at which pruning emptied it), so the profile itself changes with
  the budget as pruning changed it. Beyond the trajectory (above the base, below
  the smallest pruned network) the profile at the nearer end scales uniformly.
- `reduced-width`: every width times one factor (WRN-d-k with a continuous k).
- `reduced-depth`: the base's widths with fewer (or more) blocks per stage.
- `bottleneck`: every inner width times one factor Z, outer widths kept.

Each is a `Rule` registered by name in `RULES`, which carries what the rest reads of it: the numbers a derive
run fits for family.json and their checks, whether it needs a pruning run, how far it reaches (a study plan's
bound) and what the bench times of it. Adding a rule is its definition and one `register`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from archfamily.checks import Fields
from archfamily.errors import SettingError, UserError
from archfamily.registry import Registry
from archfamily.specs import ArchSpec
from archfamily.limits import format_count

DEFAULT_AT = 0.5
TOLERANCE = 0.01  # a budget is met when the member is within 1% of it
COPYCAT_HI = 4.0  # the largest alpha of copycat and reduced-width: about 16x the base's params
FITTED_HI = 16.0  # the largest multiplier of fitted: 16x the base's params
MAX_EXPONENT = 16.0  # the steepest fitted power law (real trajectories fit 0.2 to 3)


@dataclass(frozen=True)
class ScalingRule:
    """A named, monotone map from a multiplier in [lo, hi] to a spec."""

    name: str
    lo: float
    hi: float
    make: Callable[[float, int], ArchSpec]
    description: str

    def spec(self, multiplier: float, round_to: int = 1) -> ArchSpec:
        return self.make(multiplier, round_to)


def trajectory_spec(base: ArchSpec, entry: dict[str, Any]) -> ArchSpec:
    """The pruned spec of one family.json trajectory point: the base with the point's exact widths."""
    return base.with_prunable_widths(entry["widths"])


def _copycat_point(trajectory: list[dict[str, Any]], at: float) -> dict[str, Any]:
    """The first trajectory point at or below `at` x the base's parameters (else the last one)."""
    if not 0 < at <= 1:
        raise SettingError("{at} must be a fraction of the base's parameters in (0, 1], got {got}", got=at)
    target = at * trajectory[0]["params"]
    return next((e for e in trajectory if e["params"] <= target), trajectory[-1])


def _fit_power_laws(base: ArchSpec, trajectory: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per block: width ~ coef * params^exponent, fitted in log-log space, with its R^2 and RMS error."""
    sizes = [e["params"] for e in trajectory]
    widths = [trajectory_spec(base, e).prunable_widths() for e in trajectory]
    fits = []
    for b in range(len(base.prunable_widths())):
        points = [(math.log(p), math.log(w[b])) for p, w in zip(sizes, widths) if w[b] > 0]
        vanished = max((p for p, w in zip(sizes, widths) if w[b] == 0), default=0)
        xs, ys = [x for x, _ in points], [y for _, y in points]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mean_x) ** 2 for x in xs)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx if sxx > 0 else 0.0
        # widths never grow as the network shrinks; a slope above MAX_EXPONENT comes only from a trajectory too short
        # to say (a few prunes of a large base) and would make coef too small to write down
        slope = min(max(slope, 0.0), MAX_EXPONENT)
        intercept = mean_y - slope * mean_x
        residual = sum((y - intercept - slope * x) ** 2 for x, y in points)
        total = sum((y - mean_y) ** 2 for y in ys)
        fits.append({
            "coef": math.exp(intercept), "exponent": slope, "vanished_at": vanished,
            "r2": 1.0 - residual / total if total > 0 else 1.0, "rms_log": math.sqrt(residual / len(points)),
            "points": len(points),
        })
    return fits


def fit_rules(base: ArchSpec, trajectory: list[dict[str, Any]]) -> dict[str, Any]:
    """The rules a family holds, with their fitted numbers, for family.json."""
    fitted = {rule.name: rule.fit(base, trajectory) for rule in family_order()}
    return {name: numbers for name, numbers in fitted.items() if numbers is not None}


def _copycat(base: ArchSpec, ratios: list[float], name: str, description: str) -> ScalingRule:
    widths = base.prunable_widths()

    def make(alpha: float, round_to: int) -> ArchSpec:
        return base.scaled(alpha, [alpha * r * w for r, w in zip(ratios, widths)], round_to)

    return ScalingRule(name, 1e-3, COPYCAT_HI, make, description)


def _fitted(base: ArchSpec, fit: dict[str, Any]) -> ScalingRule:
    widths, blocks, base_params = base.prunable_widths(), fit["blocks"], fit["base_params"]
    floor = fit["floor_params"] / base_params  # the multiplier of the smallest pruned network

    def profile(params: float) -> list[float]:
        return [0.0 if params <= f["vanished_at"] else min(w, f["coef"] * params ** f["exponent"])
                for f, w in zip(blocks, widths)]

    at_base, at_floor = profile(base_params), profile(fit["floor_params"])

    def make(m: float, round_to: int) -> ArchSpec:
        if floor <= m <= 1:  # inside the trajectory: the fitted profile at that size
            return base.scaled(1.0, profile(m * base_params), round_to)
        # outside it, scale the profile at the nearer end uniformly (params grow about as s^2)
        s, ends = (math.sqrt(m), at_base) if m > 1 else (math.sqrt(m / floor), at_floor)
        return base.scaled(s, [s * w for w in ends], round_to)

    r2 = [f["r2"] for f in blocks]
    return ScalingRule("fitted", 5e-3, FITTED_HI, make,
                       f"fitted power laws per block (R^2 min {min(r2):.2f}, median {sorted(r2)[len(r2) // 2]:.2f})")


def _reduced_depth(base: ArchSpec) -> ScalingRule:
    counts = base.block_counts()

    def make(d: float, round_to: int) -> ArchSpec:
        spec = base.with_block_counts([max(1, math.floor(d * n + 0.5)) for n in counts])
        return spec.scaled(1.0, spec.prunable_widths(), round_to)

    return ScalingRule("reduced-depth", 1e-3, 4.5, make, "base widths, blocks per stage times the multiplier")


def _bottleneck(base: ArchSpec) -> ScalingRule:
    """A WRN's prunable widths are all inner; a timm base's residual streams are prunable widths too (copycat
    reads their ratios), and `residual_widths` says which they are, so they are kept as outer widths are."""
    widths = base.prunable_widths()
    kept = base.residual_widths() if hasattr(base, "residual_widths") else [False] * len(widths)

    def make(z: float, round_to: int) -> ArchSpec:
        return base.scaled(1.0, [w if keep else z * w for w, keep in zip(widths, kept)], round_to)

    return ScalingRule("bottleneck", 1e-3, 8.0, make, "every inner width times Z, outer widths kept")


def make_rule(name: str, base: ArchSpec, trajectory: list[dict[str, Any]], rules: dict[str, Any],
              at: float | None = None) -> ScalingRule:
    """The rule `name` of a family; `at` re-reads copycat's ratios at another trajectory point."""
    try:
        return _make_rule(name, base, trajectory, rules, at)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
        raise UserError(f"the family's {name!r} rule is damaged ({type(exc).__name__}: {exc})") from None


def _make_rule(name: str, base: ArchSpec, trajectory: list[dict[str, Any]], rules: dict[str, Any],
               at: float | None) -> ScalingRule:
    if name not in RULES:
        raise UserError(f"unknown rule {name!r}; choose from {', '.join(RULES)}")
    rule = RULES[name]
    if name not in rules and rule.needs_family:
        raise UserError(f"this family holds no {name!r} rule; it holds {', '.join(sorted(rules))}")
    return rule.make(base, trajectory, rules.get(name, {}), at)


def base_rule(name: str, base: ArchSpec) -> ScalingRule:
    """A rule that scales the base network alone (`base_rules()`): no pruning run is needed to use it."""
    rule = RULES.get(name)
    if rule is None or rule.needs_family:
        raise UserError(f"rule {name!r} needs a pruning run's family; only {', '.join(base_rules())} scale a base alone")
    return rule.make(base, [], {}, None)


Numbers = dict[str, Any]  # a rule's entry in family.json's `rules`: what a derive run fitted for it


def _no_numbers(base: ArchSpec, trajectory: list[dict[str, Any]]) -> Optional[Numbers]:
    return {}


def _nothing_to_check(numbers: Fields, base: ArchSpec) -> None:
    return None


@dataclass(frozen=True)
class Rule:
    """A kind of scaling rule, registered by name in `RULES`.

    `make(base, trajectory, numbers, at)` is the rule of one family (`numbers`: its entry in family.json's
    `rules`; `at`: copycat's trajectory point, or None). `fit(base, trajectory)` is that entry for a new
    family.json, or None where the trajectory gives none; `keys` (required) and `check(numbers, base)` check it
    when a family.json is read. Without `needs_family` it scales the base alone (no pruning run). `reach`: for
    a rule that needs a family, its largest member as a multiple of the base's params (a study plan refuses
    budgets beyond it before the family exists). `optional`: a family.json may lack it. `timed`: what
    `archfamily bench` times of it at each budget: "" nothing, "once" one member, "rounded" one per rounding.
    `steps`: why its members come in steps (said when no member is within 1% of a budget); "" means whole
    channels, or multiples of the rounding.
    """

    name: str
    make: Callable[[ArchSpec, list[dict[str, Any]], Numbers, Optional[float]], ScalingRule]
    fit: Callable[[ArchSpec, list[dict[str, Any]]], Optional[Numbers]] = _no_numbers
    keys: tuple[str, ...] = ()
    check: Callable[[Fields, ArchSpec], None] = _nothing_to_check
    needs_family: bool = True
    reach: Optional[float] = None
    optional: bool = True
    timed: str = ""
    steps: str = ""


def _check_timed(rule: Rule) -> None:
    if rule.timed not in ("", "once", "rounded"):
        raise ValueError(f"rule {rule.name!r}: timed is '', 'once' or 'rounded', not {rule.timed!r}")


RULES: Registry[Rule] = Registry("rule", check=_check_timed)
register = RULES.add


def base_rules() -> tuple[str, ...]:
    """The rules that need only the base network, not a pruning run."""
    return tuple(name for name, rule in RULES.items() if not rule.needs_family)


def family_order() -> list[Rule]:
    """The rules in the order family.json holds them: those every family holds first."""
    return sorted(RULES.values(), key=lambda rule: rule.optional)


def _make_copycat(base: ArchSpec, trajectory: list[dict[str, Any]], numbers: Numbers,
                  at: Optional[float]) -> ScalingRule:
    point = _copycat_point(trajectory, at) if at is not None else numbers
    share = point["params"] / trajectory[0]["params"]
    return _copycat(base, point["block_ratios"], "copycat",
                    f"copycat of prune step {point['prune_step']} ({share:.0%} of the base's params)")


def _fit_copycat(base: ArchSpec, trajectory: list[dict[str, Any]]) -> Numbers:
    point = _copycat_point(trajectory, DEFAULT_AT)
    return {"at": DEFAULT_AT, "prune_step": point["prune_step"], "params": point["params"],
            "block_ratios": point["block_ratios"]}


def _check_copycat(copycat: Fields, base: ArchSpec) -> None:
    copycat.number("at", 0, 1)
    copycat.int("prune_step")
    copycat.int("params", 1)
    copycat.numbers("block_ratios", len(base.prunable_widths()), 0, 1)


def _fit_fitted(base: ArchSpec, trajectory: list[dict[str, Any]]) -> Optional[Numbers]:
    if len(trajectory) < 2:
        return None
    return {"base_params": trajectory[0]["params"], "floor_params": trajectory[-1]["params"],
            "blocks": _fit_power_laws(base, trajectory)}


def _check_fitted(fitted: Fields, base: ArchSpec) -> None:
    base_params = fitted.int("base_params", 1)
    fitted.int("floor_params", 1, base_params)
    for i, raw in enumerate(fitted.list("blocks", len(base.prunable_widths()))):
        block = Fields(raw, f"{fitted.where}: blocks[{i}]", ("coef", "exponent", "vanished_at"))
        block.number("coef", 1e-300, 1e6)
        block.number("exponent", 0, 100)
        block.number("vanished_at", 0, base_params)


register(Rule("copycat", _make_copycat, _fit_copycat, ("at", "prune_step", "params", "block_ratios"), _check_copycat,
              reach=COPYCAT_HI ** 2, optional=False, timed="rounded"))
register(Rule("fitted", lambda base, trajectory, numbers, at: _fitted(base, numbers), _fit_fitted,
              ("base_params", "floor_params", "blocks"), _check_fitted, reach=FITTED_HI, timed="rounded"))
register(Rule("reduced-width", lambda base, *_: _copycat(base, [1.0] * len(base.prunable_widths()), "reduced-width",
                                                         "every width times alpha"),
              needs_family=False, optional=False, timed="once"))
register(Rule("reduced-depth", lambda base, *_: _reduced_depth(base), needs_family=False, optional=False,
              steps="depth comes in whole blocks"))
register(Rule("bottleneck", lambda base, *_: _bottleneck(base), needs_family=False, optional=False))


@dataclass(frozen=True)
class Member:
    """One family member: the rule and multiplier that made it, its spec and its counts."""

    rule: str
    multiplier: float
    spec: ArchSpec
    params: int
    macs: int

    def count(self, metric: str) -> int:
        return self.params if metric == "params" else self.macs


@dataclass(frozen=True)
class ScaleResult:
    member: Member
    metric: str
    budget: int
    within_tolerance: bool
    note: str

    @property
    def error(self) -> float:
        """Relative distance from the budget (params or MACs; a latency result carries its figure in `note`)."""
        return self.member.count(self.metric) / self.budget - 1 if self.metric != "latency" else 0.0


def member(rule: ScalingRule, multiplier: float, round_to: int = 1) -> Member:
    spec = rule.spec(multiplier, round_to)
    return Member(rule.name, multiplier, spec, spec.num_params(), spec.num_macs())


def solve(rule: ScalingRule, budget: int, metric: str = "params", round_to: int = 1) -> ScaleResult:
    """The member closest to `budget` (params or MACs), by bisection on the multiplier."""
    if metric not in ("params", "macs"):
        raise ValueError(metric)
    if round_to < 1:
        raise SettingError("{round_to} must be at least 1, got {got}", got=round_to)

    def count(m: float) -> int:
        spec = rule.spec(m, round_to)
        return spec.num_params() if metric == "params" else spec.num_macs()

    lo, hi = rule.lo, rule.hi
    smallest, largest = count(lo), count(hi)
    if budget < smallest * (1 - TOLERANCE) or budget > largest * (1 + TOLERANCE):
        raise SettingError("{" + metric + "} {budget} is outside what rule {rule} reaches for this family (round-to "
                           "{step}): {smallest} to {largest} {metric}", budget=format_count(budget), rule=rule.name,
                           step=round_to, smallest=format_count(smallest), largest=format_count(largest),
                           metric=metric)
    if budget <= smallest:
        hi = lo
    elif budget >= largest:
        lo = hi
    while hi / lo > 1 + 1e-9:
        mid = math.sqrt(lo * hi)
        if count(mid) <= budget:
            lo = mid
        else:
            hi = mid
    below, above = member(rule, lo, round_to), member(rule, hi, round_to)
    best = min((below, above), key=lambda c: abs(c.count(metric) - budget))
    within = abs(best.count(metric) - budget) <= TOLERANCE * budget
    note = ""
    if not within:
        kind = RULES.get(rule.name)
        why = kind.steps if kind is not None and kind.steps else \
            f"widths come in whole multiples of {round_to} channel{'s' if round_to > 1 else ''}"
        note = (f"no {rule.name} member is within 1% of {format_count(budget)} {metric}: the nearest members have "
                f"{below.count(metric):,} and {above.count(metric):,}, and none lies between them because {why}")
    return ScaleResult(best, metric, budget, within, note)
