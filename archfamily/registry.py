"""One kind of plug-in registered by name: the families, saliency criteria, scaling rules and bench runtimes are
each a `Registry`, so each kind is added, listed, refused and restored the same way.

A registry is a dict from name to item (the CLI's choices, help and error messages read it as one), with one
way in: `add`, which checks the item and refuses a name that is taken, so two plug-ins cannot silently shadow
each other. Families are the exception (`replaces=True`): a family module imported under two names (a test
helper, a plug-in found both on the path and as an entry point) registers its family twice, and the second is
the same family. `saved()` is how a test adds throwaway plug-ins and leaves the registry as it found it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """Items of one kind by their `.name`; `add` is the one way in."""

    def __init__(self, kind: str, check: Callable[[T], None] | None = None, replaces: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self._check = check
        self._replaces = replaces

    def add(self, item: T) -> T:
        """Register `item` under its name (a ValueError if the item is malformed or the name is taken)."""
        name: Any = getattr(item, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a name, not {name!r}")
        if name in self and not self._replaces:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        if self._check is not None:
            self._check(item)
        self[name] = item
        return item

    @contextlib.contextmanager
    def saved(self) -> Iterator[Registry[T]]:
        """Within the block, register freely; afterwards the registry holds exactly what it held before."""
        before = dict(self)
        try:
            yield self
        finally:
            self.clear()
            self.update(before)
