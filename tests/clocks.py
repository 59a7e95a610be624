"""A clock the tests control (`archfamily.latency.timing.Clock`): every timing archfamily takes reads it in the
tests (conftest's `clock` fixture), so what they check of timing does not depend on the machine's load."""
from __future__ import annotations

from typing import Any, Callable, Union

from torch.utils._python_dispatch import TorchDispatchMode

from archfamily.latency.timing import Clock, Usage

SPREAD = (0.98, 1.0, 1.0, 1.02)  # one block's samples, as fractions of the call's time: a median and an IQR


class _Kernels(TorchDispatchMode):
    """Counts the kernels (aten operators) a call runs."""

    count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


class FakeClock:
    """Times a call as what it returns where that is a number (ms: the tests' stand-in networks and operations),
    else as `ms_per_kernel` for each kernel it runs (at least one), so a network takes about what its operations
    timed alone add up to, as the latency model expects. The machine is idle, or busy where `busy` says so (True,
    or a function of the block's number, from 0): a busy block reads `slowdown` times slower and its threads wait
    for a CPU all the while, as on the 2-core machine where the bench read 10-80 ms for networks of 0.3 ms.
    `sleep` waits no time; with `idle_after_sleep` the other work has stopped by the time it returns."""

    def __init__(self, ms_per_kernel: float = 0.05, slowdown: float = 50.0) -> None:
        self.ms_per_kernel, self.slowdown = ms_per_kernel, slowdown
        self.busy: Union[bool, Callable[[int], bool]] = False
        self.idle_after_sleep = False
        self.now = self.cpu = self.waited = 0.0
        self.blocks = 0
        self.slept: list[float] = []

    @property
    def clock(self) -> Clock:
        return Clock(self.block, self.usage, self.sleep)

    def block(self, fn: Callable[[], Any], threads: int, min_run_time: float) -> list[float]:
        with _Kernels() as kernels:
            value = fn()
        ms = float(value) if isinstance(value, (int, float)) else self.ms_per_kernel * max(kernels.count, 1)
        busy = self.busy(self.blocks) if callable(self.busy) else self.busy
        self.blocks += 1
        samples = [ms / 1e3 * (self.slowdown if busy else 1.0) * f for f in SPREAD]
        self.now += sum(samples)
        self.cpu += sum(samples)
        self.waited += sum(samples) if busy else 0.0
        return samples

    def usage(self) -> Usage:
        return Usage(self.now, self.cpu, self.waited)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.idle_after_sleep:
            self.busy = False
