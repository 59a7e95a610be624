"""A run folder's `metrics.json`: what one trained (`archfamily train`) or measured (`archfamily measure`) network
scored, written and read here only.

Every file holds `test_error` (percent; `test_error_no_ema`, `test_error_tta`, `test_error_tta_shift` where
measured), `test_images`, `params`, `macs`, `spec` and `seed` (null for a measured file that records none); a
training adds `recipe`, `precision` (absent in files from before it was recorded) and `seconds`, a measurement
`source` and `data`. Files already written keep reading: no key is ever renamed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from archfamily.checks import Fields, read_json
from archfamily.files import atomic_write_json
from archfamily.limits import MAX_SECONDS
from archfamily.specs import ArchSpec, spec_from_dict, spec_to_dict

METRICS_FILE = "metrics.json"
ERRORS = ("test_error", "test_error_no_ema", "test_error_tta", "test_error_tta_shift", "final_test_error")  # the first in every file


@dataclass(frozen=True)
class Metrics:
    """One metrics.json, checked: its figures, and the whole document as written."""

    test_error: float
    test_images: int
    spec: ArchSpec
    seed: Optional[int]
    seconds: Optional[float]  # how long the training took; None for a measurement
    document: dict[str, Any] = field(repr=False)

    @property
    def params(self) -> int:
        return self.document["params"]

    @property
    def macs(self) -> int:
        return self.document["macs"]


def metrics_document(spec: ArchSpec, errors: Mapping[str, float], test_images: int, seed: Optional[int],
                     **extra: Any) -> dict[str, Any]:
    """The metrics of one network: its test errors (`test_error` and any of `ERRORS`), the images measured, its
    counts, seed and spec, and what the writer adds (a training: recipe, precision, seconds)."""
    return {**errors, "test_images": test_images, "params": spec.num_params(), "macs": spec.num_macs(),
            "seed": seed, "spec": spec_to_dict(spec), **extra}


def write_metrics(folder: Path, document: Mapping[str, Any]) -> Path:
    """`folder/metrics.json`, written atomically."""
    path = Path(folder) / METRICS_FILE
    atomic_write_json(path, dict(document))
    return path


def read_metrics(path: Path) -> Metrics:
    """A metrics.json (or the run folder holding one), every figure checked: errors in [0, 100], counts those of
    its spec, the seed and seconds in range; each problem one line naming the file and the key."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    m = Fields(read_json(path), str(path), ("test_error", "test_images", "params", "macs", "spec"))
    for key in ERRORS:
        if key in m.data:
            m.number(key, 0, 100)
    spec = spec_from_dict(m.get("spec"), f"{path}: spec")
    if (m.int("params", 1), m.int("macs", 1)) != (spec.num_params(), spec.num_macs()):
        m.fail("params", "and macs are not those of the network its spec describes")
    seed = m.int("seed", optional=True) if "seed" in m.data else None
    seconds = m.number("seconds", 0, MAX_SECONDS) if "seconds" in m.data else None
    return Metrics(m.number("test_error", 0, 100), m.int("test_images", 1), spec, seed, seconds, m.data)
