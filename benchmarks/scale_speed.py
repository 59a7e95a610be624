"""How long one `archfamily scale` call takes: the solver alone, and the whole command.

    python benchmarks/scale_speed.py --family runs/quick-wrn-16-2-fisher-s0
    python benchmarks/scale_speed.py --family studies/experiments/timm-mobilenetv2/runs/derive

The solver is timed with torch.utils.benchmark (blocked_autorange, median and IQR);
the command as a user runs it (a new Python process each time) with perf_counter
over repeated runs: once with an empty cache (a timm base's count table measured,
as on a fresh machine), then warm. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import os
import subprocess
import sys
import tempfile
import time

from torch.utils import benchmark

from archfamily.errors import UserError
from archfamily.pruning.family_file import load_family
from archfamily.scaling.rules import RULES, make_rule, solve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, help="a derive run folder or its family.json")
    parser.add_argument("--budget", type=int, default=1_000_000)
    parser.add_argument("--cli-runs", type=int, default=7)
    args = parser.parse_args()
    family = load_family(args.family)

    print(f"family {family.path} (base {family.base_name}); budget {args.budget:,} params")
    print(f"{'rule':<14} {'round-to':>8} {'solver median':>14} {'IQR':>10}")
    for rule_name in RULES:
        rule = make_rule(rule_name, family.base, family.trajectory, family.rules)
        try:
            solve(rule, args.budget, "params", 1)
        except UserError as exc:  # a rule this family's base does not take (a timm base's depth is its own)
            print(f"{rule_name:<14} not for this family: {exc}")
            continue
        for round_to in (1, 8):
            timer = benchmark.Timer(stmt="solve(rule, budget, 'params', round_to)", num_threads=1,
                                    globals={"solve": solve, "rule": rule, "budget": args.budget, "round_to": round_to})
            m = timer.blocked_autorange(min_run_time=0.5)
            print(f"{rule_name:<14} {round_to:>8} {m.median * 1e3:>11.2f} ms {m.iqr * 1e3:>7.2f} ms")

    command = [sys.executable, "-m", "archfamily", "scale", "--family", args.family, "--params", str(args.budget)]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "ARCHFAMILY_CACHE": cache}
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        print(f"whole command, empty cache (new process): {(time.perf_counter() - start) * 1e3:.0f} ms")
        times = []
        for _ in range(args.cli_runs):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env)
            times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=4)
    print(f"whole command, warm cache (new process, copycat): median {statistics.median(times) * 1e3:.0f} ms, "
          f"IQR {(q[2] - q[0]) * 1e3:.0f} ms over {len(times)} runs")


if __name__ == "__main__":
    main()
