"""Timing networks honestly: torch.utils.benchmark on the CPU, CUDA events on a GPU, interleaved rounds, and on
the CPU no figure taken while this process did not get its cores.

Each round measures every case once, in the same order (A B C A B C ...), so slow drift of a shared machine
hits all cases alike, and every timing runs with glibc's malloc keeping the memory it frees (see `allocator`),
so large activations are not page-faulted anew on some passes. The reported figure is the median over all
timed samples of all rounds (on the CPU each sample is the mean of one `blocked_autorange` block; on a GPU one
call), with the interquartile range as its spread.

Every CPU window (one case's block in one round) is checked against this process's clocks (`Window`): a window
in which the process got less than half a core (a stall: a busier process, a VM's stolen time, swapping), or in
which its threads waited for a CPU more than a tenth of a core's time (other work ran on the cores it was timed
on), is not the network's latency. On this project's 2-core EPYC, with one other process busy, a 3x3 conv timed
on 2 threads read 8-17 ms against 0.25 ms idle, while the process still got a whole core; its threads had waited
a whole core's time. Such a window is taken again; what happens when it stays busy is the caller's choice
(`refuse`): every timing that is cached or decides something (the latency table, latency budgets, pruning against
latency) refuses in one line, and the bench marks the figure `busy` instead. Where the clocks come from is a
`Clock`, so the tests check all of this with one they control.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import torch
from torch.utils import benchmark

from archfamily.latency import allocator
from archfamily.training.precision import cpu_model
from archfamily.errors import UserError


@dataclass(frozen=True)
class Timing:
    median_ms: float
    iqr_ms: float
    runs: int
    busy: bool = False  # some window of it was taken while this process did not get its cores (`Window`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "malloc": allocator.setting()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@dataclass(frozen=True)
class Usage:
    """This process's clocks at one moment, in seconds: wall time, CPU time its threads ran, and time its threads
    were runnable but waited for a CPU (None where the kernel does not say)."""

    wall: float
    cpu: float
    waited: Optional[float]


@dataclass(frozen=True)
class Clock:
    """Where every CPU timing's figures come from: `block(fn, threads, min_run_time)` times `fn` (seconds per
    call, one sample per block), `usage()` reads this process's clocks around it, `sleep(s)` waits before a busy
    window is taken again."""

    block: Callable[[Callable[[], Any], int, float], list[float]]
    usage: Callable[[], Usage]
    sleep: Callable[[float], None]


def _blocked_autorange(fn: Callable[[], Any], threads: int, min_run_time: float) -> list[float]:
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(
        min_run_time=min_run_time).times


def _run_queue_wait() -> Optional[float]:
    """Seconds this process's threads have waited on a run queue, summed (Linux's per-thread schedstat: its
    second field); None where no thread's can be read."""
    total, read = 0, False
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in threads:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
            read = True
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended since the listing
    return total / 1e9 if read else None


def _usage() -> Usage:
    return Usage(time.perf_counter(), time.process_time(), _run_queue_wait())


CLOCK = Clock(_blocked_autorange, _usage, time.sleep)  # the machine's; `time_interleaved` reads it at each call

MIN_CPU_SHARE = 0.5  # of one core: below it the process was held off the CPU while it was being timed
MAX_WAIT = 0.1  # cores: its threads waited longer than this for a CPU, so other work ran on the cores it was timed on
ATTEMPTS = 5
BACKOFF_S = 1.0  # the wait before the second attempt, doubled before each next: 15 s in all before giving up


@dataclass(frozen=True)
class Window:
    """What this process got during one timed window: `share`, the cores its threads ran on; `waiting`, the
    cores' worth of time they waited for one (None where the kernel does not say)."""

    share: float
    waiting: Optional[float]

    @staticmethod
    def between(before: Usage, after: Usage) -> "Window":
        wall = max(after.wall - before.wall, 1e-9)
        waiting = None if before.waited is None or after.waited is None else \
            max(0.0, after.waited - before.waited) / wall  # a thread that ended in between takes its wait away
        return Window((after.cpu - before.cpu) / wall, waiting)

    @property
    def busy(self) -> bool:
        return self.share < MIN_CPU_SHARE or (self.waiting is not None and self.waiting > MAX_WAIT)

    def describe(self) -> str:
        waited = "" if self.waiting is None else f" and its threads waited {self.waiting:.2f} cores' worth for one"
        return f"this process got {self.share:.0%} of a core{waited}"


def _cpu_times(fn: Callable[[], Any], threads: int, min_run_time: float, clock: Clock,
               refuse: bool) -> tuple[list[float], bool]:
    """One block of `fn`, taken again (up to ATTEMPTS in all) while its window was busy; the samples and whether
    the last window still was. Refusing, it waits between attempts (1, 2, 4, 8 s), so a passing burst of other
    work does not end a long run that times as it goes (`derive --cost latency`), and a window that stays busy
    is a one-line error: no figure beats a wrong one, and a measurement is cached for good (`scale
    --latency-ms` once read 128 ms for a member that takes 0.5 ms, cached it, and refused every rerun). Marking,
    it does not wait: the bench times many cases, and a marked figure is already no latency."""
    for attempt in range(ATTEMPTS):
        if attempt and refuse:
            clock.sleep(BACKOFF_S * 2 ** (attempt - 1))
        before = clock.usage()
        times = clock.block(fn, threads, min_run_time)
        window = Window.between(before, clock.usage())
        if not window.busy:
            return times, False
    if refuse:
        raise UserError(f"{window.describe()} while being timed, {ATTEMPTS} times over "
                        f"{BACKOFF_S * (2 ** (ATTEMPTS - 1) - 1):g} s: the machine is too busy to time a network; stop "
                        "other work and run the command again (with --resume, a derive or training continues where it "
                        "stopped)")
    return times, True


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


def _summary(times: list[float], busy: bool) -> Timing:
    if len(times) < 2:
        return Timing(times[0] * 1e3, 0.0, len(times), busy)
    q = statistics.quantiles(times, n=4)
    return Timing(statistics.median(times) * 1e3, (q[2] - q[0]) * 1e3, len(times), busy)


def time_interleaved(cases: dict[str, Callable[[], Any]], device: torch.device, threads: int = 1, rounds: int = 3,
                     min_run_time: float = 0.2, warmup: int = 2, on_case: Optional[Callable[[str], None]] = None,
                     refuse: bool = True, clock: Optional[Clock] = None) -> dict[str, Timing]:
    """Median and IQR (ms per call) of each case, measured in `rounds` interleaved rounds, with malloc keeping
    freed memory (`allocator`: otherwise large activations are page-faulted anew on some passes). On the CPU a
    window that stays busy is a one-line error, or with `refuse=False` marks its case's timing `busy`; `clock`
    is the machine's (`CLOCK`) unless a test gives its own."""
    clock = clock or CLOCK
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
            busy = {label: False for label in cases}
            for _ in range(rounds):
                for label, fn in cases.items():
                    if device.type == "cuda":
                        samples[label] += _cuda_times(fn, iters=max(5, int(min_run_time * 100)))
                    else:
                        times, stalled = _cpu_times(fn, threads, min_run_time, clock, refuse)
                        samples[label] += times
                        busy[label] |= stalled
                    if on_case:
                        on_case(label)
    finally:
        torch.set_num_threads(previous_threads)
    return {label: _summary(times, busy[label]) for label, times in samples.items()}


def peak_gflops(device: torch.device, threads: int = 1, dtype: torch.dtype = torch.float32,
                refuse: bool = True) -> tuple[float, bool]:
    """Measured GFLOP/s of one large matrix product in `dtype`: the ceiling networks are compared with; and
    whether it was taken on a busy machine (only with `refuse=False`)."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    timing = time_interleaved({"matmul": lambda: a @ b}, device, threads, rounds=1, min_run_time=0.3,
                              refuse=refuse)["matmul"]
    return 2 * n**3 / (timing.median_ms / 1e3) / 1e9, timing.busy
