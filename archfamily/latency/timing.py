"""Timing networks honestly: torch.utils.benchmark on the CPU, CUDA events on a GPU, interleaved rounds.

Each round measures every case once, in the same order (A B C A B C ...), so slow drift of a shared machine
hits all cases alike, and every timing runs with glibc's malloc keeping the memory it frees (see `allocator`),
so large activations are not page-faulted anew on some passes. The reported figure is the median over all
timed samples of all rounds (on the CPU each sample is the mean of one `blocked_autorange` block; on a GPU one
call), with the interquartile range as its spread.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.utils import benchmark

from archfamily.latency import allocator
from archfamily.training.precision import cpu_model
from archfamily.checks import read_json
from archfamily.errors import UserError


@dataclass(frozen=True)
class Timing:
    median_ms: float
    iqr_ms: float
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "malloc": allocator.setting()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cuda_times(fn: Callable[[], Any], iters: int) -> list[float]:
    """Seconds per call, each call bracketed by CUDA events and synchronised."""
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return times


MIN_CPU_SHARE = 0.5  # of one core: below it the process was held off the CPU while it was being timed
ATTEMPTS = 5
BACKOFF_S = 1.0  # the wait before the second attempt, doubled before each next: 15 s in all before giving up


def _cpu_times(fn: Callable[[], Any], threads: int, min_run_time: float) -> list[float]:
    """One `blocked_autorange` of `fn`, taken again (up to ATTEMPTS in all) while this process got less than half
    a core during it: a stall of the whole window (a busier process, a VM's stolen time, swapping) is not the
    network's latency, and a measurement is cached for good. `scale --latency-ms` once read 41 ms for a member
    that takes 1.24 ms. Between attempts it waits (1, 2, 4, 8 s), so a passing burst of other work does not end
    a long run that times as it goes (`derive --cost latency`); when every attempt stalls it is a one-line
    error: no figure beats a wrong one."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
        wall, cpu = time.perf_counter(), time.process_time()
        times = timer.blocked_autorange(min_run_time=min_run_time).times
        share = (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-9)
        if share >= MIN_CPU_SHARE:
            return times
    raise UserError(f"this process got {share:.0%} of a core while being timed, {ATTEMPTS} times over "
                    f"{BACKOFF_S * (2 ** (ATTEMPTS - 1) - 1):g} s: the "
                    "machine is too busy to time a network; stop other work and run the command again (with "
                    "--resume, a derive or training continues where it stopped)")


def _summary(times: list[float]) -> Timing:
    if len(times) < 2:
        return Timing(times[0] * 1e3, 0.0, len(times))
    q = statistics.quantiles(times, n=4)
    return Timing(statistics.median(times) * 1e3, (q[2] - q[0]) * 1e3, len(times))


def time_interleaved(cases: dict[str, Callable[[], Any]], device: torch.device, threads: int = 1, rounds: int = 3,
                     min_run_time: float = 0.2, warmup: int = 2,
                     on_case: Optional[Callable[[str], None]] = None) -> dict[str, Timing]:
    """Median and IQR (ms per call) of each case, measured in `rounds` interleaved rounds, with malloc keeping
    freed memory (`allocator`: otherwise large activations are page-faulted anew on some passes)."""
    allocator.keep_freed_memory()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for fn in cases.values():
                for _ in range(warmup):
                    fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            samples: dict[str, list[float]] = {label: [] for label in cases}
            for _ in range(rounds):
                for label, fn in cases.items():
                    if device.type == "cuda":
                        samples[label] += _cuda_times(fn, iters=max(5, int(min_run_time * 100)))
                    else:
                        samples[label] += _cpu_times(fn, threads, min_run_time)
                    if on_case:
                        on_case(label)
    finally:
        torch.set_num_threads(previous_threads)
    return {label: _summary(times) for label, times in samples.items()}


def peak_gflops(device: torch.device, threads: int = 1, dtype: torch.dtype = torch.float32) -> float:
    """Measured GFLOP/s of one large matrix product in `dtype`: the ceiling networks are compared with."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    timing = time_interleaved({"matmul": lambda: a @ b}, device, threads, rounds=1, min_run_time=0.3)["matmul"]
    return 2 * n**3 / (timing.median_ms / 1e3) / 1e9


def read_timing_cache(path: Path, high: float) -> dict[str, float]:
    """A cache file of measured timings (key -> positive float below `high`); a damaged one is only a cache, so
    what is unreadable or out of range is dropped and measured again."""
    try:
        entries = read_json(path) if path.is_file() else {}
    except UserError:
        entries = {}
    return {k: v for k, v in entries.items() if isinstance(v, float) and 0 < v < high} \
        if isinstance(entries, dict) else {}
