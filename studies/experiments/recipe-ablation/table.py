"""Print the ablation tables of `run.sh`'s runs as Markdown, one per budget (5 and 20 epochs): each row's recipe,
errors per seed, their mean, and the difference of means from its recipe's own baseline row at that budget
(negative: better): at 5 epochs the bf16 row for `fast`, the translate-2 row (`fast` with translate=2, which is
what `fast2` is) for `fast2`; at 20 epochs the plain `fast2-muon` row; with mirror-and-shift TTA beside.
The recipe is read from each run's `run.json`, so a row whose seeds ran on different recipes shows as such, with
no difference.

    python studies/experiments/recipe-ablation/table.py
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
# (rows, the row each recipe's changes are measured against) of each budget's table
TABLES = {
    5: (["fp32", "bf16", "flip-alternating", "ema", "translate-2", "lookahead", "batch-512", "norm-bias-lr-4",
         "norm-bias-lr-16", "muon-lr-0.005", "muon-lr-0.01", "muon-lr-0.02"],
        {"fast": "bf16", "fast2": "translate-2"}),
    20: (["e20-fast2-muon", "e20-translate-4"], {"fast2-muon": "e20-fast2-muon"}),
}


def runs(row: str) -> list[Path]:
    return [d for d in (HERE / "runs" / f"{row}-s{seed}" for seed in (0, 1)) if (d / "metrics.json").is_file()]


def metric(row: str, key: str) -> list[float]:
    return [json.loads((d / "metrics.json").read_text())[key] for d in runs(row)]


def recipe(row: str) -> str:
    """The recipe a row's seeds ran on (its changes aside), or both names if they differ."""
    names = [json.loads((d / "run.json").read_text())["config"]["recipe"] for d in runs(row)]
    return " / ".join(dict.fromkeys(names))


def main() -> None:
    for epochs, (rows, baselines) in TABLES.items():
        print_table(epochs, rows, baselines)


def print_table(epochs: int, rows: list[str], baselines: dict[str, str]) -> None:
    print(f"\n{epochs} epochs:\n")
    print("| row | recipe | test error % (seeds 0, 1) | mean | vs its recipe's baseline | "
          "with mirror+shift TTA (mean) | minutes per run |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in rows:
        plain = metric(row, "test_error")
        if not plain:
            continue
        ran_on = recipe(row)
        base_row = baselines.get(ran_on)
        baseline = metric(base_row, "test_error") if base_row and base_row != row else []
        delta = statistics.mean(plain) - statistics.mean(baseline) if baseline else None
        minutes = [s / 60 for s in metric(row, "seconds")]
        print(f"| {row} | `{ran_on}` | {', '.join(f'{e:.2f}' for e in plain)} | {statistics.mean(plain):.2f} | "
              f"{'' if delta is None else f'{delta:+.2f}'} | {statistics.mean(metric(row, 'test_error_tta_shift')):.2f} | "
              f"{statistics.median(minutes):.1f} |")


if __name__ == "__main__":
    main()
