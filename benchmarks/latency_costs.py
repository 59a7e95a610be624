"""What latency-aware pruning spends per prune step on its costs: `pruning.costs.latency_costs` on a base network
shrinking a few channels a step, against tracing every network it asks about (one per group, plus the current
one) with torch.fx, which is what it did before the latency model filled operations in from a topology template.

    python benchmarks/latency_costs.py --base wrn-40-2 --steps 12

The lookup table is a stand-in (an operation's latency is the sum of its channel counts), so nothing is timed
on the device: this measures finding each network's operations and summing them, the part that grows with the
network's size and its number of groups. Prints medians over the steps after the first two (the template is
built at the second). Asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

import archfamily.latency_model as lm
from archfamily.models import build_model
from archfamily.pruning.costs import latency_costs
from archfamily.specs import base_spec
from archfamily.timing import machine_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="wrn-40-2")
    parser.add_argument("--steps", type=int, default=12, help="prune steps, each closing 1 channel of every group")
    args = parser.parse_args()
    spec = base_spec(args.base)
    groups = build_model(spec, gated=True).prune_groups()
    lm._runnable = lambda kind, fixed, channels, batch, device: (lambda: 1e-3 * sum(channels))  # the stand-in
    with TemporaryDirectory() as tmp:
        model = lm.LatencyModel(torch.device("cpu"), 1, 1, Path(tmp) / "table.json", timer=lambda fn, d, t: fn())
        widths, costs, traces = spec.prunable_widths(), [], []
        for step in range(args.steps):
            current = spec.with_prunable_widths([max(w - step, 1) for w in widths])
            start = time.perf_counter()
            latency_costs(current, groups, model)
            costs.append(time.perf_counter() - start)
            start = time.perf_counter()
            lm.network_ops(current)
            traces.append(time.perf_counter() - start)
    per_step, trace = statistics.median(costs[2:]), statistics.median(traces)
    print(f"{args.base}: {len(groups)} groups, {torch.get_num_threads()} threads, {machine_info()['cpu']}")
    print(f"  costs per prune step, operations filled from the template: {per_step * 1e3:.1f} ms (median of "
          f"steps 3-{args.steps}; all: {min(costs) * 1e3:.1f}-{max(costs) * 1e3:.0f} ms)")
    print(f"  one torch.fx trace: {trace * 1e3:.1f} ms, so tracing every network a step asks about "
          f"({len(groups) + 1}): {(len(groups) + 1) * trace * 1e3:.0f} ms, {(len(groups) + 1) * trace / per_step:.0f}x")


if __name__ == "__main__":
    main()
