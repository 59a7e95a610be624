"""Steady memory for timing: glibc's malloc told to keep the memory it frees.

With glibc's defaults a freed block above its (moving) mmap threshold goes back to the OS, and the heap's top
is trimmed once more than twice that threshold lies free, so a network at batch 64 page-faults a share of its
activations on every pass, and that share depends on the process's history. On this project's 2-core EPYC the
same WRN-16-2 at batch 64 faulted 50 MB a pass in one fresh process and 82 MB in another (90 and 108 ms), and
a latency table of operations timed alone (which reuse their buffers) cannot predict either. Told to keep freed
memory (no mmap, no trimming: what jemalloc and tcmalloc do, and what PyTorch's CPU performance guide suggests
by recommending them), the same network stops faulting after its first few passes (the heap grows until its
holes hold every activation, then holds). At batch 1 nothing changes: its activations fault in neither
setting, and the latencies were the same (measured on the same machine).

Every timing in archfamily runs with this setting (`timing.time_interleaved` applies it), and `machine_info`
records it. It lasts for the rest of the process: every rank of a `derive --cost latency` run (each builds a latency
model, whose cache key reads the setting) trains on with it. To deploy with the same behaviour, start the process with
`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647` (glibc reads both), or preload jemalloc or tcmalloc.
"""
from __future__ import annotations

import ctypes
import platform
from typing import Optional

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_MAX = -4
TRIM_NEVER = 2**31 - 1  # mallopt takes an int

SETTING = "glibc, freed memory kept (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1)"
_applied: Optional[bool] = None


def is_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def setting() -> str:
    """How this process's malloc behaves while archfamily times: part of a timing's machine description, so it
    applies the setting first (as every timing would) and reports what took effect."""
    return SETTING if keep_freed_memory() else "the system's malloc, as it is"


def keep_freed_memory() -> bool:
    """Tell glibc's malloc, once per process, to serve every block from its heap and never give freed memory
    back; False where malloc is not glibc's (nothing to do: other allocators do not behave this way by
    default) or glibc refused."""
    global _applied
    if _applied is None:
        _applied = False
        if is_glibc():
            libc = ctypes.CDLL(None)
            _applied = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_NEVER))
    return _applied
