"""Latency budgets: the largest family member that meets a measured latency on this machine.

`solve_latency` searches the rule's multiplier on the per-device latency model's
predictions and measures only the members it settles on (batch B, as `bench` times a
network: eager channels_last in inference mode, or ONNX Runtime), bisecting by measurement
if the model keeps missing.
Every measurement is refused while this process does not get its cores (`timing`), so a
busy machine's figure is never cached or decides anything. Measurements are cached with
their spread per machine, device, thread count and batch in `$ARCHFAMILY_CACHE/latency.json`
(`cache`), so asking again is quick, and `remeasure` times them again; a refusal that rests
on a cached figure names the file. A figure far from the model's prediction is taken again:
a fresh one kept out of the cache if it still is, a cached one replaced by the smaller of it and the
new one (a burst of other work the busy check missed slows a timing; nothing speeds one up). Inside the
model's search the prediction is the fitted, corrected one, so a figure 1.5x off it is doubted.
"""
from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Callable, Optional

import torch
from tqdm import tqdm

from archfamily.files import cache_dir
from archfamily.errors import SettingError
from archfamily.limits import parse_on
from archfamily.models import build_model
from archfamily.scaling.rules import Member, ScalingRule, member
from archfamily.specs import ArchSpec
from archfamily.latency.cache import TimingCache
from archfamily.latency.model import LatencyModel, NotInTable, check_predictable
from archfamily.latency.timing import Timing, machine_info, time_interleaved

BISECTION_STEPS = 14
MODEL_STEPS = 4  # rounds of the model's advice (a member and perhaps its neighbour) before bisecting by measurement
MODEL_TOLERANCE = 0.03  # an answer this close under the budget is kept: about the spread of one measurement
# A measurement this many times off the latency model's prediction (within 15% on an idle machine, for wrn-16's
# smallest and largest members before calibration) is doubted: a second line behind the busy check of every
# timing, for what that check cannot see.
DOUBT_FACTOR = 4.0
# Inside the search the prediction is fitted on the family's smallest member and corrected by its error at the
# nearest measured members: within 30% at the 90th percentile on the families of docs/latency.md. A figure this
# far off it is doubted (a cached 4.71 ms for a 511-param mnasnet_050 member, whose 498-param neighbour measured
# 2.81 ms, stopped a search at the family's smallest member).
SEARCH_DOUBT = 1.5


def parse_target(on: str) -> tuple[torch.device, int]:
    """`cpu`, `cpu:2` or `cuda` -> (device, threads); a one-line error for anything else (`limits.parse_on`,
    the parser plans use too), or for a GPU this machine lacks."""
    name, threads = parse_on(on)
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SettingError("{on} cuda was asked for, but this machine has no CUDA GPU")
        return torch.device("cuda"), 1
    return torch.device("cpu"), threads or torch.get_num_threads()


Prepare = Callable[[ArchSpec, torch.device, int, int], Callable[[], object]]  # (spec, device, threads, batch)


def _eager_call(spec: ArchSpec, device: torch.device, threads: int, batch: int) -> Callable[[], object]:
    """One forward pass of `spec`'s network in eager PyTorch, channels_last, as `bench` times it."""
    model = build_model(spec).to(device, memory_format=torch.channels_last).eval()
    x = torch.randn(batch, spec.in_chans, spec.input_size, spec.input_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    return lambda: model(x)


class LatencyCache:
    """Measured latencies of this machine, one section per device, thread count and batch (`TimingCache`),
    keyed by spec."""

    def __init__(self, path: Optional[Path] = None, on_note: Optional[Callable[[str], None]] = None,
                 remeasure: bool = False, runtime: str = "eager", prepare: Optional[Prepare] = None) -> None:
        self.path = Path(path) if path else cache_dir() / "latency.json"
        self.on_note = on_note or (lambda text: tqdm.write(f"archfamily: {text}", file=sys.stderr))
        self.machine = machine_info()
        self.timings = TimingCache(self.path, remeasure)
        # the runtime's name (one of `bench`'s), and how a network is made ready to call in it: `bench`'s
        # runtimes, given by the caller (they sit above this package), or eager channels_last by default
        self.runtime, self.prepare = runtime, prepare or _eager_call
        if prepare is None and runtime != "eager":
            raise ValueError(f"a LatencyCache for {runtime} needs its prepare")

    def key(self, spec: ArchSpec, device: torch.device, threads: int, batch: int) -> tuple[str, str]:
        """(setting, key) of `spec`'s figure; eager's settings name no runtime, as those from before ONNX
        Runtime's did not."""
        own = {"runtime": self.runtime} if self.runtime != "eager" else {}
        sid = self.timings.setting_id({**self.machine, "device": device.type, "threads": threads, "batch": batch,
                                       **own})
        return sid, hashlib.sha256(repr(spec).encode()).hexdigest()[:24]

    def from_file(self, spec: ArchSpec, device: torch.device, threads: int, batch: int) -> bool:
        """Whether `measure` answers for `spec` with an earlier run's figure, read from `path`."""
        return self.timings.from_file(*self.key(spec, device, threads, batch))

    def measure(self, spec: ArchSpec, device: torch.device, threads: int, batch: int,
                expected: Optional[Callable[[], Optional[float]]] = None, doubt: float = DOUBT_FACTOR) -> float:
        """Median latency in ms of one forward pass of `batch` images (from the cache when measured before).

        With `expected` (the latency model's prediction, asked for at most once), a figure `doubt` times or more
        off it is measured again. A fresh figure that still is is returned, the smaller of the two, but not
        cached; a cached one is replaced by the smaller of it and the new figure. `on_note` says either."""
        sid, key = self.key(spec, device, threads, batch)
        cached = self.timings.get(sid, key)
        asked: list[Optional[float]] = []

        def doubtful(t: Timing) -> bool:
            if expected is not None and not asked:
                asked.append(expected())
            expected_ms = asked[0] if asked else None
            return bool(expected_ms) and not 1 / doubt < t.median_ms / expected_ms < doubt

        if cached and not doubtful(cached):
            return cached.median_ms
        call = self.prepare(spec, device, threads, batch)

        def timed() -> Timing:
            return time_interleaved({"net": call}, device, threads, rounds=1, min_run_time=0.2)["net"]

        timing = timed()
        where = f"a {spec.num_params():,}-param network on {device.type}:{threads} (batch {batch})"
        if cached:
            kept = min(cached, timing, key=lambda t: t.median_ms)
            self.on_note(f"{self.path} held {cached.median_ms:.3g} ms for {where}, where the latency model predicts "
                         f"{asked[0]:.3g} ms: measured again, {timing.median_ms:.3g} ms; keeping "
                         f"{kept.median_ms:.3g} ms")
            self.timings.put(sid, key, kept)
            return kept.median_ms
        if doubtful(timing):
            first, timing = timing, timed()  # once more: a burst of other work may have passed
            if doubtful(timing):
                ms = min(first.median_ms, timing.median_ms)
                self.on_note(f"measured {ms:.3g} ms for {where}, twice, where the latency model predicts "
                             f"{asked[0]:.3g} ms: the machine is likely busy; not cached, so a rerun measures it "
                             "again")
                return ms
        self.timings.put(sid, key, timing)
        return timing.median_ms


def _bisect(rule: ScalingRule, round_to: int, lo: float, hi: float, fits: Callable[[Member], bool],
            steps: int = BISECTION_STEPS) -> tuple[float, float]:
    """Narrow [lo, hi] (lo's member fits, hi's does not) around the largest multiplier whose member fits."""
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if fits(member(rule, mid, round_to)) else (lo, mid)
    return lo, hi


Measure = Callable[..., float]  # solve_latency's measured: (member, expected, doubt[, report]) -> ms


def _search_with_model(rule: ScalingRule, target_ms: float, round_to: int, model: "LatencyModel",
                       measure: Measure, smallest: Member, fastest: float, largest: Member,
                       slowest: float) -> tuple[Member, float]:
    """`solve_latency`'s search on predicted latency, from the rule's two ends as measured (`largest`: the widest
    member the model predicts, the rule's or below it where the rule's is wider than the table): the answer it
    settles on within MODEL_STEPS rounds, else by bisecting by measurement the bracket those rounds narrowed.

    The model's per-operation cost is fitted on the smallest member, where it is most of the latency (fitted
    on both ends, a 4x-wide largest member's error would be read as a per-operation cost and mispredict the
    members between 5x); the error left is corrected by measurement. Each member measured is doubted against
    its corrected prediction (SEARCH_DOUBT), so a burst the busy check missed does not steer the search."""
    lo, hi = smallest.multiplier, largest.multiplier
    model.calibrate([smallest.spec], {smallest.spec: fastest}.__getitem__)
    errors = {lo: fastest / model.predict(smallest.spec), hi: slowest / model.predict(largest.spec)}

    def corrected(c: Member) -> float:
        """The prediction times the model's measured error, interpolated (in log multiplier) between the
        nearest measured members on either side."""
        below = max(x for x in errors if x <= c.multiplier)
        above = min((x for x in errors if x >= c.multiplier), default=below)
        w = 0.0 if above == below else math.log(c.multiplier / below) / math.log(above / below)
        return model.predict(c.spec) * ((1 - w) * errors[below] + w * errors[above])

    def measured(c: Member) -> float:
        ms = measure(c, lambda: corrected(c), SEARCH_DOUBT)
        errors[c.multiplier] = ms / model.predict(c.spec)
        return ms

    for _ in range(MODEL_STEPS):
        m, m_above = _bisect(rule, round_to, lo, hi, lambda c: corrected(c) <= target_ms)
        candidate = member(rule, m, round_to)
        ms = measured(candidate)
        if ms > target_ms:
            hi = m
            continue
        if ms >= (1 - MODEL_TOLERANCE) * target_ms:
            return candidate, ms  # within the budget and close to it
        above = member(rule, m_above, round_to)
        above_ms = measured(above)
        if above_ms > target_ms:
            return candidate, ms  # within the budget, and the next larger member is not
        lo = m_above
    lo, _ = _bisect(rule, round_to, lo, hi, lambda c: measured(c) <= target_ms)
    best = member(rule, lo, round_to)
    return best, measure(best, lambda: corrected(best), SEARCH_DOUBT, False)


def _predictable(model: LatencyModel, spec: ArchSpec) -> bool:
    """Whether the model can predict `spec` (checked before the model times its table)."""
    try:
        check_predictable(model.ops(spec))
        return True
    except NotInTable:
        return False


def _predictable_top(rule: ScalingRule, round_to: int, model: LatencyModel) -> float:
    """The largest multiplier whose member the model predicts, for a rule whose smallest member it does and whose
    largest it does not (a family grown past the table's 2048 channels, as 4x a base with a 1280-channel head)."""
    lo, _ = _bisect(rule, round_to, rule.lo, rule.hi, lambda m: _predictable(model, m.spec))
    return lo


def _predicted(model: Optional[LatencyModel], spec: ArchSpec) -> Optional[float]:
    """The model's prediction for `spec`, a measurement's sanity check; None without a model or past its table."""
    return model.predict(spec) if model is not None and _predictable(model, spec) else None


def solve_latency(rule: ScalingRule, target_ms: float, device: torch.device, threads: int, batch: int = 1,
                  round_to: int = 1, cache: Optional[LatencyCache] = None,
                  on_step: Optional[Callable[[Member, float], None]] = None,
                  model: Optional["LatencyModel"] = None) -> tuple[Member, float]:
    """The largest member whose measured latency is at most `target_ms`, and that latency.

    The smallest and largest members are measured first (is the budget reachable; is the whole family within
    it). With a latency `model` (fitted on the smallest member; the largest one it can predict, the rule's or the
    widest within its table, measured too), the search runs on predicted latency corrected by the model's error at
    the nearest measured members, and the member it settles on is measured: if it is within the budget and within
    3% of it, or the next larger member (measured too) is over it, that is the answer, usually the first time.
    After MODEL_STEPS rounds it bisects by measurement between the closest measured members, as it does without a
    model, or where the budget lies past the model's table. The answer's latency is always measured, never
    predicted.
    """
    cache = cache or LatencyCache()

    def measured(candidate: Member, expected: Optional[Callable[[], Optional[float]]] = None,
                 doubt: float = DOUBT_FACTOR, report: bool = True) -> float:
        ms = cache.measure(candidate.spec, device, threads, batch,
                           expected or (lambda: _predicted(model, candidate.spec)), doubt)
        if on_step and report:
            on_step(candidate, ms)
        return ms

    smallest, largest = member(rule, rule.lo, round_to), member(rule, rule.hi, round_to)
    fastest = measured(smallest, report=False)  # reachable at all? (reported only once it is)
    if fastest > target_ms:
        cached = " (cached in {file}: {remeasure} times it again)" \
            if cache.from_file(smallest.spec, device, threads, batch) else ""
        raise SettingError("{latency_ms} {ms:g} is unreachable: the smallest {rule} member ({params:,} params) takes "
                           "{fastest:.3g} ms on {device}:{threads}, batch {batch}" + cached, ms=target_ms,
                           rule=rule.name, params=smallest.params, fastest=fastest, device=device.type,
                           threads=threads, batch=batch, file=cache.path)
    if on_step:
        on_step(smallest, fastest)
    slowest = measured(largest)
    if slowest <= target_ms:
        return largest, slowest
    lo, hi = rule.lo, rule.hi  # lo's member is measured within the budget, hi's over it
    if model is not None and _predictable(model, smallest.spec):
        top, top_ms = largest, slowest
        if not _predictable(model, largest.spec):
            top = member(rule, _predictable_top(rule, round_to, model), round_to)
            top_ms = measured(top)
        if top_ms <= target_ms:
            lo = top.multiplier  # the budget lies past the model's table: measurement alone answers
        else:
            return _search_with_model(rule, target_ms, round_to, model, measured, smallest, fastest, top, top_ms)
    lo, _ = _bisect(rule, round_to, lo, hi, lambda m: measured(m) <= target_ms)
    best = member(rule, lo, round_to)
    return best, measured(best, report=False)
