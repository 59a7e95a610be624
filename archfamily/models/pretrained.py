"""A timm base that starts from pretrained weights, through timm's own pretrained loading.

`timm.create_model(name, pretrained=True, num_classes=...)` is the path a user with internet access takes: timm
fetches the weights its pretrained cfg names and resets the classifier for another number of classes. A local file
takes the same path through timm's `pretrained_cfg_overlay=dict(file=...)` (how the tests run it, and how a user
without a network gives weights they have); only safetensors files are taken, so no pickle from a user's file is
ever loaded. The pretrained cfg also says how the weights expect their images: its mean, std, crop_pct and input
size become the run's (`pretrained_data`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

from torch import nn

from archfamily.errors import UserError
from archfamily.specs import ArchSpec


def check_pretrained(spec: ArchSpec, file: Optional[str]) -> None:
    """One line when `spec` cannot start from timm's pretrained weights or `file` cannot be them: only a timm base's
    spec (the `timm` family's, `anycnn.spec.TimmSpec`) at its own widths can."""
    if spec.family != "timm":
        raise UserError(f"--pretrained loads timm's weights of a timm:NAME base; a {spec.family} network has none "
                        "(give --checkpoint with an archfamily model file instead)")
    if spec.widths != tuple(g.width for g in spec.groups):
        raise UserError(f"--pretrained loads the weights of timm's {spec.base} itself, not of a member at other widths")
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise UserError(f"pretrained weights not found: {path}")
        if path.suffix != ".safetensors":
            raise UserError(f"{path}: pretrained weights must be a .safetensors file (archfamily loads no pickles)")


def pretrained_data(spec: Any) -> tuple[tuple[float, ...], tuple[float, ...], float, int]:
    """(mean, std, crop_pct, input size) of the base's pretrained cfg: how its weights expect their images."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.base)
    if cfg is None:
        raise UserError(f"timm has no pretrained cfg for {spec.base}, so no pretrained weights to start from")
    return tuple(cfg.mean), tuple(cfg.std), float(cfg.crop_pct), int(cfg.input_size[-1])


def pretrained_network(spec: Any, file: Optional[str]) -> nn.Module:
    """timm's `spec.base` with its pretrained weights (from `file`, else where its cfg says), its classifier reset to
    `spec.num_classes` as timm resets it; `spec` set on it as on every archfamily network."""
    import timm

    overlay = {"file": str(Path(file).resolve())} if file else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = timm.create_model(spec.base, pretrained=True, num_classes=spec.num_classes,
                                      in_chans=spec.in_chans, pretrained_cfg_overlay=overlay,
                                      **dict(spec.model_kwargs))
        except (RuntimeError, OSError, ValueError, KeyError) as exc:  # a file of another network, no network
            where = file or f"timm's pretrained weights of {spec.base}"
            raise UserError(f"{where}: cannot load them into {spec.base} ({str(exc).splitlines()[0][:160]})") \
                from None
    model.__dict__.pop("_model_args", None)  # rebuilt from its spec, as every member is (`TimmSpec.build`)
    model.spec = spec
    return model
