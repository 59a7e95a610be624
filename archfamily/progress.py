"""Progress bars that also read well in a log file.

On a terminal this is tqdm as usual. When stderr is not a terminal (a log file, a study's
job log, CI), tqdm's carriage returns would make the whole run one line of hundreds of
kilobytes; there each refresh is its own line instead, at most one every `LOG_INTERVAL_S`.
"""
from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class _Lines:
    """A stream for tqdm that turns each redraw (a carriage return, then the bar) into one line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        text = text.replace("\r", "").replace("\x1b[A", "").rstrip()  # and the spaces tqdm pads a redraw with
        if text.strip() and text != self.last:  # closing redraws the last line: once is enough
            self.stream.write(text + "\n")
            self.last = text

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(**kwargs: Any) -> tqdm:
    """A tqdm bar on stderr: redrawn in place on a terminal, a line every 30 s elsewhere (and at the end)."""
    stream = kwargs.pop("file", sys.stderr)
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(file=stream, dynamic_ncols=True, **kwargs)
    kwargs = {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S, "ncols": 100, **kwargs}
    return tqdm(file=_Lines(stream), **kwargs)
