"""Checking what archfamily reads from files before it uses any of it.

`read_json` decodes a file at the edge (unreadable, not UTF-8, not JSON, NaN or
infinity, nested too deeply, an integer too long to convert: each one line), and
`Fields` reads one JSON object field by field, checking each value's type and range.
Every failure is a `UserError` that names the file and the field, so a command says
one line and exits 2 before it writes anything.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

from archfamily.errors import UserError

MAX_JSON_BYTES = 64 * 2**20  # far above any file archfamily writes; a larger one is not one of them
MAX_COUNT = 10**15  # parameters, MACs, steps: whole numbers above this are damage, not networks


def _constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def decode_json(text: str | bytes, where: str) -> Any:
    """JSON from text, strictly: no NaN or infinity; one-line errors that start with `where`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{where}: not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to be an archfamily file") from None
    except ValueError as exc:  # NaN / Infinity, or an integer of thousands of digits
        raise UserError(f"{where}: {str(exc).splitlines()[0]}") from None


def read_json(path: Path) -> Any:
    """A JSON file, decoded at the edge."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise UserError(f"{path}: {path.stat().st_size:,} bytes is too large to be an archfamily file")
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return decode_json(raw, str(path))


def is_whole(value: Any, lo: int, hi: int) -> bool:
    """A JSON whole number (not a bool, not a float) in [lo, hi]."""
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def is_number(value: Any) -> bool:
    """A finite JSON number that converts to a float (an integer of 400 digits does not)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and abs(value) < 1e300 \
        and math.isfinite(value)


class Fields:
    """One JSON object of a file, read field by field; `where` names the file (and the object in it).

    Every key read must be present; `optional=True` lets its value be null.
    """

    def __init__(self, data: Any, where: str, required: Sequence[str] = ()) -> None:
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a JSON object, found {type(data).__name__}")
        missing = [k for k in required if k not in data]
        if missing:
            raise UserError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
        self.data, self.where = data, where

    def fail(self, key: str, what: str) -> NoReturn:
        raise UserError(f"{self.where}: {key} {what}")

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise UserError(f"{self.where}: missing {key!r}")
        return self.data[key]

    def int(self, key: str, lo: int = 0, hi: int = MAX_COUNT, optional: bool = False) -> Optional[int]:
        value = self.get(key)
        if value is None and optional:
            return None
        if not is_whole(value, lo, hi):
            self.fail(key, f"must be a whole number from {lo:,} to {hi:,}, got {show(value)}")
        return value

    def number(self, key: str, lo: float = -math.inf, hi: float = math.inf, optional: bool = False) -> Optional[float]:
        value = self.get(key)
        if value is None and optional:
            return None
        if not is_number(value) or not lo <= value <= hi:
            self.fail(key, f"must be a finite number from {lo:g} to {hi:g}, got {show(value)}")
        return float(value)

    def str(self, key: str, choices: Optional[Sequence[str]] = None, optional: bool = False) -> Optional[str]:
        value = self.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or (choices is not None and value not in choices):
            expected = f"one of {', '.join(choices)}" if choices is not None else "a string"
            self.fail(key, f"must be {expected}, got {show(value)}")
        return value

    def obj(self, key: str, required: Sequence[str] = ()) -> "Fields":
        return Fields(self.get(key), f"{self.where}: {key}", required)

    def list(self, key: str, length: Optional[int] = None, nonempty: bool = False) -> list[Any]:
        value = self.get(key)
        if not isinstance(value, list) or (length is not None and len(value) != length) or (nonempty and not value):
            expected = f"a list of {length}" if length is not None else "a non-empty list" if nonempty else "a list"
            self.fail(key, f"must be {expected}, got {show(value)}")
        return value

    def numbers(self, key: str, length: int, lo: float = -math.inf, hi: float = math.inf) -> list[float]:
        values = self.list(key, length)
        if not all(is_number(v) and lo <= v <= hi for v in values):
            self.fail(key, f"must hold finite numbers from {lo:g} to {hi:g}")
        return [float(v) for v in values]

    def ints(self, key: str, length: int, lo: int = 0, hi: int = MAX_COUNT) -> list[int]:
        values = self.list(key, length)
        if not all(is_whole(v, lo, hi) for v in values):
            self.fail(key, f"must hold whole numbers from {lo:,} to {hi:,}")
        return values


def show(value: Any) -> str:
    """A short quote of a bad value for an error message."""
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError):  # an integer too long to print, a list too deep
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
