"""timm entrypoints for any archfamily network: `archfamily_wrn`, `archfamily_densenet_bc`, `archfamily_resnet`.

Each takes a spec's fields as keyword arguments (timm's `model_args`; without them
it builds the paper's base: WRN-40-2, DenseNet-BC-100, ResNet-18 with a CIFAR stem),
so every family member, and every folder `archfamily export` writes, comes out of
`timm.create_model`. Models are built by `timm.models.build_model_with_cfg`, so
`pretrained=True`, `features_only=True`, `num_classes` and `in_chans` behave as for
any timm model. Missing or damaged weights and model_args that do not describe a
network fail with an error that names the file or the argument.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

from archfamily.data import MEAN, STD
from archfamily.errors import UserError
from archfamily.models import MODEL_TYPES, spec_kwargs
from archfamily.specs import base_spec

FIRST_CONV = {"wrn": "stem", "densenet_bc": "stem", "resnet": "stem.0"}
FEATURE_INDICES = {"wrn": (0, 1, 2, 3), "densenet_bc": (0, 1, 2, 3), "resnet": (0, 1, 2, 3, 4)}
DEFAULT_BASE = {"wrn": "wrn-40-2", "densenet_bc": "densenet-bc-100", "resnet": "resnet-18"}


def cifar_cfg(family: str, **kwargs: Any) -> dict[str, Any]:
    """A timm pretrained cfg for a CIFAR-10 network of `family`."""
    return {
        "input_size": (3, 32, 32), "pool_size": None, "crop_pct": 1.0, "interpolation": "bilinear",
        "mean": MEAN, "std": STD, "num_classes": 10, "first_conv": FIRST_CONV[family], "classifier": "fc",
        "license": "mit", "paper_ids": "arXiv:1810.04622", **kwargs,
    }


default_cfgs = generate_default_cfgs({f"archfamily_{family}": cifar_cfg(family) for family in MODEL_TYPES})


def _check_weights(variant: str, kwargs: dict[str, Any]) -> str:
    """The pretrained weights file; fails early, naming it, when it is missing or not readable safetensors."""
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                 pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
    file = cfg.file if cfg is not None else None
    if not file:
        return "the pretrained weights"
    if Path(file).is_dir():  # a local-dir: source names the folder; archfamily folders hold model.safetensors
        file = str(Path(file) / "model.safetensors")
    if not Path(file).is_file():
        raise FileNotFoundError(f"{variant}: pretrained weights not found: {file}")
    try:
        with safe_open(file, framework="pt") as fh:
            fh.keys()
    except (SafetensorError, OSError) as exc:
        raise RuntimeError(f"{variant}: pretrained weights {file} are damaged or not safetensors ({exc})") from None
    return file


def create_model_for(family: str, variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build an archfamily network of `family` through `build_model_with_cfg`."""
    weights = _check_weights(variant, kwargs) if pretrained else ""
    try:
        return build_model_with_cfg(MODEL_TYPES[family], variant, pretrained,
                                    feature_cfg=dict(flatten_sequential=True, out_indices=FEATURE_INDICES[family]),
                                    **kwargs)
    except (TypeError, UserError) as exc:
        raise ValueError(f"{variant}: model_args do not describe an archfamily {family} network ({exc})") from None
    except RuntimeError as exc:
        if "loading state_dict" not in str(exc):
            raise
        first = str(exc).splitlines()[1].strip()[:200]
        raise RuntimeError(f"{variant}: {weights} do not fit the network its model_args describe ({first})") from None


def _with_defaults(family: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**spec_kwargs(base_spec(DEFAULT_BASE[family])), **kwargs}


@register_model
def archfamily_wrn(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Any archfamily WideResNet: `WideResNetSpec` fields as keyword arguments [WRN-40-2]."""
    return create_model_for("wrn", "archfamily_wrn", pretrained, **_with_defaults("wrn", kwargs))


@register_model
def archfamily_densenet_bc(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Any archfamily DenseNet-BC: `DenseNetBCSpec` fields as keyword arguments [DenseNet-BC-100, k=12]."""
    return create_model_for("densenet_bc", "archfamily_densenet_bc", pretrained,
                            **_with_defaults("densenet_bc", kwargs))


@register_model
def archfamily_resnet(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Any archfamily ResNet: `ResNetSpec` fields as keyword arguments [ResNet-18, CIFAR stem]."""
    return create_model_for("resnet", "archfamily_resnet", pretrained, **_with_defaults("resnet", kwargs))
