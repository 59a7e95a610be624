"""What latency-aware pruning spends per prune step on its costs: `pruning.costs.latency_costs`, against tracing
every network it asks about (the current one and one per open group) with torch.fx, which is what it did before
the latency model filled operations in from a template of each topology.

    python benchmarks/latency_costs.py --base wrn-40-2 --steps 40

Two phases of a pruning run: `wide`, every group losing a channel a step and none near closing (one topology);
`closing`, the narrowest open group losing 2 channels a step until it closes, so groups come within a cost
window (8 channels) of closing and close, and the topology changes every few steps, as late in a run. The lookup
table is a stand-in (an operation's latency is the sum of its channel counts), so nothing is timed on the
device: this measures finding each network's operations and summing them. Prints each phase's median and
slowest step, and tracing's cost for the same networks (how many x the median trace). Asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

import archfamily.latency.model as lm
from archfamily.models import build_model
from archfamily.pruning.costs import latency_costs
from archfamily.specs import ArchSpec, base_spec
from archfamily.latency.timing import Timing, machine_info


def _wide(spec: ArchSpec, step: int) -> list[int]:
    return [max(w - step, min(w, 9)) for w in spec.prunable_widths()]  # never within a cost window of closing


def _closing(spec: ArchSpec, step: int) -> list[int]:
    widths = list(spec.prunable_widths())
    for _ in range(step):
        open_groups = [i for i, w in enumerate(widths) if w > 0]
        if len(open_groups) > 1:
            narrowest = min(open_groups, key=widths.__getitem__)
            widths[narrowest] = max(widths[narrowest] - 2, 0)
    return widths


def _phase(spec: ArchSpec, widths_at, steps: int, groups: list[int]) -> tuple[list[float], list[int]]:
    """Seconds of each step's costs, and how many networks each step asks about, with a fresh model."""
    with TemporaryDirectory() as tmp:
        model = lm.LatencyModel(torch.device("cpu"), 1, 1, Path(tmp) / "table.json", timer=lambda fn, d, t: Timing(fn(), 0.0, 1))
        seconds, asked = [], []
        for step in range(steps):
            current = spec.with_prunable_widths(widths_at(spec, step))
            start = time.perf_counter()
            latency_costs(current, groups, model)
            seconds.append(time.perf_counter() - start)
            asked.append(1 + sum(w > 0 for w in current.prunable_widths()))
    return seconds, asked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="wrn-40-2")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    spec = base_spec(args.base)
    groups = list(build_model(spec).channel_groups())  # the prunable width indices that have a group
    lm._runnable = lambda kind, fixed, channels, batch, device: (lambda: 1e-3 * sum(channels))  # the stand-in
    trace = statistics.median(_timed_trace(spec.with_prunable_widths(_wide(spec, i))) for i in range(5))
    print(f"{args.base}: {len(groups)} groups; one torch.fx trace {trace * 1e3:.0f} ms; "
          f"{torch.get_num_threads()} threads, {machine_info()['cpu']}")
    for name, widths_at in (("wide", _wide), ("closing", _closing)):
        seconds, asked = _phase(spec, widths_at, args.steps, groups)
        tracing = statistics.median(asked) * trace
        print(f"  {name:8s} median {statistics.median(seconds) * 1e3:7.1f} ms a step, slowest "
              f"{max(seconds) * 1e3:6.0f} ms, all {args.steps} steps {sum(seconds):6.1f} s; tracing each network: "
              f"{tracing * 1e3:5.0f} ms a step, {sum(asked) * trace:6.1f} s "
              f"({sum(asked) * trace / sum(seconds):.1f}x)")


def _timed_trace(spec: ArchSpec) -> float:
    start = time.perf_counter()
    lm.network_ops(spec)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
