"""Timing the bench's networks: every network in every runtime and setting (device, threads, batch, memory
format), interleaved so that drifts of a shared machine fall on all of them alike, as a share of the matmul
peak measured in the same run.

Runtimes: `eager` PyTorch (or `torch.compile`d with `compile`), and `onnxruntime`: each network exported once
by `archfamily export`'s ONNX writer and run by ONNX Runtime's CPU provider with the setting's thread count
(memory format does not apply to it: its input is NCHW).
"""
from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from archfamily.bench.select import BenchNet, TrainedGroup, networks, trained_networks
from archfamily.errors import UserError
from archfamily.hub.export import check_onnx_installed, write_onnx
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


RUNTIMES = ("eager", "onnxruntime")


def check_runtimes(runtimes: tuple[str, ...]) -> None:
    """One-line errors for an unknown runtime, or ONNX Runtime asked for where it is not installed."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise UserError(f"unknown runtime {', '.join(unknown) or '(none)'}; choose from {', '.join(RUNTIMES)}")
    if "onnxruntime" in runtimes:
        check_onnx_installed()
        if importlib.util.find_spec("onnxruntime") is None:
            raise UserError('--runtime onnxruntime needs onnxruntime: pip install -e ".[onnx]"')


def _prepare_onnx(net: BenchNet, folder: Path, batch: int, threads: int) -> Callable[[], Any]:
    """An ONNX Runtime session of `net` (exported once into `folder`) on `threads` CPU threads."""
    import onnxruntime

    path = folder / f"net-{id(net)}.onnx"
    if not path.is_file():
        write_onnx(net.build(), path, net.spec.input_size, net.spec.in_chans)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(batch, net.spec.in_chans, net.spec.input_size, net.spec.input_size).numpy()
    return lambda: session.run(None, {"images": x})


def _prepare(net: BenchNet, device: torch.device, batch: int, fmt: str, compile_model: bool) -> Callable[[], Any]:
    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    model = net.build().to(device, memory_format=memory_format).eval()
    if compile_model:
        model = torch.compile(model)
    x = torch.randn(batch, net.spec.in_chans, net.spec.input_size, net.spec.input_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    return lambda: model(x)


def run(family: Family, config: BenchConfig, zoo_entries: list[dict[str, Any]],
        trained: Optional[list[TrainedGroup]] = None) -> dict[str, Any]:
    """Time every network in every setting (the trained ones, if given); returns the report as a JSON-ready dict."""
    nets = trained_networks(family, config.budgets, config.metric, trained) if trained else \
        networks(family, config.budgets, config.metric, config.round_tos, zoo_entries)
    settings = [(dev, threads if dev == "cpu" else 1, batch, fmt)
                for dev in config.devices for threads in (config.threads if dev == "cpu" else (1,))
                for batch in config.batches for fmt in config.formats]
    peaks: dict[str, float] = {}
    rows = []
    runtimes = {dev: [r for r in config.runtimes if dev == "cpu" or r == "eager"] for dev in config.devices}
    total = sum(len(runtimes[dev]) for dev, _, _, _ in settings) * len(nets) * config.rounds
    with progress_bar(total=total, desc="bench", unit="timing") as bar, \
            tempfile.TemporaryDirectory(prefix="archfamily-bench-") as onnx_dir:
        for dev, threads, batch, fmt in settings:
            device = torch.device(dev)
            key = f"{dev}:{threads}"
            if key not in peaks:
                peaks[key] = peak_gflops(device, threads)
            bar.set_postfix(setting=f"{key} batch {batch} {fmt}", refresh=False)
            cases = {}
            for n in nets:
                for runtime in runtimes[dev]:
                    cases[f"{n.label}/{runtime}"] = _prepare(n, device, batch, fmt, config.compile) \
                        if runtime == "eager" else _prepare_onnx(n, Path(onnx_dir), batch, threads)
            timings = time_interleaved(cases, device, threads, config.rounds, config.min_run_time,
                                       on_case=lambda _: bar.update(1))
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
            "machine": machine_info(), "peak_gflops": peaks, "trajectory_errors": measured,
            "config": asdict(config), "rows": rows}


def _trained_fields(group: TrainedGroup) -> dict[str, Any]:
    return {"test_error_std": group.std, "test_errors": group.errors, "seeds": group.seeds,
            "test_images": sorted(group.test_images), "sources": group.sources}
