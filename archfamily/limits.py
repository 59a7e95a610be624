"""The range of every count a user gives, and the one parser for each, shared by the CLI and study plans; the
human-friendly counts (70k, 1.5M, 1e6) they are written in, read by `parse_count` and written by `format_count`.

A count outside its range is refused at the edge in one line (exit 2), before it can become a 36 TB
allocation, a thread pool of two billion threads or a loop that never ends:

- threads (`--threads`, `cpu:N`, a plan's bench threads): 1 to this machine's cores;
- jobs (`study -j`): 1 to `MAX_JOBS`;
- batch sizes timed or measured (`bench --batch`, `scale --batch`, a plan's latency and bench batches): 1 to
  `MAX_BATCH`; a training batch (`--batch-size`, a plan's recipe) 1 to `MAX_TRAIN_BATCH`, its epochs
  above 0 and at most `MAX_EPOCHS`;
- rounds (`bench --rounds`): 1 to `MAX_ROUNDS`;
- widths rounded to (`--round-to`, an arm's `round_to`): 1 to `MAX_ROUND_TO`;
- latency budgets (`scale --latency-ms`, an arm's `latency_ms`): above 0, at most `MAX_LATENCY_MS`;
- seconds a study records: finite, 0 to `MAX_SECONDS`.
"""
from __future__ import annotations

import os
import re

from archfamily.errors import SettingError, UserError

# Human-friendly counts on the command line: 70k, 1M, 1.5e6, 100M, 1000000.
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


MAX_JOBS = 64  # runs at once; several small trainings can share one GPU, but not more than this
MAX_BATCH = 4096  # images per timed batch: larger batches time memory, not the network
MAX_ROUNDS = 100  # interleaved timing rounds; each is seconds per setting
MAX_TRAIN_IMAGES = 50_000  # CIFAR-10's training split: the most --subset can keep
MAX_TEST_IMAGES = 10_000  # and its test split
MAX_TRAIN_BATCH = MAX_TRAIN_IMAGES  # a training batch: at most the training split
MAX_EPOCHS = 10_000  # training epochs: far beyond any recipe (the papers' are 200 and 300)
MAX_ROUND_TO = 256  # the widest hardware multiple widths are rounded to (8, 16 ... 256)
MAX_STEPS = 10**6  # steps between prunes, channels per prune, prunes between measurements: far beyond any run
MAX_SEED = 2**31 - 1  # what torch's and numpy's seeding take
MAX_SECONDS = 10**8  # about three years: a recorded run time above it is damage
MAX_LATENCY_MS = 60_000.0  # a latency budget (`--latency-ms`, a plan's latency_ms): a minute per batch at most
_WHOLE = re.compile(r"[0-9]{1,18}")  # ASCII digits only: '²'.isdigit() is true and int('²') fails


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_count(value: int, lo: int, hi: int, what: str) -> int:
    """`value` when it is a whole number in [lo, hi]; else one line naming `what` and the range. `what` is a flag
    or a file's key as the caller writes it, or a library setting in braces (`"{batch_size}"`: a `SettingError`,
    which the CLI writes with the setting's flag)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        shown = f"{value}" if isinstance(value, int) and len(str(abs(value))) <= 30 else "a number too large"
        if what.startswith("{") and what.endswith("}") and what[1:-1].isidentifier():
            raise SettingError(what + " must be a whole number from {lo:,} to {hi:,}, got {shown}", lo=lo, hi=hi,
                               shown=shown)
        raise UserError(f"{what} must be a whole number from {lo:,} to {hi:,}, got {shown}")
    return value


def parse_whole(text: str, lo: int, hi: int, what: str) -> int:
    """A whole number written in ASCII digits, in [lo, hi]."""
    text = text.strip()
    if not _WHOLE.fullmatch(text):
        if text.isascii() and text.isdigit():
            raise UserError(f"{what} must be a whole number from {lo:,} to {hi:,}, got a number too large")
        raise UserError(f"{what} takes whole numbers such as 1 or 2, got {text!r:.40}")
    return check_count(int(text), lo, hi, what)


def parse_wholes(text: str, lo: int, hi: int, what: str) -> tuple[int, ...]:
    """Comma-separated whole numbers in [lo, hi], at least one, none twice (e.g. `--threads 1,2`)."""
    values = tuple(parse_whole(v, lo, hi, what) for v in text.split(",") if v.strip())
    if not values:
        raise UserError(f"{what} takes comma-separated whole numbers, got {text!r:.40}")
    if len(set(values)) != len(values):
        raise UserError(f"{what} lists a value twice: {text!r:.40}")
    return values


def check_threads(value: int, what: str) -> int:
    return check_count(value, 1, cores(), what)


def parse_threads(text: str, what: str) -> int:
    return parse_whole(text, 1, cores(), what)


def parse_on(on: str) -> tuple[str, int]:
    """`cpu`, `cpu:THREADS` or `cuda` -> (device name, threads; 0 for cpu: all of them, 1 for cuda), checked
    without touching torch; `latency.parse_target` adds what the machine has."""
    name, colon, threads = on.partition(":")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {on!r:.40}: use cpu, cpu:THREADS or cuda")
    if name == "cuda":
        if colon:
            raise UserError(f"cuda takes no thread count or index (it times the current GPU), got {on!r:.40}")
        return name, 1
    if not colon:
        return name, 0
    try:
        return name, parse_threads(threads, "threads")
    except UserError as exc:
        raise UserError(f"malformed thread count in {on!r:.40}: {exc}") from None
