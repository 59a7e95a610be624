"""Print the ablation table of `run.sh`'s runs as Markdown: each row's errors per seed, their mean, and the
difference of means from the bf16 `fast` row (negative: better), with mirror-and-shift TTA beside.

    python studies/recipe-ablation/table.py
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
ROWS = ["fp32", "bf16", "flip-alternating", "ema", "translate-2", "lookahead", "batch-512", "no-label-smoothing", "norm-bias-lr-4", "norm-bias-lr-16", "muon-lr-0.01"]


def errors(row: str, key: str) -> list[float]:
    found = []
    for seed in (0, 1):
        metrics = HERE / "runs" / f"{row}-s{seed}" / "metrics.json"
        if metrics.is_file():
            found.append(json.loads(metrics.read_text())[key])
    return found


def main() -> None:
    baseline = errors("bf16", "test_error")
    print("| row | test error % (seeds 0, 1) | mean | vs bf16 `fast` | with mirror+shift TTA (mean) | minutes per run |")
    print("|---|---|---:|---:|---:|---:|")
    for row in ROWS:
        plain = errors(row, "test_error")
        if not plain:
            continue
        tta = errors(row, "test_error_tta_shift")
        minutes = [json.loads((HERE / "runs" / f"{row}-s{s}" / "metrics.json").read_text())["seconds"] / 60
                   for s in (0, 1) if (HERE / "runs" / f"{row}-s{s}" / "metrics.json").is_file()]
        delta = statistics.mean(plain) - statistics.mean(baseline) if baseline and row != "bf16" else None
        print(f"| {row} | {', '.join(f'{e:.2f}' for e in plain)} | {statistics.mean(plain):.2f} | "
              f"{'' if delta is None else f'{delta:+.2f}'} | {statistics.mean(tta):.2f} | "
              f"{statistics.median(minutes):.1f} |")


if __name__ == "__main__":
    main()
