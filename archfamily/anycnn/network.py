"""A timm CNN as a network: timm builds the base, its groups' layers are resized to a member's widths, and the
base's count table is measured (traced groups, exact counts, and each occupied layer's shape and output positions).

Everything here imports torch and timm; `spec.py` (what a member is) does not, and reaches this module only when
a network has to exist.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from archfamily.anycnn.groups import NORM_TYPES, is_depthwise, trace_groups
from archfamily.anycnn.keywords import check_model_kwargs
from archfamily.anycnn.rebuild import refresh_sizes, resize_layers
from archfamily.anycnn.table import CountTable, Layer
from archfamily.errors import UserError

def create(name: str, num_classes: int, in_chans: int, model_kwargs: tuple[tuple[str, Any], ...] = (), **kwargs: Any) -> nn.Module:
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


def build_member(spec: Any, device: Optional[str | torch.device] = None, **kwargs: Any) -> nn.Module:
    """The network of `spec` (a `TimmSpec`): timm's base, its grouped layers resized (and initialised afresh),
    with `spec` set on it (as archfamily's own networks have it). `kwargs` are timm's."""
    args = (spec.base, spec.num_classes, spec.in_chans, spec.model_kwargs)
    if device is None:
        model = create(*args, **kwargs)
    else:
        with torch.device(device):
            model = create(*args, **kwargs)
    model = refresh_sizes(resize_layers(model, spec.groups, spec.widths), spec.base, spec.input_size, spec.in_chans)
    # timm records the keywords a model was created with, to rebuild it from a saved config; this member is
    # rebuilt from its spec (archfamily_timm's model_args), never from its base's keywords, which would clash
    model.__dict__.pop("_model_args", None)
    model.spec = spec
    return model


def measure_table(name: str, num_classes: int, in_chans: int, input_size: int,
                  model_kwargs: tuple[tuple[str, Any], ...] = ()) -> CountTable:
    """The base's count table: its channel groups traced by Torch-Pruning (those that resize safely,
    `resizable`), then one forward pass that counts it (`torch.utils.flop_counter`) and records how many output
    positions each occupied layer computes per image; that pass also shows the base runs at this input size (a
    one-line error if not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Torch-Pruning's note on parameters outside layers
        model = create(name, num_classes, in_chans, model_kwargs)
        groups = tuple(trace_groups(model, name, input_size, in_chans))
    names = {module for g in groups for module in {p.module for p in g.places}}
    positions: dict[str, int] = {}
    hooks = [module.register_forward_hook(
        lambda m, i, out, name=layer: positions.__setitem__(name, out.numel() // out.shape[0] // (
            out.shape[1] if isinstance(m, nn.Conv2d) else out.shape[-1])))
        for layer, module in model.named_modules() if layer in names and isinstance(module, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(torch.zeros(1, in_chans, input_size, input_size))
    except RuntimeError as exc:
        raise UserError(f"{name}: the network does not run at {input_size}x{input_size} "
                        f"({str(exc).splitlines()[0][:160]})") from None
    finally:
        for hook in hooks:
            hook.remove()
    layers = tuple((layer, _describe(model, layer, positions.get(layer, 0))) for layer in sorted(names))
    return CountTable(groups, layers, sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2)


def _describe(model: nn.Module, name: str, positions: int) -> Layer:
    """What the count table needs of one occupied layer (or parameter outside any layer)."""
    try:
        layer = model.get_submodule(name)
    except AttributeError:  # a parameter outside any layer (ConvNeXt's layer scale)
        owner, _, key = name.rpartition(".")
        tensor = getattr(model.get_submodule(owner), key)
        return Layer("param", tensor.shape[0], 0, tensor.numel() // tensor.shape[0], 0, False, 0)
    if isinstance(layer, nn.Conv2d):
        area = math.prod(layer.kernel_size)
        if is_depthwise(layer):
            return Layer("depthwise", layer.out_channels, layer.in_channels, area, 0, layer.bias is not None, positions)
        width = layer.in_channels // layer.groups if layer.groups > 1 else 0
        return Layer("conv", layer.out_channels, layer.in_channels, area, width, layer.bias is not None, positions)
    if isinstance(layer, nn.Linear):
        return Layer("linear", layer.out_features, layer.in_features, 1, 0, layer.bias is not None, positions)
    if isinstance(layer, NORM_TYPES):
        channels = layer.normalized_shape[0] if isinstance(layer, nn.LayerNorm) else (
            layer.num_channels if isinstance(layer, nn.GroupNorm) else layer.num_features)
        own = sum(p.numel() for p in layer.parameters(recurse=False))
        return Layer("norm", channels, 0, own // channels, 0, False, 0)
    raise UserError(f"{name}: archfamily cannot count a layer of type {type(layer).__name__}")


@functools.lru_cache(maxsize=64)
def feature_info(name: str, model_kwargs: tuple[tuple[str, Any], ...] = ()) -> tuple[dict[str, Any], ...]:
    """timm's feature_info of the base (built on the meta device): its feature levels and their reductions."""
    with torch.device("meta"):
        model = create(name, 10, 3, model_kwargs)
    return tuple(getattr(model, "feature_info", None) or ({"reduction": 32},))


@functools.lru_cache(maxsize=64)
def feature_indices(name: str, model_kwargs: tuple[tuple[str, Any], ...] = ()) -> tuple[int, ...]:
    """The feature levels timm's own `features_only` of the base returns by default (built on the meta device):
    most take every level of `feature_info`, some skip one (TResNet's first, at the input's own resolution)."""
    with torch.device("meta"):
        model = create(name, 10, 3, model_kwargs, features_only=True)
    return tuple(getattr(model.feature_info, "out_indices", None) or range(len(model.feature_info)))


def pretrained_cfg(name: str) -> Any:
    """timm's pretrained cfg of the base, or None."""
    from timm.models import get_pretrained_cfg

    return get_pretrained_cfg(name)
