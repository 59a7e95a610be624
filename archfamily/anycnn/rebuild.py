"""A timm CNN rebuilt at any widths: one width per channel group, smaller or larger than the base's.

timm builds the base (its own code, its own initialisation); every layer dimension a group occupies is then
resized to the group's new width. A resized layer is initialised afresh by its own `reset_parameters` (PyTorch's
default initialisation, not timm's per-network one); the layers no group touches keep timm's. Resizing is by
layer type, so a layer this module does not know (and so cannot resize correctly) is a one-line error naming its
type, never a network that runs with the wrong shapes.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from archfamily.anycnn.layers import NORM_TYPES, is_depthwise
from archfamily.anycnn.table import new_sizes
from archfamily.families import ChannelGroup
from archfamily.errors import UserError


def _resize_conv(conv: nn.Conv2d, name: str, out_delta: int, in_delta: int) -> None:
    depthwise = is_depthwise(conv)
    if depthwise:  # one group holds its inputs and outputs alike (Torch-Pruning records only one side)
        if out_delta and in_delta and out_delta != in_delta:
            raise UserError(f"{name}: a depthwise convolution needs as many inputs as outputs")
        out_delta = in_delta = out_delta or in_delta
    out_ch, in_ch = conv.out_channels + out_delta, conv.in_channels + in_delta
    if depthwise:
        conv.groups = out_ch
    elif conv.groups > 1:  # a grouped convolution keeps its group width (RegNet's, ResNeXt's): more groups, or fewer
        group_width = conv.in_channels // conv.groups
        if in_ch % group_width or out_ch % (in_ch // group_width or 1) or not in_ch:
            raise UserError(f"{name}: a convolution in groups of {group_width} channels needs widths that are "
                            f"multiples of {group_width} (got {in_ch} in, {out_ch} out)")
        conv.groups = in_ch // group_width
    conv.in_channels, conv.out_channels = in_ch, out_ch
    conv.weight = nn.Parameter(torch.empty(out_ch, in_ch // conv.groups, *conv.kernel_size, device=conv.weight.device))
    if conv.bias is not None:
        conv.bias = nn.Parameter(torch.empty(out_ch, device=conv.bias.device))
    conv.reset_parameters()


def _resize_linear(linear: nn.Linear, out_delta: int, in_delta: int) -> None:
    linear.in_features += in_delta
    linear.out_features += out_delta
    linear.weight = nn.Parameter(torch.empty(linear.out_features, linear.in_features, device=linear.weight.device))
    if linear.bias is not None:
        linear.bias = nn.Parameter(torch.empty(linear.out_features, device=linear.bias.device))
    linear.reset_parameters()


def _resize_norm(norm: nn.Module, name: str, delta: int) -> None:
    if isinstance(norm, nn.GroupNorm):
        channels = norm.num_channels + delta
        if channels % norm.num_groups:
            raise UserError(f"{name}: a GroupNorm of {norm.num_groups} groups needs a multiple of it ({channels})")
        norm.num_channels = channels
    elif isinstance(norm, nn.LayerNorm):
        if len(norm.normalized_shape) != 1:
            raise UserError(f"{name}: a LayerNorm over {len(norm.normalized_shape)} dimensions cannot be resized")
        channels = norm.normalized_shape[0] + delta
        norm.normalized_shape = (channels,)
    else:
        channels = norm.num_features + delta
        norm.num_features = channels
    for key, tensor in list(norm.named_parameters(recurse=False)) + list(norm.named_buffers(recurse=False)):
        if tensor.dim() == 1:
            fresh = torch.empty(channels, dtype=tensor.dtype, device=tensor.device)
            setattr(norm, key, nn.Parameter(fresh) if isinstance(tensor, nn.Parameter) else fresh)
    norm.reset_parameters()


def _resize_parameter(model: nn.Module, name: str, delta: int) -> None:
    """A parameter outside any layer (ConvNeXt's layer scale `gamma`): one value per channel, all initialised
    alike, so the new ones take the first's value."""
    owner_name, _, key = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    tensor = getattr(owner, key).detach()
    if tensor.dim() != 1 or (not tensor.is_meta and not bool((tensor == tensor[0]).all())):
        raise UserError(f"{name}: a parameter of shape {tuple(tensor.shape)} outside any layer cannot be resized")
    fresh = torch.empty(tensor.numel() + delta, dtype=tensor.dtype, device=tensor.device)
    setattr(owner, key, nn.Parameter(fresh if tensor.is_meta else fresh.fill_(float(tensor[0]))))


def resize_layers(model: nn.Module, groups: Sequence[ChannelGroup], widths: Sequence[int]) -> nn.Module:
    """`model` (a base built by timm) with every layer its groups occupy resized to `widths`, in place."""
    change = new_sizes(groups, widths)
    layers = sorted({module for module, dim in change if dim != "param"})
    sliced = _sliced_concatenations(model)
    for name in layers:
        out_delta, in_delta = change.get((name, "out"), 0), change.get((name, "in"), 0)
        layer = model.get_submodule(name)
        try:
            if isinstance(layer, nn.Conv2d):
                _resize_conv(layer, name, out_delta, in_delta)
            elif isinstance(layer, nn.Linear):
                _resize_linear(layer, out_delta, in_delta)
            elif isinstance(layer, NORM_TYPES):
                _resize_norm(layer, name, out_delta + in_delta)
            else:
                raise UserError(f"{name}: archfamily cannot resize a layer of type {type(layer).__name__}")
        except RuntimeError as exc:  # a size below zero: widths the layer's groups cannot take together
            raise UserError(f"{name}: cannot be resized to these widths ({str(exc).splitlines()[0][:120]})") from None
    for name in sorted(module for module, dim in change if dim == "param"):
        _resize_parameter(model, name, change[(name, "param")])
    for module, dropped in sliced.items():
        module.out_chs = _concatenated(module) - dropped
    return model


def _concatenated(module: nn.Module) -> int:
    return sum(next(m for m in part.modules() if isinstance(m, nn.Conv2d)).out_channels
               for part in (module.primary_conv, module.cheap_operation))


def _sliced_concatenations(model: nn.Module) -> dict[nn.Module, int]:
    """timm's ghost modules, which concatenate their primary and cheap convolutions' outputs and keep the first
    `out_chs` of them (a width recorded at construction, which the trace cannot see), with how many they drop:
    after resizing, `out_chs` is the concatenation's new width less as many."""
    return {module: _concatenated(module) - module.out_chs for module in model.modules()
            if isinstance(getattr(module, "out_chs", None), int) and isinstance(getattr(module, "primary_conv", None), nn.Module)
            and isinstance(getattr(module, "cheap_operation", None), nn.Module)}


def refresh_sizes(model: nn.Module, name: str, input_size: int, in_chans: int = 3) -> nn.Module:
    """The sizes timm's model records of itself made those of its resized layers: `feature_info`'s channels
    (what `features_only` reports: `forward_intermediates`' levels), `num_features` (what `forward_features`
    returns) and `head_hidden_size` (what the classifier reads, which `reset_classifier` builds anew from). Forwards
    of a 1-image batch find them, and show that the network runs at these widths (a one-line error naming the
    base `name` if it does not)."""
    info = getattr(model, "feature_info", None)
    device = next(model.parameters()).device
    was_training = model.training
    x = torch.zeros(1, in_chans, input_size, input_size, device=device)
    try:
        with torch.no_grad():
            features = model.eval().forward_features(x)
            # each feature level as timm's `features_only` returns it (`FeatureGetterNet` calls the same method)
            levels = model.forward_intermediates(x, indices=len(info), intermediates_only=True) if info else []
    except Exception as exc:  # shapes that disagree, and whatever a module's own code raises on widths it did not expect
        text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(f"{name}: the network does not run with its channel groups resized "
                        f"({text}); archfamily cannot scale it") from None
    finally:
        model.train(was_training)
    for f, level in zip(info or (), levels):
        f["num_chs"] = level.shape[1]
    if hasattr(model, "num_features"):
        model.num_features = features.shape[1]
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if hasattr(model, "head_hidden_size") and isinstance(classifier, nn.Linear):
        model.head_hidden_size = classifier.in_features
    _refresh_head(model, classifier, features.shape[1])
    return model


def _refresh_head(model: nn.Module, classifier: object, features: int) -> None:
    """A head module around the classifier (timm's `ClassifierHead`, ConvNeXt's `NormMlpClassifierHead`) records
    the width it reads (`in_features`) and the classifier's (`num_features`, `hidden_size` past a pre-logits
    layer); its `reset` (timm's `reset_classifier`, which `features_only` calls) refuses a width other than the
    recorded one, so they are made those of its resized layers."""
    for head in model.modules():
        if head is classifier or isinstance(head, (nn.Linear, nn.Conv2d)) or \
                not isinstance(getattr(head, "in_features", None), int) or \
                not any(m is classifier for m in head.modules()):
            continue
        head.in_features = features
        pre_logits = getattr(getattr(head, "pre_logits", None), "fc", None)
        if getattr(head, "hidden_size", None) and isinstance(pre_logits, (nn.Linear, nn.Conv2d)):
            head.hidden_size = pre_logits.out_features if isinstance(pre_logits, nn.Linear) else pre_logits.out_channels
        if isinstance(getattr(head, "num_features", None), int):
            head.num_features = getattr(head, "hidden_size", None) or features
