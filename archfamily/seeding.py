"""Derived random generators: one per (seed, purpose, step), so every random choice is reproducible on resume."""
from __future__ import annotations

import torch


def generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by mixing `keys`, e.g. (seed, purpose, step)."""
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + k) % (2**63)
    return torch.Generator().manual_seed(seed)
