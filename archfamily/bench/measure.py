"""Timing the bench's networks: every network in every runtime and setting (device, threads, batch, memory
format), interleaved so that drifts of a shared machine fall on all of them alike, as a share of the matmul
peak measured in the same run. The runtimes (`eager`, `onnxruntime`) are those `runtimes.RUNTIMES` registers.

A figure taken while this process did not get its cores (`latency.timing.Window`) is kept but marked: its row
says `busy`, as `peaks_busy` does for a peak, and the report marks it and leaves it out of the plots. The bench
caches nothing, so a busy figure lasts only as long as its report.
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from archfamily.bench.runtimes import RUNTIMES, Setting
from archfamily.bench.select import TrainedGroup, networks, trained_networks
from archfamily.pruning.family_file import Family
from archfamily.progress import progress_bar
from archfamily.specs import spec_to_dict
from archfamily.latency.timing import machine_info, peak_gflops, time_interleaved


@dataclass(frozen=True)
class BenchConfig:
    budgets: tuple[int, ...]
    metric: str = "params"
    devices: tuple[str, ...] = ("cpu",)
    threads: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1, 64, 256)
    formats: tuple[str, ...] = ("nchw", "channels_last")
    round_tos: tuple[int, ...] = (1, 8, 16)
    rounds: int = 3
    min_run_time: float = 0.2
    compile: bool = False
    runtimes: tuple[str, ...] = ("eager",)


QUICK = dict(batches=(1, 64), formats=("channels_last",), round_tos=(1, 8), rounds=1, min_run_time=0.05)


def run(family: Family, config: BenchConfig, zoo_entries: list[dict[str, Any]],
        trained: Optional[list[TrainedGroup]] = None) -> dict[str, Any]:
    """Time every network in every setting (the trained ones, if given); returns the report as a JSON-ready dict."""
    nets = trained_networks(family, config.budgets, config.metric, trained) if trained else \
        networks(family, config.budgets, config.metric, config.round_tos, zoo_entries)
    settings = [(dev, threads if dev == "cpu" else 1, batch, fmt)
                for dev in config.devices for threads in (config.threads if dev == "cpu" else (1,))
                for batch in config.batches for fmt in config.formats]
    peaks: dict[str, float] = {}
    peaks_busy: list[str] = []
    rows = []
    runtimes = {dev: [r for r in config.runtimes if dev in RUNTIMES[r].devices] for dev in config.devices}
    total = sum(len(runtimes[dev]) for dev, _, _, _ in settings) * len(nets) * config.rounds
    with progress_bar(total=total, desc="bench", unit="timing") as bar, \
            tempfile.TemporaryDirectory(prefix="archfamily-bench-") as scratch:
        for dev, threads, batch, fmt in settings:
            device = torch.device(dev)
            key = f"{dev}:{threads}"
            if key not in peaks:
                peaks[key], busy = peak_gflops(device, threads, refuse=False)
                peaks_busy += [key] if busy else []
            bar.set_postfix(setting=f"{key} batch {batch} {fmt}", refresh=False)
            cases = {}
            setting = Setting(device, threads, batch, fmt, config.compile, Path(scratch))
            for n in nets:
                for runtime in runtimes[dev]:
                    cases[f"{n.label}/{runtime}"] = RUNTIMES[runtime].prepare(n, setting)
            timings = time_interleaved(cases, device, threads, config.rounds, config.min_run_time,
                                       on_case=lambda _: bar.update(1), refuse=False)
            for n, runtime in ((n, r) for n in nets for r in runtimes[dev]):
                t = timings[f"{n.label}/{runtime}"]
                seconds = t.median_ms / 1e3
                gflops = 2 * n.spec.num_macs() * batch / seconds / 1e9
                rows.append({
                    "budget": n.budget, "network": n.kind, "params": n.spec.num_params(), "macs": n.spec.num_macs(),
                    "executed_macs": family.base.num_macs() if n.kind == "pruned (masked)" else n.spec.num_macs(),
                    "device": dev, "runtime": runtime, "threads": threads, "batch": batch, "format": fmt,
                    **t.to_dict(),
                    "images_per_s": batch / seconds, "gflops": gflops, "peak_share": gflops / peaks[key],
                    "test_error": n.error, "spec": spec_to_dict(n.spec),
                    **(_trained_fields(n.trained) if n.trained else {}),
                })
    measured = [{"params": e["params"], "macs": e["macs"], "test_error": e["test_error"]}
                for e in family.trajectory if e.get("test_error") is not None]
    return {"format": "archfamily.bench", "version": 1, "family": str(family.path), "metric": config.metric,
            "machine": machine_info(), "peak_gflops": peaks, "peaks_busy": peaks_busy, "trajectory_errors": measured,
            "config": asdict(config), "rows": rows}


def _trained_fields(group: TrainedGroup) -> dict[str, Any]:
    return {"test_error_std": group.std, "test_errors": group.errors, "seeds": group.seeds,
            "test_images": sorted(group.test_images), "sources": group.sources}
