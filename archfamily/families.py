"""The registry of base families: every kind of network archfamily builds, prunes, scales and exports.

A family is one `FamilyType`: its spec class (a frozen dataclass that implements `Spec`), its network class (a
`models.ClassifierNet` whose `channel_groups()` lists the channel group of each prunable width, named as
"module:Class" so that this registry and the specs stay free of torch until a network is built), the base names it knows (`wrn-40-2`) and the few facts timm and the
paper's recipes need. archfamily's own three families register in `archfamily.specs`; a new family is one module
that defines its spec and its network and calls `register_family` once (`tests/vgg_family.py` is one).
Import the registry's names from `archfamily.specs`, which registers the built-in families when it is imported:
this module is only the mechanism, below the specs.

Everything that used to keep its own table of families (spec files, base names, `build_model`, the timm
entrypoints and cfgs, the paper's recipes, the zoo manifest) reads this registry.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Protocol

from archfamily.errors import UserError
from archfamily.registry import Registry


class Spec(Protocol):
    """What every spec implements: the exact counts budgets are solved with, and the widths pruning and scaling
    change (one per prunable width, the keys of the network's `channel_groups()`)."""

    family: ClassVar[str]
    num_classes: int
    in_chans: int
    stage_widths: tuple[int, ...]

    def num_params(self) -> int: ...

    def num_macs(self, input_size: Optional[int] = None) -> int: ...

    def prunable_widths(self) -> list[int]: ...

    def with_prunable_widths(self, widths: list[int]) -> "Spec": ...

    def prunable_stages(self) -> list[int]: ...  # the stage of each prunable width

    def block_counts(self) -> list[int]: ...

    def with_block_counts(self, counts: list[int]) -> "Spec": ...

    def scaled(self, outer: float, inner: list[float], round_to: int = 1) -> "Spec": ...


SPEC_METHODS = ("num_params", "num_macs", "prunable_widths", "with_prunable_widths", "prunable_stages", "block_counts",
                "with_block_counts", "scaled")
BaseFactory = Callable[["re.Match[str]", int], Spec]  # (a matched base name, num_classes) -> the base's spec


@dataclass(frozen=True)
class Place:
    """Where a group's channels sit: `dim` "out" or "in" of the layer `module`, or "param" of a parameter outside
    any layer; `count` channels of it (the group's width, or a multiple of it where a flatten spreads one channel
    over several features)."""

    module: str
    dim: str
    count: int
    start: int = 0  # the first of its channels in that dimension (after a concatenation, not 0); -1: not one run


@dataclass(frozen=True)
class ChannelGroup:
    """One coupled group: its name (the layer whose output channels it is first, in Torch-Pruning's order), its
    width in the base, and every layer dimension it occupies."""

    name: str
    width: int
    places: tuple[Place, ...]
    inner: bool  # not tied to a residual stream: one layer makes these channels (the `--groups inner` policy)
    step: int = 1  # its width is a multiple of this: the group width of a grouped (not depthwise) convolution in it
    closable: bool = False  # may lose every channel (a residual branch removed; archfamily's own families)
    branch: str = ""  # the layer whose output is zeroed once the group is closed (a branch's last norm), if any


@dataclass(frozen=True)
class FamilyType:
    """One family, as the registry holds it."""

    name: str  # the spec's `family`, as spec files and `family.json` hold it ("wrn")
    spec: type  # its spec dataclass
    model: str  # "module:Class" of its network (a `models.ClassifierNet` whose `channel_groups()` lists the channel
    # group of each prunable width), imported when the first one is built
    bases: tuple[tuple[str, BaseFactory], ...]  # base-name patterns (full match, lower case) and their specs
    default_base: str  # what timm's `archfamily_<name>` builds without model_args
    width_rows: tuple[str, ...] = ()  # spec fields that are rows of widths (checked when a file is read)
    first_conv: str = "stem"  # timm cfg: the input convolution's module name
    feature_indices: tuple[int, ...] = (0, 1, 2, 3)  # timm's features_only out_indices (the stem, each stage)
    paper_recipe: str = "wrn"  # the recipe `--recipe paper` trains it with from scratch
    paper_finetune: str = "finetune"  # and the fine-tune between prunes
    graph_pruned: bool = False  # its channel groups are traced by Torch-Pruning (`anycnn`), not listed by the
    # network: family.json records which of them a run pruned (`--groups`)

    def model_class(self) -> type:
        module, _, attr = self.model.partition(":")
        return getattr(importlib.import_module(module), attr)

    def base_spec(self, name: str, num_classes: int) -> Optional[Spec]:
        """The spec of base name `name` if it is one of this family's, else None."""
        for pattern, make in self.bases:
            match = re.fullmatch(pattern, name)
            if match:
                return make(match, num_classes)
        return None


def _check_family(family: FamilyType) -> None:
    """A family's name names timm models, and its spec class implements the Spec protocol."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", family.name):
        raise ValueError(f"family name {family.name!r}: lower-case letters, digits and _ (it names timm models)")
    if getattr(family.spec, "family", None) != family.name:
        raise ValueError(f"{family.spec.__name__}.family must be {family.name!r}")
    missing = [m for m in SPEC_METHODS if not callable(getattr(family.spec, m, None))]
    if missing:
        raise ValueError(f"{family.spec.__name__} does not implement the Spec protocol: no {', '.join(sorted(missing))}")


FAMILIES: Registry[FamilyType] = Registry("family", check=_check_family, replaces=True)
register_family = FAMILIES.add
# Built-in families whose modules import torch (and timm): registered the first time a lookup needs them, so a
# library user who reads a timm member's spec file or names `timm:NAME` needs no import of their own, and the
# families that need no torch stay free of it.
LAZY_FAMILIES = {"timm": "archfamily.anycnn.family"}


def load_lazy_families() -> bool:
    """Register the built-in families not registered yet; whether any was."""
    missing = [module for name, module in LAZY_FAMILIES.items() if name not in FAMILIES]
    for module in missing:
        importlib.import_module(module)
    return bool(missing)


def family_names() -> list[str]:
    return sorted(FAMILIES)


def family_type(name: Any, where: str = "spec") -> FamilyType:
    """The registered family `name`; a one-line `UserError` naming the known ones otherwise."""
    if isinstance(name, str) and name not in FAMILIES and name in LAZY_FAMILIES:
        load_lazy_families()
    if not isinstance(name, str) or name not in FAMILIES:
        known = sorted({*FAMILIES, *LAZY_FAMILIES})
        raise UserError(f"{where}: not an archfamily spec: family must be one of {', '.join(known)}")
    return FAMILIES[name]


def all_families() -> list[FamilyType]:
    return [FAMILIES[n] for n in family_names()]
