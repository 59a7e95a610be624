"""`archfamily export`: a spec (and its weights) as a timm `local-dir:` folder.

Writes `DIR/model.safetensors` (metadata: the spec, provenance and metrics) and
then `DIR/config.json` in timm's format (`architecture`, `num_classes`,
`model_args`, `pretrained_cfg`), written by timm's own `save_config_for_hf`.
After `import zoo`, `timm.create_model("local-dir:DIR", pretrained=True)`
rebuilds the exact network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import timm
from timm.models._hub import save_config_for_hf

from archfamily.checkpoint import load_model, save_model
from archfamily.errors import UserError
from archfamily.files import atomic_write
from archfamily.specs import ArchSpec
from archfamily.timm_models import model_args


def export(spec: ArchSpec, out: Path, weights: Optional[Path] = None,
           metadata: Optional[dict[str, str]] = None) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} already exists and is not an empty folder")
    model = timm.create_model(f"archfamily_{spec.family}", **model_args(spec))
    meta = dict(metadata or {})
    if weights is not None:
        weights_spec, trained, weights_meta = load_model(weights)
        if weights_spec != spec:
            raise UserError(f"--weights {weights} hold a different network than the spec")
        model.load_state_dict(trained.state_dict())
        meta = {**{k: v for k, v in weights_meta.items() if k not in ("format", "spec")}, **meta}
    save_model(out / "model.safetensors", model, meta)
    atomic_write(out / "config.json", lambda tmp: save_config_for_hf(model, Path(tmp), model_args=model_args(spec)))
