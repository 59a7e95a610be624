"""The arithmetic a run trains in: float32, or bfloat16 autocast where the hardware has bf16 units.

bf16 is a per-machine choice. On CUDA and on CPUs with bf16 dot-product instructions
(AVX-512 `avx512_bf16`, or AMX) autocast runs convolutions and matmuls in bf16 at
about twice the float32 rate (a WRN-16-2 training step 2.2x on a 2-core AMD Zen 5);
on AVX2-only CPUs oneDNN emulates bf16 and it is slower than float32. `auto` picks
by that rule for a new run and keeps a resumed run's recorded precision; a run records
the precision it resolved to, so a resume cannot switch arithmetic half-way.
"""
from __future__ import annotations

import platform
from typing import Optional

import torch

from archfamily.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo(field: str) -> Optional[str]:
    """The first value of `field` in /proc/cpuinfo (Linux); None where there is no such file or field."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.split(":", 1)[0].strip() == field:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 dot-product units (Linux /proc/cpuinfo flags; elsewhere: no)."""
    flags = (_cpuinfo("flags") or "").split()
    return any(f in flags for f in _BF16_CPU_FLAGS)


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (a virtual machine's name can be as bare as
    "Intel(R) Xeon(R) Processor"), which every speed figure and run record names; the architecture elsewhere."""
    name = _cpuinfo("model name")
    if name is None:
        return platform.processor() or platform.machine()
    family, model = _cpuinfo("cpu family"), _cpuinfo("model")
    return f"{name} (family {family}, model {model})" if family and model else name


def resolve_precision(name: str, device: torch.device, resumed: Optional[str] = None) -> str:
    """`fp32` or `bf16` for `name` (auto, fp32 or bf16) on `device`; `auto` keeps the precision a resumed run
    recorded (`resumed`), so a run started on another kind of machine continues as it began."""
    if name not in PRECISIONS:
        raise UserError(f"unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    if resumed in ("fp32", "bf16"):
        return resumed
    return "bf16" if device.type == "cuda" or cpu_has_bf16() else "fp32"


def default_precision(device: torch.device) -> str:
    """The library's precision when a caller names none: bf16 on CUDA, float32 on any CPU (machine-independent)."""
    return "bf16" if device.type == "cuda" else "fp32"
