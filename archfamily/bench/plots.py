"""The bench's plots (matplotlib, no display): latency vs params, and error vs params and vs latency. A
latency taken on a busy machine (a row's `busy`) is no network's speed: the latency axes leave it out, and say
so where that leaves nothing."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from archfamily.bench.rows import headline, runtime_of  # noqa: E402
from archfamily.files import atomic_write  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def _style(i: int) -> dict[str, Any]:
    """A colour and marker per series that stay distinct for up to 20 series (the default cycle repeats at 10)."""
    return {"color": plt.get_cmap("tab20")(i % 20), "marker": "os^Dv<>ph*"[i % 10]}


def _headline_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The rows of the report's headline setting at its smallest batch (latency), and a label for it."""
    dev, threads, fmt = headline(rows)
    picked = [r for r in rows if (r["device"], r["threads"], r["format"]) == (dev, threads, fmt)]
    batch = min(r["batch"] for r in picked)
    series = [dict(r, network=r["network"] if runtime_of(r) == "eager" else f"{r['network']} ({runtime_of(r)})")
              for r in picked if r["batch"] == batch]  # one series per network and runtime
    return series, f"{dev}, {threads} thread(s), batch {batch}, {fmt}"


def _legend(ax: Any) -> None:
    """The legend, or where every point was left out, a word saying why."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "every latency was taken on a busy machine", ha="center", transform=ax.transAxes)


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    rows, setting = _headline_rows(report["rows"])
    timed = [r for r in rows if not r.get("busy")]
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in sorted({r["network"] for r in timed}):
        pts = sorted((r["params"], r["median_ms"]) for r in timed if r["network"] == name)
        ax.plot([p for p, _ in pts], [t for _, t in pts], marker="o", label=name)
    ax.set(xlabel="parameters", ylabel="latency (ms, median)", title=f"Latency vs params ({setting})", xscale="log")
    _legend(ax)
    written.append(_save(fig, out / "latency_vs_params.png"))
    known = [r for r in rows if r["test_error"] is not None]
    trajectory = report.get("trajectory_errors", [])
    plots = [("params", "parameters", "error_vs_params.png")] if known or trajectory else []
    if known:  # latency is measured only for the benched networks, so only they can be placed here
        plots.append(("median_ms", "latency (ms, median)", "error_vs_latency.png"))
    for x_key, x_label, name in plots:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        if x_key == "params" and trajectory:  # the pruning run's own measurements, pruned and fine-tuned
            pts = sorted((t["params"], t["test_error"]) for t in trajectory)
            ax.plot([p for p, _ in pts], [e for _, e in pts], color="grey", marker=".",
                    label="pruning trajectory (derive's test split)")
        shown = [r for r in known if not r.get("busy")] if x_key != "params" else \
            [r for r in known if runtime_of(r) == "eager"]  # params: once each
        for i, net in enumerate(sorted({r["network"] for r in shown})):  # trained over several seeds: mean and sd
            pts = sorted((r[x_key], r["test_error"], r.get("test_error_std") or 0.0) for r in shown if r["network"] == net)
            ax.errorbar([p for p, _, _ in pts], [e for _, e, _ in pts], yerr=[sd for _, _, sd in pts], linestyle="",
                        capsize=3, label=net, **_style(i))
        title = "Error vs params" if x_key == "params" else f"Error vs latency ({setting})"
        ax.set(xlabel=x_label, ylabel="CIFAR-10 test error (%)", xscale="log", title=title)
        _legend(ax)
        written.append(_save(fig, out / name))
    return written
