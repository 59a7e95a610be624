"""The arithmetic a run trains in: float32, or bfloat16 autocast where the hardware has bf16 units.

bf16 is a per-machine choice. On CUDA and on CPUs with bf16 dot-product instructions
(AVX-512 `avx512_bf16`, or AMX) autocast runs convolutions and matmuls in bf16 at
about twice the float32 rate (a WRN-16-2 training step 2.2x on a 2-core AMD Zen 5);
on AVX2-only CPUs oneDNN emulates bf16 and it is slower than float32. `auto` picks
by that rule for a new run and keeps a resumed run's recorded precision; a run records
the precision it resolved to, so a resume cannot switch arithmetic half-way.
"""
from __future__ import annotations

from typing import Optional

import torch

from archfamily.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 dot-product units (Linux /proc/cpuinfo flags; elsewhere: no)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return any(f in flags for f in _BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


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
