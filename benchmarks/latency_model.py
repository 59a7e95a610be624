"""How well the latency model predicts measured latency: random family members, predicted vs measured.

    python benchmarks/latency_model.py --family studies/cifar10-cpu/runs/prune-fisher-k2e25

Draws `--members` random members of the family (every rule, sizes log-uniform from 5% to 100% of the base,
widths rounded to 1 or 8), then for each setting (runtime x thread count x batch) fits the model's two costs (per
operation, per MB of activations) on references timed in the same interleaved rounds as the members (the base
and its reduced-width members at 10% and 30% of its params, and the copycat member at 30% where the family has
one; `--references N` keeps the first N), predicts each member and measures it as `bench` does (eager
channels_last, or exported to ONNX Runtime; interleaved rounds, median). Prints each setting's median,
90th-percentile and worst error and the table's cost; `--rows` also prints every member. Run it on a quiet machine: the table and the measurements share its noise. Asserts nothing.

    python benchmarks/latency_model.py --family RUN --runtimes eager,onnxruntime --threads 1 --batches 1
"""
from __future__ import annotations

import argparse
import json
import math
import random
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch

from archfamily.errors import UserError
from archfamily.pruning.family_file import load_family
from archfamily.bench.runtimes import RUNTIMES, Setting
from archfamily.bench.select import BenchNet
from archfamily.latency.model import LatencyModel
from archfamily.models import build_model
from archfamily.scaling.rules import RULES, make_rule, solve
from archfamily.latency.timing import machine_info, time_interleaved


def _members(family, count: int, seed: int) -> list[tuple[str, int, object]]:
    rng = random.Random(seed)
    base = family.trajectory[0]["params"]
    found = []
    for attempt in range(100 * count):
        if len(found) == count:
            break
        rule_name, round_to = tuple(RULES)[attempt % len(RULES)], rng.choice((1, 8))
        budget = int(base * math.exp(rng.uniform(math.log(0.05), 0.0)))
        try:
            rule = make_rule(rule_name, family.base, family.trajectory, family.rules)
            found.append((f"{rule_name}/{round_to}", budget, solve(rule, budget, "params", round_to).member.spec))
        except UserError:  # a rule this family lacks, or a budget outside its reach: draw again
            continue
    return found


def _references(family, count: int) -> list:
    """The networks the model's costs are fitted on: the base, its reduced-width members at 10% and 30% of its
    params, and the copycat member at 30% (where the family has that rule), the first `count` of them."""
    base = family.base.num_params()
    found = [family.base]
    for rule_name, share in (("reduced-width", 0.1), ("reduced-width", 0.3), ("copycat", 0.3)):
        try:
            rule = make_rule(rule_name, family.base, family.trajectory, family.rules)
            found.append(solve(rule, int(base * share), "params").member.spec)
        except UserError:  # a family without that rule
            continue
    return found[:count]


def _runner(net: BenchNet, batch: int, runtime: str, threads: int, folder: Path):
    """One call of `net` as `bench` times it (`bench.runtimes`): eager channels_last, or in ONNX Runtime, exported
    once into `folder`."""
    return RUNTIMES[runtime].prepare(net, Setting(torch.device("cpu"), threads, batch, "channels_last", False, folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, help="a derive run folder or its family.json")
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--references", type=int, default=4, help="how many networks the costs are fitted on (2-4)")
    parser.add_argument("--runtimes", default="eager", help="eager, onnxruntime or both, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", help="the lookup table's cache file [$ARCHFAMILY_CACHE/latency-table.json]")
    parser.add_argument("--rows", action="store_true", help="print every member's figures")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    family = load_family(args.family)
    members = _members(family, args.members, args.seed)
    cpu = torch.device("cpu")
    references = _references(family, args.references)
    print(f"{machine_info()['cpu']}, torch {torch.__version__}; family {family.path}; {len(members)} members; "
          f"costs fitted on {len(references)} references")
    print(f"{'runtime':>11} {'threads':>7} {'batch':>5} {'median |err|':>12} {'p90 |err|':>9} {'worst':>7} "
          f"{'overhead/op':>11} {'per MB':>8} {'table pts':>9} {'table s':>7}")
    report = []
    folder = Path(tempfile.mkdtemp(prefix="latency-model-"))
    nets = {spec: BenchNet(0, name, spec, lambda spec=spec: build_model(spec))  # one each: exported once
            for name, spec in [("reference", s) for s in references] + [(n, s) for n, _, s in members]}
    for runtime, threads, batch in itertools.product(args.runtimes.split(","), map(int, args.threads.split(",")),
                                                     map(int, args.batches.split(","))):
        model = LatencyModel(cpu, threads, batch, Path(args.table) if args.table else None, runtime=runtime)
        # references and members timed in the same interleaved rounds, so the machine's drift over minutes (10-20%
        # here) moves both alike instead of reading as the model's error
        cases = {f"r{i}": _runner(nets[spec], batch, runtime, threads, folder) for i, spec in enumerate(references)}
        cases |= {f"{i}": _runner(nets[spec], batch, runtime, threads, folder) for i, (_, _, spec) in enumerate(members)}
        measured = time_interleaved(cases, cpu, threads, rounds=args.rounds)
        started = time.perf_counter()
        overhead, per_mb = model.calibrate(references,
                                           lambda spec: measured[f"r{references.index(spec)}"].median_ms)
        predicted = [model.predict(spec) for _, _, spec in members]
        table_seconds = time.perf_counter() - started
        errors = [p / measured[f"{i}"].median_ms - 1 for i, p in enumerate(predicted)]
        worst = max(errors, key=abs)
        p90 = statistics.quantiles([abs(e) for e in errors], n=10)[-1] if len(errors) > 1 else abs(worst)
        print(f"{runtime:>11} {threads:>7} {batch:>5} {statistics.median(abs(e) for e in errors):>11.1%} "
              f"{p90:>9.1%} {worst:>+7.1%} {overhead * 1e3:>9.1f}us "
              f"{per_mb * 1e3:>6.1f}us {model.measured:>9} {table_seconds:>7.1f}")
        rows = [{"member": name, "budget": budget, "params": spec.num_params(), "predicted_ms": p,
                 "measured_ms": measured[f"{i}"].median_ms, "iqr_ms": measured[f"{i}"].iqr_ms, "error": e}
                for i, ((name, budget, spec), p, e) in enumerate(zip(members, predicted, errors))]
        if args.rows:
            for r in rows:
                print(f"    {r['member']:<16} {r['params']:>9,} params  predicted {r['predicted_ms']:8.3f} ms  "
                      f"measured {r['measured_ms']:8.3f} ms (IQR {r['iqr_ms']:.3f})  {r['error']:+.1%}")
        report.append({"runtime": runtime, "threads": threads, "batch": batch, "overhead_ms_per_op": overhead,
                       "references": [{"params": spec.num_params(), "measured_ms": measured[f"r{i}"].median_ms,
                                       "iqr_ms": measured[f"r{i}"].iqr_ms} for i, spec in enumerate(references)],
                       "ms_per_mb": per_mb,
                       "table_points_measured": model.measured, "table_seconds": table_seconds, "rows": rows})
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_info(), "settings": report}, indent=2) + "\n")


if __name__ == "__main__":
    main()
