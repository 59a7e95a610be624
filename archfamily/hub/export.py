"""`archfamily export`: a spec (and its weights) as a timm `local-dir:` folder.

Writes `DIR/model.safetensors` (metadata: the spec, provenance and metrics) and
then `DIR/config.json` in timm's format (`architecture`, `num_classes`,
`model_args`, `pretrained_cfg`), written by timm's own `save_config_for_hf`.
After `import archfamily.zoo`, `timm.create_model("local-dir:DIR", pretrained=True)`
rebuilds the exact network. With `onnx=True` it also writes `DIR/model.onnx` (batch
dimension dynamic), for ONNX Runtime or OpenVINO; that needs the `onnx` extra.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path
from typing import Any, Optional

import timm
import torch
from timm.models._hub import save_config_for_hf
from torch import nn

from archfamily.models.checkpoint import load_model, model_facts, model_test_error, save_model
from archfamily.errors import SettingError
from archfamily.files import atomic_write
from archfamily.specs import ArchSpec
from archfamily.hub.timm_models import UNTRAINED, model_args, timm_name


def check_onnx_installed() -> None:
    """A one-line error, before anything is written, when the ONNX exporter's packages are missing."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise SettingError("{onnx} needs {missing}: pip install -e \".[onnx]\"", missing=" and ".join(missing))


def write_onnx(model: nn.Module, path: Path, input_size: int, in_chans: int) -> None:
    """`model` (eval mode) as one ONNX file with a dynamic batch dimension, by torch's own exporter."""
    x = torch.zeros(2, in_chans, input_size, input_size)
    batch = torch.export.Dim("batch", min=1)

    def write(tmp: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates each of its passes
            torch.onnx.export(model.eval(), (x,), tmp, input_names=["images"], output_names=["logits"],
                              dynamic_shapes={"x": {0: batch}}, dynamo=True, external_data=False)

    atomic_write(path, write)


def _data_config(spec: ArchSpec, facts: Optional[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(timm's `data_config`, `config.json` fields) of an export: the input size of the spec, and the data's
    normalisation, crop and class names (timm's top-level `label_names`, which it loads into the pretrained cfg)
    when the network was trained on data that says them."""
    data_config: dict[str, Any] = {"input_size": (spec.in_chans, spec.input_size, spec.input_size)}
    if not facts:
        return data_config, {}
    data_config.update(mean=tuple(facts["mean"]), std=tuple(facts["std"]), crop_pct=facts["crop_pct"],
                       interpolation="bilinear")
    return data_config, {"label_names": list(facts["label_names"])}


def export(spec: ArchSpec, out: Path, weights: Optional[Path] = None,
           metadata: Optional[dict[str, str]] = None, onnx: bool = False,
           facts: Optional[dict[str, Any]] = None) -> None:
    """Write the folder. `facts` are the data's (`ImageData.facts`) when the caller knows them (a family's); trained
    weights that record theirs bring them."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SettingError("{out} {path} already exists and is not an empty folder", path=out)
    if onnx:
        check_onnx_installed()
    model = timm.create_model(timm_name(spec.family), **model_args(spec))
    meta = dict(metadata or {})
    if weights is None:  # said in both files, and `pretrained=True` on the folder warns
        meta["weights"] = UNTRAINED
    else:
        weights_spec, trained, weights_meta = load_model(weights)
        if weights_spec != spec:
            raise SettingError("{weights} {path} hold a different network than the spec", path=weights)
        model.load_state_dict(trained.state_dict())
        meta = {**{k: v for k, v in weights_meta.items() if k not in ("format", "spec")}, **meta}
        if "test_error" in weights_meta:  # the checked figure, not the text it was read from
            meta["test_error"] = repr(model_test_error(weights, weights_meta))
        facts = facts or model_facts(weights, weights_meta)
    if facts is not None:
        if facts["num_classes"] != spec.num_classes or facts["input_size"] != spec.input_size:
            raise SettingError("the data the network was trained on ({n} classes at {size}px) is not its spec's "
                               "({spec_n} at {spec_size}px)", n=facts["num_classes"], size=facts["input_size"],
                               spec_n=spec.num_classes, spec_size=spec.input_size)
        meta["data_cfg"] = json.dumps(facts)
    save_model(out / "model.safetensors", model, meta)
    extra = {"weights": UNTRAINED} if weights is None else {}
    if onnx:
        write_onnx(model, out / "model.onnx", spec.input_size, spec.in_chans)
    data_config, fields = _data_config(spec, facts)
    extra.update(fields)
    atomic_write(out / "config.json",
                 lambda tmp: save_config_for_hf(model, Path(tmp), model_config=extra, model_args=model_args(spec),
                                                data_config=data_config))
