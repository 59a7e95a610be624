"""What the report and the plots both read off a bench row: the setting they show, and the runtime it was timed in."""
from __future__ import annotations

from typing import Any


def headline(rows: list[dict[str, Any]]) -> tuple[str, int, str]:
    """The setting the summary and the plots show: the GPU if measured, else the most CPU threads; channels_last
    if measured."""
    dev = "cuda" if any(r["device"] == "cuda" for r in rows) else "cpu"
    threads = max(r["threads"] for r in rows if r["device"] == dev)
    fmt = "channels_last" if any(r["format"] == "channels_last" for r in rows) else "nchw"
    return dev, threads, fmt


def runtime_of(row: dict[str, Any]) -> str:
    """The runtime a row was timed in (reports from before runtimes were timed are eager PyTorch)."""
    return row.get("runtime", "eager")
