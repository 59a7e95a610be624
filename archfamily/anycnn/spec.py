"""A member of a timm CNN's family: the base's timm name and one width per channel group.

This is all it takes to rebuild the network (timm builds the base, `rebuild.resize_layers` resizes it), so it
is what a family's trajectory, a scaled member and an exported model record. Counts are exact: parameters and
MACs (`torch.utils.flop_counter`) of the rebuilt network on the meta device, where no weight is allocated; the
same build checks that the network runs at these widths (a shape mismatch is a one-line error).
"""
from __future__ import annotations

import ast
import functools
import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from archfamily.anycnn.groups import ChannelGroup, trace_groups
from archfamily.anycnn.keywords import check_model_kwargs, check_plain
from archfamily.anycnn.rebuild import refresh_sizes, resize_layers
from archfamily.errors import UserError
from archfamily.specs import _round_width

PREFIX = "timm:"  # `--base timm:mobilenetv2_050`
ModelKwargs = tuple[tuple[str, Any], ...]  # timm's create_model keywords of a base, sorted (hashable)


def _create(name: str, num_classes: int, in_chans: int, model_kwargs: ModelKwargs = (), **kwargs: Any) -> nn.Module:
    """timm's `name`, untrained (nothing is downloaded), built with the base's `model_kwargs` (output_stride...);
    `kwargs` are timm's for this one build (drop_rate, drop_path_rate...). The base's keywords are checked first
    (`keywords.check_model_kwargs`: by the model's signature, on the meta device), so no build with them fails
    inside timm or allocates a network beyond archfamily's limit."""
    import timm

    if not timm.is_model(name) or name.startswith("archfamily_"):
        raise UserError(f"timm has no model {name!r} (timm.list_models() lists them)")
    if model_kwargs:
        check_model_kwargs(name, model_kwargs, num_classes, in_chans)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                     **dict(model_kwargs), **kwargs)
        except (TypeError, ValueError, AssertionError) as exc:
            if not model_kwargs:
                raise
            given = ", ".join(f"{k}={v!r}" for k, v in model_kwargs)
            raise UserError(f"timm's {name} cannot be built with {given} ({str(exc).splitlines()[0][:160]})") from None


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
    (`keywords.check_plain`). What the base's model takes is checked where it is built (`_create`). A whole number
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


@functools.lru_cache(maxsize=16)
def channel_groups(name: str, num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
                   model_kwargs: ModelKwargs = ()) -> tuple[ChannelGroup, ...]:
    """Every channel group of timm's `name`, traced once per process (the base built on the CPU, untrained)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning's note on parameters outside layers
        return tuple(trace_groups(_create(name, num_classes, in_chans, model_kwargs), name, input_size, in_chans))


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
        return channel_groups(self.base, self.num_classes, self.in_chans, self.input_size, self.model_kwargs)

    def build(self, device: Optional[str | torch.device] = None, **kwargs: Any) -> nn.Module:
        """The network at these widths: timm's base, its grouped layers resized (and initialised afresh), with
        `spec` set to this spec (as archfamily's own networks have it). `kwargs` are timm's."""
        if device is None:
            model = _create(self.base, self.num_classes, self.in_chans, self.model_kwargs, **kwargs)
        else:
            with torch.device(device):
                model = _create(self.base, self.num_classes, self.in_chans, self.model_kwargs, **kwargs)
        model = refresh_sizes(resize_layers(model, self.groups, self.widths), self.base, self.input_size,
                              self.in_chans)
        # timm records the keywords a model was created with, to rebuild it from a saved config; this member is
        # rebuilt from its spec (archfamily_timm's model_args), never from its base's keywords, which would clash
        model.__dict__.pop("_model_args", None)
        model.spec = self
        return model

    def num_params(self) -> int:
        return _counts(self)[0]

    def num_macs(self, input_size: int | None = None) -> int:
        spec = self if input_size in (None, self.input_size) else replace(self, input_size=input_size)
        return _counts(spec)[1]

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
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.base)
        names = {"first_conv": cfg.first_conv, "classifier": cfg.classifier} if cfg is not None else {}
        return {"pool_size": self.pool_size(self.input_size), **{k: v for k, v in names.items() if v}}

    def native_input_size(self) -> int:
        """The side of the images timm's pretrained cfg of the base says it was trained at (224 for most)."""
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.base)
        return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224

    def feature_indices(self) -> tuple[int, ...]:
        """timm's features_only out_indices: every feature level the base has."""
        return tuple(range(len(_feature_info(self.base, self.model_kwargs))))

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


@functools.lru_cache(maxsize=64)
def _feature_info(name: str, model_kwargs: ModelKwargs = ()) -> tuple[dict[str, Any], ...]:
    with torch.device("meta"):
        model = _create(name, 10, 3, model_kwargs)
    return tuple(getattr(model, "feature_info", None) or ({"reduction": 32},))


def _reduction(name: str, model_kwargs: ModelKwargs = ()) -> int:
    return int(_feature_info(name, model_kwargs)[-1].get("reduction", 32))


def timm_network(spec: TimmSpec, gated: bool = False, **kwargs: Any) -> nn.Module:
    """The `timm` family's network of `spec` (how `models.build_model` and timm's `archfamily_timm` build it).
    A timm base is pruned through its channel groups' masks (`anycnn.masks`), not gates."""
    if gated:
        raise UserError(f"{spec.base}: a timm base is pruned through its channel groups, not gates")
    kwargs.pop("spec", None)
    spec = replace(spec, num_classes=kwargs.pop("num_classes", spec.num_classes),
                   in_chans=kwargs.pop("in_chans", spec.in_chans))
    return spec.build(**kwargs)


@functools.lru_cache(maxsize=4096)
def _counts(spec: TimmSpec) -> tuple[int, int]:
    """(params, MACs at the spec's input size) of the network rebuilt on the meta device; running it there also
    checks every layer's shapes agree at these widths."""
    model = spec.build("meta").eval()
    x = torch.empty(1, spec.in_chans, spec.input_size, spec.input_size, device="meta")
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    except RuntimeError as exc:
        raise UserError(f"{spec.base}: the network does not run with its channel groups resized "
                        f"({str(exc).splitlines()[0][:160]}); archfamily cannot scale it") from None
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2
