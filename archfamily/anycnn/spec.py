"""A member of a timm CNN's family: the base's timm name and one width per channel group.

This is all it takes to rebuild the network (timm builds the base, `network.build_member` resizes it), so it is
what a family's trajectory, a scaled member and an exported model record. Counts are exact and need no network:
the base's count table (`table.CountTable`: its traced groups, its counts by `torch.utils.flop_counter`, and the
shape of every layer a group occupies) gives any member's. The table is measured once per base and kept under
`$ARCHFAMILY_CACHE/timm-tables/`, keyed by the versions of timm, Torch-Pruning and torch and by the code that
measures it, so reading a family and scaling it import neither torch nor timm.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Optional

from archfamily.anycnn.keywords import check_plain
from archfamily.anycnn.table import CountTable
from archfamily.families import ChannelGroup
from archfamily.errors import UserError
from archfamily.files import atomic_write_json, cache_dir
from archfamily.specs import _round_width

if TYPE_CHECKING:
    import torch
    from torch import nn

PREFIX = "timm:"  # `--base timm:mobilenetv2_050`
ModelKwargs = tuple[tuple[str, Any], ...]  # timm's create_model keywords of a base, sorted (hashable)


def parse_model_kwargs(texts: Mapping[str, str]) -> dict[str, Any]:
    """`--model-kwargs output_stride=16` as timm's train.py reads it: each value a Python literal (16, 0.2, True,
    None), else the text itself (a layer's name)."""
    kwargs: dict[str, Any] = {}
    for key, text in texts.items():
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            kwargs[key] = text
    return kwargs


def _model_kwargs(value: Any) -> ModelKwargs:
    """A base's timm keywords as the spec holds them (from a dict, or the pairs a spec already holds); raises
    ValueError saying why for any that archfamily sets itself, that loads weights, or that a file could not hold
    (`keywords.check_plain`). What the base's model takes is checked where it is built (`network.create`). A whole number
    written as 16.0 is 16, as JSON has one kind of number (and the caches of traced bases could not tell them
    apart)."""
    items = list(value.items()) if isinstance(value, Mapping) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError("model_kwargs must map timm's keyword names to values")
    pairs = []
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError("model_kwargs must map timm's keyword names to values")
        key, val = item
        check_plain(key, val)
        pairs.append((key, int(val) if isinstance(val, float) and val.is_integer() else val))
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("model_kwargs names a keyword twice")
    return tuple(sorted(pairs))


TABLE_FORMAT = 1  # the count table's JSON form (`CountTable.to_dict`)


def _table_path(key: tuple[Any, ...]) -> Path:
    """Where the table of a base (`key`) is kept: one file per base, named by a hash of the key, of the versions of
    torch, timm and Torch-Pruning, and of the code that traces and measures it (a change to any measures again)."""
    versions = [metadata.version(p) for p in ("torch", "timm", "torch-pruning")]
    code = hashlib.sha256(b"".join(f.read_bytes() for f in sorted(Path(__file__).parent.glob("*.py")))).hexdigest()
    digest = hashlib.sha256(json.dumps([TABLE_FORMAT, versions, code, key]).encode()).hexdigest()[:20]
    return cache_dir() / "timm-tables" / f"{key[0]}-{digest}.json"


@functools.lru_cache(maxsize=16)
def base_table(name: str, num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
               model_kwargs: ModelKwargs = ()) -> CountTable:
    """The count table of timm's `name` with this head, input and keywords: read from the cache when this code
    and these versions measured it before (a damaged file is measured again), else measured and kept."""
    key = (name, num_classes, in_chans, input_size, [list(kv) for kv in model_kwargs])
    path = _table_path(key)
    try:
        return CountTable.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    from archfamily.anycnn.network import measure_table

    table = measure_table(name, num_classes, in_chans, input_size, model_kwargs)
    try:
        atomic_write_json(path, table.to_dict())
    except (OSError, UserError):  # a read-only cache: the table is kept for this process only
        pass
    return table


def channel_groups(name: str, num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
                   model_kwargs: ModelKwargs = ()) -> tuple[ChannelGroup, ...]:
    """Every channel group of timm's `name`, from its count table."""
    return base_table(name, num_classes, in_chans, input_size, model_kwargs).groups


@dataclass(frozen=True)
class TimmSpec:
    """A timm CNN at some widths: `widths[i]` is the width of `channel_groups(base)[i]`.

    It is the spec of the `timm` family (`anycnn.family`), so everything that reads a spec (files, family.json,
    the scaling rules, timm's `archfamily_timm`) reads it as any other. A timm base has no stages archfamily
    knows: each group is its own (its `stage_ratios` are its `block_ratios`), and its depth is its own.
    `model_kwargs` are the base's own timm keywords (`output_stride=16` keeps a larger final map at 32x32).
    """

    family: ClassVar[str] = "timm"
    base: str
    widths: tuple[int, ...]
    num_classes: int = 10
    in_chans: int = 3
    input_size: int = 32
    model_kwargs: ModelKwargs = ()

    def __post_init__(self) -> None:
        """A spec read from a file is checked here: a timm model, and one whole width of at least 1 per group."""
        if not isinstance(self.base, str):
            raise ValueError("base must be a timm model's name")
        if not isinstance(self.widths, (list, tuple)) or not all(type(w) is int and w >= 1 for w in self.widths):
            raise ValueError("widths must be whole numbers of at least 1")
        object.__setattr__(self, "widths", tuple(self.widths))
        for key, least in (("num_classes", 0), ("in_chans", 1), ("input_size", 1)):  # 0 classes: timm's no head
            if type(getattr(self, key)) is not int or getattr(self, key) < least:
                raise ValueError(f"{key} must be a whole number of at least {least}")
        object.__setattr__(self, "model_kwargs", _model_kwargs(self.model_kwargs))
        groups = self.groups
        if len(self.widths) != len(groups):
            raise ValueError(f"{self.base} has {len(groups)} channel groups, not {len(self.widths)}")

    @classmethod
    def of_base(cls, base: str, num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
                model_kwargs: Mapping[str, Any] | ModelKwargs = ()) -> "TimmSpec":
        kwargs = _model_kwargs(model_kwargs)
        groups = channel_groups(base, num_classes, in_chans, input_size, kwargs)
        return cls(base, tuple(g.width for g in groups), num_classes, in_chans, input_size, kwargs)

    @property
    def groups(self) -> tuple[ChannelGroup, ...]:
        return self.table.groups

    @property
    def table(self) -> CountTable:
        """The count table of this member's base."""
        return base_table(self.base, self.num_classes, self.in_chans, self.input_size, self.model_kwargs)

    def build(self, device: Optional[str | "torch.device"] = None, **kwargs: Any) -> "nn.Module":
        """The network at these widths: timm's base, its grouped layers resized (and initialised afresh), with
        `spec` set to this spec (as archfamily's own networks have it). `kwargs` are timm's."""
        from archfamily.anycnn.network import build_member

        return build_member(self, device, **kwargs)
    def num_params(self) -> int:
        return self.table.counts(self.widths)[0]

    def num_macs(self, input_size: int | None = None) -> int:
        spec = self if input_size in (None, self.input_size) else replace(self, input_size=input_size)
        return spec.table.counts(spec.widths)[1]

    # What the scaling rules read (`scaling.rules`): every group is a prunable width, so copycat's ratios cover
    # residual streams too (the `all` policy prunes them; under `inner` their ratio stays 1 and they scale with
    # alpha, as a WRN's stage widths do). A width is at least one channel: a group that vanished would cut the
    # network in two.

    def prunable_widths(self) -> list[int]:
        return list(self.widths)

    def residual_widths(self) -> list[bool]:
        """Which widths are residual streams (tied to an addition), which the bottleneck rule keeps."""
        return [not g.inner for g in self.groups]

    def with_prunable_widths(self, widths: list[int]) -> "TimmSpec":
        if len(widths) != len(self.widths) or any(not isinstance(w, int) or w < 1 for w in widths):
            raise UserError(f"{self.base}: widths must be {len(self.widths)} whole numbers of at least 1")
        return replace(self, widths=tuple(widths))

    def scaled(self, outer: float, inner: list[float], round_to: int = 1) -> "TimmSpec":
        """Every group's width set to `inner` (rounded to `round_to`, and to whole convolution groups where a
        grouped convolution holds it; at least one step); `outer` has nothing left to scale, since every width is a
        group's."""
        steps = [math.lcm(round_to, g.step) for g in self.groups]  # a grouped convolution's widths: whole groups
        return replace(self, widths=tuple(max(step, _round_width(w, step)) for w, step in zip(inner, steps)))

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return self.widths

    def prunable_stages(self) -> list[int]:
        return list(range(len(self.widths)))

    def block_counts(self) -> list[int]:
        return [1] * len(self.widths)

    def with_block_counts(self, counts: list[int]) -> "TimmSpec":
        if list(counts) == self.block_counts():
            return self
        raise UserError(f"{self.base}: a timm base's depth is its own; scale it by width (copycat, fitted, "
                        "reduced-width)")

    def pool_size(self, input_size: int = 32) -> tuple[int, int]:
        """The side of the feature map the head pools: the input over the base's last feature reduction."""
        side = max(1, -(-input_size // _reduction(self.base, self.model_kwargs)))
        return side, side

    def timm_cfg(self) -> dict[str, Any]:
        """What timm's pretrained cfg of this member says that its base's cfg decides: the pool size at this
        input, and the input convolution's and the classifier's names (timm adapts them to `in_chans` and
        `num_classes`)."""
        from archfamily.anycnn.network import pretrained_cfg

        cfg = pretrained_cfg(self.base)
        names = {"first_conv": cfg.first_conv, "classifier": cfg.classifier} if cfg is not None else {}
        # one name each, as an export's config holds it: the first where the cfg names several (FastViT's two
        # input convolutions)
        names = {k: v if isinstance(v, str) else v[0] for k, v in names.items() if v}
        return {"pool_size": self.pool_size(self.input_size), **names}

    def native_input_size(self) -> int:
        """The side of the images timm's pretrained cfg of the base says it was trained at (224 for most)."""
        from archfamily.anycnn.network import pretrained_cfg

        cfg = pretrained_cfg(self.base)
        return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224

    def feature_indices(self) -> tuple[int, ...]:
        """timm's features_only out_indices: the levels timm's own `features_only` of the base returns."""
        from archfamily.anycnn.network import feature_indices

        return feature_indices(self.base, self.model_kwargs)

    def ratios(self, base: "TimmSpec") -> list[float]:
        """Each group's width as a share of the base's: a trajectory point's `block_ratios`."""
        return [w / b for w, b in zip(self.widths, base.widths)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`specs.spec_to_dict`): the base's timm keywords as an object, and only if it has any, so
        files written before they existed are unchanged."""
        own = {"model_kwargs": dict(self.model_kwargs)} if self.model_kwargs else {}
        return {"family": "timm", "base": self.base, "widths": list(self.widths), "num_classes": self.num_classes,
                "in_chans": self.in_chans, "input_size": self.input_size, **own}


def with_model_kwargs(spec: Any, model_kwargs: Mapping[str, Any]) -> Any:
    """`spec` built with these timm keywords too (`--model-kwargs`); only a timm base takes them."""
    if not model_kwargs:
        return spec
    if not isinstance(spec, TimmSpec):
        raise UserError(f"model kwargs are timm's create_model keywords, for a timm:NAME network, not a {spec.family}")
    merged = {**dict(spec.model_kwargs), **model_kwargs}
    try:
        if spec.widths == tuple(g.width for g in spec.groups):  # the base itself: its widths under the keywords
            return TimmSpec.of_base(spec.base, spec.num_classes, spec.in_chans, spec.input_size, merged)
        return replace(spec, model_kwargs=_model_kwargs(merged))
    except ValueError as exc:
        raise UserError(f"{spec.base}: {exc}") from None


def _reduction(name: str, model_kwargs: ModelKwargs = ()) -> int:
    from archfamily.anycnn.network import feature_info

    return int(feature_info(name, model_kwargs)[-1].get("reduction", 32))


def timm_network(spec: TimmSpec, **kwargs: Any) -> "nn.Module":
    """The `timm` family's network of `spec` (how `models.build_model` and timm's `archfamily_timm` build it).
    """
    kwargs.pop("spec", None)
    spec = replace(spec, num_classes=kwargs.pop("num_classes", spec.num_classes),
                   in_chans=kwargs.pop("in_chans", spec.in_chans))
    return spec.build(**kwargs)
