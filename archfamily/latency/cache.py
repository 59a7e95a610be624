"""Measured timings kept between runs, each under the machine and setting it was measured in, with its spread.

One file per use (`$ARCHFAMILY_CACHE/latency.json` for whole networks, `latency-table.json` for the latency
model's operations), holding one section per setting (the machine's description from `timing.machine_info`,
device, thread count, batch), read back only by that setting:

    {"format": "archfamily.timings", "version": 1,
     "settings": {"<id>": {"setting": {"cpu": ..., "device": "cpu", "threads": 2, "batch": 1},
                           "timings": {"<key>": {"median_ms": 0.51, "iqr_ms": 0.01, "runs": 12}}}}}

Only figures taken on a machine that gave this process its cores are written (`put` refuses a busy one: see
`timing.Window`). With `remeasure` nothing is read from the file: every figure asked for is measured again and
replaces the old one. The file is only a cache: a damaged one, an entry out of range, or a file of the format
before this one (flat figures, measured before the busy check) reads as empty and is measured again.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from archfamily.checks import is_number, is_whole, read_json
from archfamily.errors import UserError
from archfamily.files import atomic_write_json
from archfamily.latency.timing import Timing

FORMAT, VERSION = "archfamily.timings", 1
MAX_MS = 1e9


def _timing(entry: Any) -> Optional[Timing]:
    """A cached figure, or None for what no measurement writes."""
    if not isinstance(entry, dict) or set(entry) != {"median_ms", "iqr_ms", "runs"}:
        return None
    median, iqr, runs = entry["median_ms"], entry["iqr_ms"], entry["runs"]
    if not (is_number(median) and 0 < median < MAX_MS and is_number(iqr) and 0 <= iqr < MAX_MS
            and is_whole(runs, 1, 10**9)):
        return None
    return Timing(float(median), float(iqr), runs)


def _read(path: Path) -> dict[str, dict[str, Any]]:
    """The file's sections that hold a setting, each with its readable timings."""
    try:
        doc = read_json(path) if path.is_file() else {}
    except UserError:
        return {}
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION \
            or not isinstance(doc.get("settings"), dict):
        return {}
    sections = {}
    for sid, section in doc["settings"].items():
        if isinstance(section, dict) and isinstance(section.get("setting"), dict) \
                and isinstance(section.get("timings"), dict):
            timings = {k: t for k, t in ((k, _timing(e)) for k, e in section["timings"].items()) if t}
            sections[sid] = {"setting": section["setting"], "timings": timings}
    return sections


class TimingCache:
    """One cache file of timings; `setting_id` names a setting's section, `get` and `put` read and write in it."""

    def __init__(self, path: Path, remeasure: bool = False) -> None:
        self.path, self.remeasure = Path(path), remeasure
        self.sections = _read(self.path)
        self.fresh: set[tuple[str, str]] = set()  # (setting, key) measured by this object

    def setting_id(self, setting: dict[str, Any]) -> str:
        """The section of `setting` (a JSON-ready description), made where it is missing."""
        sid = hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]
        self.sections.setdefault(sid, {"setting": setting, "timings": {}})
        return sid

    def get(self, sid: str, key: str) -> Optional[Timing]:
        """The figure measured for `key` in setting `sid` (by this object only, with `remeasure`)."""
        if self.remeasure and (sid, key) not in self.fresh:
            return None
        return self.sections[sid]["timings"].get(key)

    def from_file(self, sid: str, key: str) -> bool:
        """Whether `get` answers with a figure an earlier run measured (read from `path`)."""
        return (sid, key) not in self.fresh and self.get(sid, key) is not None

    def put(self, sid: str, key: str, timing: Timing) -> None:
        if timing.busy:
            raise ValueError("a timing taken on a busy machine is never cached")
        self.sections[sid]["timings"][key] = timing
        self.fresh.add((sid, key))
        atomic_write_json(self.path, {"format": FORMAT, "version": VERSION, "settings": {
            sid: {"setting": s["setting"],
                  "timings": {k: {"median_ms": t.median_ms, "iqr_ms": t.iqr_ms, "runs": t.runs}
                              for k, t in s["timings"].items()}}
            for sid, s in self.sections.items() if s["timings"]}})
