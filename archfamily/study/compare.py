"""`archfamily study compare NEW OLD`: two finished studies of one plan side by side, in Markdown.

Every row's test error beside the older study's, the newer study's batch-1 latency from its bench, and each of
the paper's findings as gaps between arms. A gap is called resolved when it exceeds twice the larger of its two
rows' seed spreads (sample sd) and the study's pooled spread: two seeds' sd alone can come out near 0 by chance,
so the spread pooled over every row with seeds (root mean square of their sds) is the floor. pruned-tuned is the
pruning run's own network (one, no seeds); a row still missing planned seeds is not judged.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Optional

from archfamily.checks import Fields, read_json
from archfamily.errors import UserError

Rows = dict[tuple[int, str], dict[str, Any]]

# (finding, better arm, worse arm): the paper says the first beats the second
FINDINGS = (
    ("i", "reduced-width", "pruned-tuned"), ("i", "bottleneck", "pruned-tuned"),
    ("ii", "pruned-scratch", "pruned-tuned"), ("ii", "pruned-scratch", "reduced-width"),
    ("ii", "pruned-scratch", "bottleneck"),
    ("iii", "copycat", "reduced-width"), ("iii", "copycat", "bottleneck"),
    ("iii", "fitted", "reduced-width"), ("iii", "fitted", "bottleneck"),
)
ROW_KEYS = ("budget", "budget_label", "arm", "params", "macs", "test_errors", "mean", "sd", "seeds_planned")


def rows_of(study: Path) -> Rows:
    """A study's results.json rows by (budget, arm), each checked for the fields the comparison reads."""
    path = study / "results.json"
    if not path.is_file():
        raise UserError(f"{study} has no results.json: run `archfamily study` on its plan first")
    rows: Rows = {}
    for i, row in enumerate(Fields(read_json(path), str(path), ("rows",)).list("rows")):
        r = Fields(row, f"{path}: rows[{i}]", ROW_KEYS)
        r.int("budget", 1), r.str("budget_label"), r.str("arm"), r.int("params", 0), r.number("macs", 0)
        r.number("mean", 0, optional=True), r.number("sd", 0, optional=True), r.int("seeds_planned", 0)
        if not isinstance(row["test_errors"], list) or not all(isinstance(e, (int, float)) for e in row["test_errors"]):
            r.fail("test_errors", "must be a list of numbers")
        rows[(row["budget"], row["arm"])] = row
    return rows


def bench_of(study: Path) -> Rows:
    path = study / "bench" / "results.json"
    if not path.is_file():
        return {}
    return {(r["budget"], r["network"]): r for r in Fields(read_json(path), str(path), ("rows",)).list("rows")
            if isinstance(r, dict) and "budget" in r and "network" in r}


def error_text(row: Optional[dict[str, Any]]) -> str:
    if row is None or not row["test_errors"]:
        return "-"
    if len(row["test_errors"]) == 1:
        return f"{row['mean']:.2f}%"
    seeds = ", ".join(f"{e:.2f}" for e in row["test_errors"])
    return f"{row['mean']:.2f} ± {row['sd']:.2f}% ({seeds})"


def latency_text(bench: Rows, budget: int, arm: str) -> str:
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


def pooled_spread(rows: Rows) -> float:
    """The seed spread pooled over every row with two or more seeds (0 where no row has them)."""
    sds = [r["sd"] ** 2 for r in rows.values() if r["sd"] is not None]
    return math.sqrt(statistics.fmean(sds)) if sds else 0.0


def gaps(rows: Rows) -> list[str]:
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


def compare(new: Path, old: Path) -> str:
    """The whole report: the side-by-side table, then each study's gaps."""
    parts = ["\n".join(table(new, old)), ""]
    for study in (new, old):
        rows = rows_of(study)
        parts += [f"Gaps in `{study.name}`, points (positive: the first arm is better; its pooled seed spread "
                  f"{pooled_spread(rows):.2f}):", "", "\n".join(gaps(rows)), ""]
    return "\n".join(parts)
