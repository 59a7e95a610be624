"""The bench's report: results.json, results.md (a summary for the headline setting, then every setting)
and the plots. A figure taken on a busy machine (a row's `busy`, a peak in `peaks_busy`) is marked `busy` in
every table, and counted in a line under the title."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from archfamily.bench.rows import headline, runtime_of
from archfamily.files import atomic_write_json, atomic_write_text


def _format_error(row: dict[str, Any]) -> str:
    """'45.73%', or 'mean ± sd (n)' over the seeds of a trained network."""
    if row["test_error"] is None:
        return "-"
    if row.get("test_error_std") is None:
        return f"{row['test_error']:.2f}%"
    return f"{row['test_error']:.2f} ± {row['test_error_std']:.2f}% ({len(row['test_errors'])})"


def _busy(row: dict[str, Any]) -> str:
    return " busy" if row.get("busy") else ""  # reports from before the busy check have no mark


def summary(report: dict[str, Any]) -> list[str]:
    """One table for the headline setting: latency at the smallest batch and throughput at the largest, per runtime."""
    rows = report["rows"]
    dev, threads, fmt = headline(rows)
    picked = [r for r in rows if (r["device"], r["threads"], r["format"]) == (dev, threads, fmt)]
    small, large = min(r["batch"] for r in picked), max(r["batch"] for r in picked)
    runtimes = list(dict.fromkeys(runtime_of(r) for r in picked))
    by_key = {(r["budget"], r["network"], r["params"], r["macs"], runtime_of(r), r["batch"]): r for r in picked}
    networks = list(dict.fromkeys((r["budget"], r["network"], r["params"], r["macs"]) for r in picked))
    head = "".join(f" {rt} batch-{small} ms (IQR) |" for rt in runtimes) + \
        "".join(f" {rt} batch-{large} images/s |" for rt in runtimes)
    lines = [f"\n## Summary: {dev}, {threads} thread{'s' if threads > 1 else ''}, {fmt}\n",
             f"| budget | network | params | MACs |{head} % of peak at batch {large} ({runtimes[0]}) | test error |",
             "|---:|---|---:|---:|" + "---:|" * (2 * len(runtimes) + 2)]
    for key in networks:
        latency = [by_key[(*key, rt, small)] for rt in runtimes]
        throughput = [by_key[(*key, rt, large)] for rt in runtimes]
        lines.append(f"| {key[0]:,} | {key[1]} | {key[2]:,} | {key[3] / 1e6:.1f}M |"
                     + "".join(f" {r['median_ms']:.2f} ({r['iqr_ms']:.2f}){_busy(r)} |" for r in latency)
                     + "".join(f" {r['images_per_s']:.0f}{_busy(r)} |" for r in throughput)
                     + f" {100 * throughput[0]['peak_share']:.1f}% | {_format_error(latency[0])} |")
    return lines


def _markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables, one per setting."""
    m = report["machine"]
    lines = ["# archfamily bench\n", f"Family `{report['family']}`; machine: {m['cpu']}, {m['cores']} cores"
             + (f", {m['gpu']}" if "gpu" in m else "") + f", torch {m['torch']}. Median of all runs, IQR as spread; "
             "GFLOP/s counts the network's useful MACs (a masked network executes its base's).\n"]
    busy = sum(bool(r.get("busy")) for r in report["rows"])
    if busy or report.get("peaks_busy"):
        lines.append(f"**{busy} of {len(report['rows'])} figures, and {len(report.get('peaks_busy', []))} matmul "
                     "peaks, were taken while this process did not get its cores (other work ran): marked busy, "
                     "they are not the networks' speed and are left out of the plots. Run the bench again on an idle "
                     "machine.**\n")
    lines += summary(report)
    settings = sorted({(r["device"], r["threads"], r["batch"], r["format"]) for r in report["rows"]})
    for dev, threads, batch, fmt in settings:
        peak = report["peak_gflops"][f"{dev}:{threads}"]
        peak_busy = " busy" if f"{dev}:{threads}" in report.get("peaks_busy", []) else ""
        lines.append(f"\n## {dev}, {threads} thread{'s' if threads > 1 else ''}, batch {batch}, {fmt} "
                     f"(matmul peak {peak:.0f} GFLOP/s{peak_busy})\n")
        lines.append("| budget | network | runtime | params | MACs | latency ms (IQR) | images/s | GFLOP/s | % of peak "
                     "| test error |")
        lines.append("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in report["rows"]:
            if (r["device"], r["threads"], r["batch"], r["format"]) != (dev, threads, batch, fmt):
                continue
            error = _format_error(r)
            lines.append(f"| {r['budget']:,} | {r['network']} | {runtime_of(r)} | {r['params']:,} | {r['macs'] / 1e6:.1f}M | "
                         f"{r['median_ms']:.2f} ({r['iqr_ms']:.2f}){_busy(r)} | {r['images_per_s']:.0f}{_busy(r)} | "
                         f"{r['gflops']:.1f} | "
                         f"{100 * r['peak_share']:.1f}% | {error} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """results.json, results.md and the plots, each written atomically."""
    from archfamily.bench.plots import write_plots

    atomic_write_json(out / "results.json", report)
    atomic_write_text(out / "results.md", _markdown(report))
    return [out / "results.json", out / "results.md", *write_plots(report, out)]
