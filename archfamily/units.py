"""Human-friendly counts on the command line: 70k, 1M, 1.5e6, 100M, 1000000."""
from __future__ import annotations

import re

from archfamily.errors import UserError

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}
_PATTERN = re.compile(r"(\d+(?:\.\d*)?(?:e[+-]?\d+)?)\s*([kmgb]?)", re.IGNORECASE | re.ASCII)


def parse_count(text: str, what: str = "count") -> int:
    """'250k' -> 250000; a one-line UserError for anything else."""
    match = _PATTERN.fullmatch(str(text).strip())
    if not match:
        raise UserError(f"malformed {what} {text!r}: use a number with an optional k, M or G suffix (e.g. 250k, 1.5M, 1e6)")
    number = float(match[1]) * _SUFFIX[match[2].lower()]
    if not number < 1e15:  # 1e400 is infinite; no network has a quadrillion of anything
        raise UserError(f"{what} {text!r} is too large")
    value = int(round(number))
    if value < 1:
        raise UserError(f"{what} must be at least 1, got {text!r}")
    return value


def parse_counts(text: str, what: str) -> list[int]:
    """'0.25M,0.5M' -> [250000, 500000]; at least one."""
    counts = [parse_count(part, what) for part in text.split(",") if part.strip()]
    if not counts:
        raise UserError(f"{what} needs at least one number, got {text!r}")
    return counts


def format_count(n: float) -> str:
    """1234567 -> '1.23M'; 999600 -> '1M' (three significant digits, never '1e+03k')."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale * 0.9995:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.0f}"
