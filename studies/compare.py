"""Two finished studies of the same plan side by side, as RESULTS.md gives them: every row's test error beside the
earlier study's, the bench's batch-1 latency, and each of the paper's findings as gaps between arms.

    python studies/compare.py studies/cifar10-cpu-fast3 studies/cifar10-cpu-bf16

Reads each study's `results.json` (the study writes it) and the newer one's `bench/results.json`; prints
Markdown. A gap between two arms is called resolved when it exceeds twice the larger of their two seed spreads
(sample sd) and the study's pooled spread: two seeds' sd alone can come out near 0 by chance (12.48 and
12.48), so the spread pooled over every row with seeds (root mean square of their sds) is the floor. pruned-tuned is the pruning run's own network (one,
no seeds); a row still missing planned seeds is not judged.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any, Optional

# (finding, better arm, worse arm): the paper says the first beats the second
FINDINGS = (
    ("i", "reduced-width", "pruned-tuned"), ("i", "bottleneck", "pruned-tuned"),
    ("ii", "pruned-scratch", "pruned-tuned"), ("ii", "pruned-scratch", "reduced-width"),
    ("ii", "pruned-scratch", "bottleneck"),
    ("iii", "copycat", "reduced-width"), ("iii", "copycat", "bottleneck"),
    ("iii", "fitted", "reduced-width"), ("iii", "fitted", "bottleneck"),
)


def rows_of(study: Path) -> dict[tuple[int, str], dict[str, Any]]:
    results = json.loads((study / "results.json").read_text())
    return {(r["budget"], r["arm"]): r for r in results["rows"]}


def bench_of(study: Path) -> dict[tuple[int, str], dict[str, Any]]:
    path = study / "bench" / "results.json"
    if not path.is_file():
        return {}
    return {(r["budget"], r["network"]): r for r in json.loads(path.read_text())["rows"]}


def error_text(row: Optional[dict[str, Any]]) -> str:
    if row is None or not row["test_errors"]:
        return "-"
    seeds = ", ".join(f"{e:.2f}" for e in row["test_errors"])
    if len(row["test_errors"]) == 1:
        return f"{row['mean']:.2f}%"
    return f"{row['mean']:.2f} ± {row['sd']:.2f}% ({seeds})"


def latency_text(bench: dict[tuple[int, str], dict[str, Any]], budget: int, arm: str) -> str:
    row = bench.get((budget, arm))
    if row is None:
        return "-"
    text = f"{row['median_ms']:.2f} ({row['iqr_ms']:.2f})"
    masked = bench.get((budget, "pruned (masked)"))
    if arm == "pruned-tuned" and masked is not None:
        text += f"; masked {masked['median_ms']:.2f} ({masked['iqr_ms']:.2f})"
    return text


def table(new: Path, old: Path) -> list[str]:
    rows, before, bench = rows_of(new), rows_of(old), bench_of(new)
    lines = [f"| budget | arm | params | MACs | test error (seeds) | `{old.name}` | batch-1 ms (IQR) |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for (budget, arm), row in sorted(rows.items(), key=lambda kv: -kv[0][0]):
        lines.append(f"| {row['budget_label']} | {arm} | {row['params']:,} | {row['macs'] / 1e6:.1f}M | "
                     f"{error_text(row)} | {error_text(before.get((budget, arm)))} | "
                     f"{latency_text(bench, budget, arm)} |")
    return lines


def gaps(rows: dict[tuple[int, str], dict[str, Any]]) -> list[str]:
    """Each finding's gaps at each budget: points the better arm is ahead (negative: behind)."""
    floor = pooled_spread(rows)
    budgets = sorted({b for b, _ in rows}, reverse=True)
    labels = {b: r["budget_label"] for (b, _), r in rows.items()}
    lines = ["| finding | arms | " + " | ".join(labels[b] for b in budgets) + " |",
             "|---|---|" + "---:|" * len(budgets)]
    for finding, better, worse in FINDINGS:
        cells = []
        for budget in budgets:
            a, b = rows.get((budget, better)), rows.get((budget, worse))
            if a is None or b is None or not a["test_errors"] or not b["test_errors"]:
                cells.append("-")
                continue
            gap = b["mean"] - a["mean"]
            if any(len(r["test_errors"]) < r["seeds_planned"] for r in (a, b)):
                cells.append(f"{gap:+.2f} (seeds to run)")
                continue
            spread = max(a["sd"] or 0.0, b["sd"] or 0.0, floor)
            cells.append(f"{gap:+.2f} ({'resolved' if abs(gap) > 2 * spread else 'within seeds'})")
        lines.append(f"| ({finding}) | {better} vs {worse} | " + " | ".join(cells) + " |")
    return lines


def pooled_spread(rows: dict[tuple[int, str], dict[str, Any]]) -> float:
    """The seed spread pooled over every row with two or more seeds (all rows have the same count here)."""
    return math.sqrt(statistics.fmean(r["sd"] ** 2 for r in rows.values() if r["sd"] is not None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path, help="the study folder to report")
    parser.add_argument("old", type=Path, help="the earlier study of the same plan, beside it")
    args = parser.parse_args()
    for study in (args.new, args.old):
        if not (study / "results.json").is_file():
            parser.error(f"{study} has no results.json: run `archfamily study` on its plan first")
    print("\n".join(table(args.new, args.old)))
    print()
    for study in (args.new, args.old):
        rows = rows_of(study)
        print(f"Gaps in `{study.name}`, points (positive: the first arm is better; its pooled seed spread "
              f"{pooled_spread(rows):.2f}):\n")
        print("\n".join(gaps(rows)))
        print()


if __name__ == "__main__":
    main()
