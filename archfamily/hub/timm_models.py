"""timm entrypoints for any archfamily network: `archfamily_wrn`, `archfamily_densenet_bc`, `archfamily_resnet`.

This is the timm edge of the spec: each entrypoint takes a spec's fields as keyword
arguments (timm's `model_args`; without them it builds the paper's base: WRN-40-2,
DenseNet-BC-100, ResNet-18 with a CIFAR stem), turns them into the spec once, and
builds the network from it with `timm.models.build_model_with_cfg`, so
`pretrained=True`, `features_only=True`, `num_classes` and `in_chans` behave as for
any timm model. Pretrained weights are checked before timm loads them: the file
exists and is safetensors, holds exactly the tensors the spec's network has (names, shapes, dtypes, finite
values: `weights.read_weights`), and,
for a zoo entry, has the sha256 its manifest records. Each failure is one message
naming the file or the argument.
"""
from __future__ import annotations

import warnings
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError, safe_open
from timm.models import build_model_with_cfg, generate_default_cfgs, list_models, register_model
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

from archfamily.data.cifar import MEAN, STD
from archfamily.errors import UserError
from archfamily.files import sha256_of
from archfamily.specs import ArchSpec, all_families, base_spec, family_type, spec_from_dict, spec_to_dict
from archfamily.weights import read_weights

UNTRAINED = "untrained"  # a model file's metadata "weights" when `archfamily export` had no trained weights
_EXPECTED_SHA256: dict[Path, str] = {}  # weights file -> its recorded sha256 (`expect_sha256`)


def expect_sha256(recorded: dict[Path, str]) -> None:
    """Check these weights files against these sha256s whenever timm loads them (the zoo's entries)."""
    _EXPECTED_SHA256.update({Path(file).resolve(): sha for file, sha in recorded.items()})


def model_args(spec: ArchSpec) -> dict[str, Any]:
    """The spec as timm's JSON-ready `model_args` (its fields, without the family the entrypoint names)."""
    return {k: v for k, v in spec_to_dict(spec).items() if k != "family"}


def spec_from_model_args(family: str, args: dict[str, Any], where: str = "model_args") -> ArchSpec:
    """Inverse of `model_args`; a one-line `UserError`, starting with `where`, for arguments that describe no network."""
    return spec_from_dict({"family": family, **args}, where)


def pool_size(spec: ArchSpec, input_size: Optional[int] = None) -> tuple[int, int]:
    """The side of the feature map the head pools, for `input_size` images: halved by every stage after the first
    (and by 4 in an ImageNet stem); a spec that knows its own (a timm base's member) says it."""
    input_size = input_size or spec.input_size
    if hasattr(spec, "pool_size"):
        return spec.pool_size(input_size)
    side = input_size // (4 if getattr(spec, "stem", "cifar") == "imagenet" else 1)
    for _ in spec.stage_widths[1:]:
        side = (side + 1) // 2
    return max(1, side), max(1, side)


def cifar_cfg(family: str, **kwargs: Any) -> dict[str, Any]:
    """A timm pretrained cfg for a CIFAR-10 network of `family` (its pool size that of the family's default base)."""
    kind = family_type(family)
    own_cfg = hasattr(kind.spec, "timm_cfg")  # its members set their cfg (`create_model_for`): no base is built here
    return {
        "input_size": (3, 32, 32), "pool_size": (1, 1) if own_cfg else pool_size(base_spec(kind.default_base)),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": MEAN, "std": STD, "num_classes": 10, "first_conv": kind.first_conv, "classifier": "fc",
        "license": "mit", "paper_ids": "arXiv:1810.04622", **kwargs,
    }


default_cfgs = generate_default_cfgs({f"archfamily_{f.name}": cifar_cfg(f.name) for f in all_families()})


def _weights_file(variant: str, kwargs: dict[str, Any]) -> tuple[Optional[Path], Any]:
    """The pretrained weights file timm will load (None when the cfg names none), and the cfg."""
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                 pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
    if cfg is None or not cfg.file:
        return None, cfg
    file = Path(cfg.file)
    return (file / "model.safetensors" if file.is_dir() else file), cfg  # local-dir: names the folder


def _check_weights(variant: str, family: str, spec: ArchSpec, kwargs: dict[str, Any]) -> None:
    """Fail early, naming the file, when the weights are missing, damaged, not the zoo's or not this network's."""
    file, cfg = _weights_file(variant, kwargs)
    if file is None:
        return
    if not file.is_file():
        raise FileNotFoundError(f"{variant}: pretrained weights not found: {file}")
    expected = _EXPECTED_SHA256.get(file.resolve())
    if expected is not None and sha256_of(file) != expected:
        raise RuntimeError(f"{variant}: pretrained weights {file} do not have the sha256 the zoo manifest records "
                           "(damaged or replaced)")
    try:
        with safe_open(str(file), framework="pt") as fh:
            untrained = (fh.metadata() or {}).get("weights") == UNTRAINED
    except (SafetensorError, OSError) as exc:
        raise RuntimeError(f"{variant}: pretrained weights {file} are damaged or not safetensors ({exc})") from None
    as_saved = replace(spec, num_classes=cfg.num_classes, in_chans=cfg.input_size[0])  # timm adapts head and stem after
    with torch.device("meta"):
        wanted = family_type(family).model_class()(as_saved).state_dict()
    try:
        read_weights(file, wanted)
    except UserError as exc:
        raise RuntimeError(f"{variant}: pretrained weights {file} do not fit the network its model_args describe "
                           f"({str(exc).removeprefix(f'{file}: ')})") from None
    if untrained:
        warnings.warn(f"{variant}: {file} holds untrained weights (exported without --weights): a random network",
                      stacklevel=3)


def create_model_for(family: str, variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build an archfamily network of `family` through `build_model_with_cfg`.

    Spec fields in `kwargs` (over the family's default base) make the spec; the rest go to timm.
    """
    kind = family_type(family)
    names = {f.name for f in fields(kind.spec)}
    given = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    try:
        default = base_spec(kind.default_base if "widths" in given or "base" not in given else f"timm:{given['base']}")
        spec = spec_from_model_args(family, {**model_args(default), **given})
    except UserError as exc:
        raise ValueError(f"{variant}: model_args do not describe an archfamily {family} network ({exc})") from None
    own_cfg = spec.timm_cfg() if hasattr(spec, "timm_cfg") else {}  # a timm base's member: its base's names
    # the spec's image side; the channels stay the cfg's, those its weights were saved with (timm adapts the stem)
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                 pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
    channels = cfg.input_size[0] if cfg is not None else spec.in_chans
    kwargs["pretrained_cfg_overlay"] = {**(kwargs.get("pretrained_cfg_overlay") or {}), "pool_size": pool_size(spec),
                                        "input_size": (channels, spec.input_size, spec.input_size), **own_cfg}
    out_indices = spec.feature_indices() if hasattr(spec, "feature_indices") else kind.feature_indices
    # archfamily's own networks flatten their stages into one sequence of layers; a timm base's member is timm's
    # own network, whose `forward_intermediates` returns its feature levels as timm's own `features_only` does
    # (HRNet's, TResNet's and SelecSLS's too, which timm wraps in classes of their own)
    feature_cfg = dict(feature_cls="getter") if own_cfg else dict(flatten_sequential=True)
    if pretrained:
        _check_weights(variant, family, spec, kwargs)
    try:
        return build_model_with_cfg(kind.model_class(), variant, pretrained, spec=spec, num_classes=spec.num_classes,
                                    in_chans=spec.in_chans,
                                    feature_cfg=dict(**feature_cfg, out_indices=out_indices),
                                    **kwargs)
    except TypeError as exc:  # an argument the network does not take
        raise ValueError(f"{variant}: {exc}") from None


@register_model
def archfamily_wrn(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Any archfamily WideResNet: `WideResNetSpec` fields as keyword arguments [WRN-40-2]."""
    return create_model_for("wrn", "archfamily_wrn", pretrained, **kwargs)


@register_model
def archfamily_densenet_bc(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Any archfamily DenseNet-BC: `DenseNetBCSpec` fields as keyword arguments [DenseNet-BC-100, k=12]."""
    return create_model_for("densenet_bc", "archfamily_densenet_bc", pretrained, **kwargs)


@register_model
def archfamily_resnet(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Any archfamily ResNet: `ResNetSpec` fields as keyword arguments [ResNet-18, CIFAR stem]."""
    return create_model_for("resnet", "archfamily_resnet", pretrained, **kwargs)


def timm_name(family: str) -> str:
    """`archfamily_<family>`, the timm model of any archfamily network of `family`: registered with timm here
    for a family registered after this module was imported (a plug-in), as the built-in families' are above."""
    name = f"archfamily_{family}"
    if name not in list_models(name):
        kind = family_type(family)
        default_cfgs.update(generate_default_cfgs({name: cifar_cfg(family)}))

        def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            return create_model_for(family, name, pretrained, **kwargs)

        entrypoint.__name__ = entrypoint.__qualname__ = name
        entrypoint.__doc__ = f"Any archfamily {family} network: `{kind.spec.__name__}` fields as keyword arguments."
        register_model(entrypoint)
    return name
