"""The one registry every kind of plug-in uses: a taken name is refused, a malformed item is refused before it
is added, and `saved()` gives back exactly what was there."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from archfamily.registry import Registry


@dataclass(frozen=True)
class Item:
    name: str
    size: int = 0


def _positive(item: Item) -> None:
    if item.size < 0:
        raise ValueError(f"{item.name}: size must be at least 0")


def test_a_taken_name_and_a_malformed_item_are_refused_and_saved_restores() -> None:
    things: Registry[Item] = Registry("thing", check=_positive)
    first = things.add(Item("a"))
    assert things == {"a": first}
    with pytest.raises(ValueError, match="thing 'a' is registered already"):
        things.add(Item("a", 1))
    with pytest.raises(ValueError, match="b: size must be at least 0"):
        things.add(Item("b", -1))
    with pytest.raises(ValueError, match="a thing needs a name"):
        things.add(Item(""))
    assert list(things) == ["a"]
    with things.saved():
        things.add(Item("c"))
        del things["a"]
        assert list(things) == ["c"]
    assert things == {"a": first}


def test_a_registry_that_replaces_takes_the_second_item_of_a_name() -> None:
    families: Registry[Item] = Registry("family", replaces=True)
    families.add(Item("a", 1))
    assert families.add(Item("a", 2)) is families["a"] and families["a"].size == 2
