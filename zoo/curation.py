"""`archfamily zoo add / eval / remove` and `archfamily measure`: measure networks through `timm.create_model` and keep the manifest honest.

Every figure in the manifest is measured here: parameter and MAC counts from the
network timm builds, and the CIFAR-10 test error of that network with its
pretrained weights, normalised with the mean and std of its pretrained cfg.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import timm
import torch
from torch import nn

from archfamily.training.evaluation import test_error
from archfamily.models.checkpoint import load_model, model_facts, save_model
from archfamily.models.counting import count_params, measure_macs
from archfamily.data.dataset import ImageData
from archfamily.checks import Fields, decode_json
from archfamily.errors import SettingError, UserError
from archfamily.pruning.family_file import load_family
from archfamily.specs import ArchSpec
from archfamily.hub.timm_models import model_args, sha256_of, timm_name
from archfamily.zoo.manifest import TAG, entry_named, normalise_name, read_manifest, write_manifest, zoo_dir


def _create(name: str, **kwargs: Any) -> nn.Module:
    """`timm.create_model(name, pretrained=True, ...)`, its one-line errors about the weights as `UserError`s. A
    `UserError` timm's entrypoint had to raise as a `ValueError` (model_args that describe no network) is
    unwrapped: its own message, once, after the model's name."""
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        inner = exc.__context__ if isinstance(exc, ValueError) else None
        raise UserError(f"{name}: {inner}" if isinstance(inner, UserError) else str(exc)) from None


def _provenance(source: Path, meta: dict[str, str]) -> tuple[Any, str, str]:
    """(recipe, family, rule) of a model file: its own metadata, else the derive run it sits in."""
    recipe: Any = decode_json(meta["recipe"], f"{source}: metadata 'recipe'") if "recipe" in meta else None
    if (source.parent / "family.json").is_file():
        family = load_family(source.parent)
        stage = "base" if source.name == "base.safetensors" else f"pruned ({family.method})"
        if recipe is None:
            doc = Fields(family.document, str(family.path))
            recipe = {**doc.obj("recipes").data, "method": family.method,
                      "channels_per_step": doc.int("channels_per_step", 1), "prune_every": doc.int("prune_every", 1)}
        return recipe, str(source.parent), stage
    return recipe, "", ""


def measure_file(path: Path, data: ImageData, device: torch.device,
                 exported: bool = False) -> tuple[ArchSpec, dict[str, str], nn.Module, float]:
    """(spec, metadata, model, test error %) of a model file, loaded and measured through timm as the zoo is. An
    `exported` one (the model.safetensors of an `archfamily export` folder) is loaded as timm loads its folder
    (`local-dir:`: its config.json checked by `hub.local_dir`, which must describe the file's network)."""
    spec, _, meta = load_model(path)
    if exported:
        model = _create(f"local-dir:{path.parent}")
    else:  # normalised as it was trained: with its data's statistics when its file records them
        facts = model_facts(path, meta)
        norm = {"mean": tuple(facts["mean"]), "std": tuple(facts["std"])} if facts else {}
        model = _create(timm_name(spec.family), pretrained_cfg_overlay=dict(file=str(path.resolve()), **norm),
                        **model_args(spec))
    return spec, meta, model, test_error(model, data, device)


def add(source: str, name: str, load: Callable[[], ImageData], device: torch.device, family: Optional[str] = None,
        rule: Optional[str] = None, replace: bool = False) -> dict[str, Any]:
    """Measure a trained network through timm, then copy it into the zoo and list it."""
    path = Path(source)
    exported = path.is_dir() and (path / "config.json").exists()  # an `archfamily export` folder
    if path.is_dir():
        path = path / "model.safetensors"
    name = normalise_name(name)
    folder = zoo_dir()
    entries = read_manifest(folder)
    if any(e["name"] == name for e in entries) and not replace:
        raise SettingError("the zoo already holds {name}; pass {replace} to measure and replace it", name=name)
    load_model(path)  # a missing or damaged file is refused before the data is decoded, which takes a while
    data = load()
    spec, meta, model, error = measure_file(path, data, device, exported)
    recipe, run_family, stage = _provenance(path, meta)
    entry = {
        "name": name, "tag": TAG, "architecture": spec.family, "model_args": model_args(spec),
        "file": f"weights/{name}.safetensors", "params": count_params(model),
        "macs": measure_macs(model, spec.input_size, spec.in_chans), "test_error": round(error, 4),
        "test_images": len(data.test_x), "data": data.source, "recipe": recipe,
        "source": {"family": family or run_family, "rule": rule or stage, "file": str(path)},
        "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    weights = folder / entry["file"]
    save_model(weights, model, {"test_error": f"{error:.4f}", "recipe": json.dumps(recipe),
                                "source": json.dumps(entry["source"]), "zoo_name": name})
    entry["sha256"] = sha256_of(weights)
    write_manifest([e for e in entries if e["name"] != name] + [entry], folder)
    return entry


def remeasure(name: str, data: ImageData, device: torch.device, write: bool = False) -> tuple[dict[str, Any], float]:
    """Re-measure a zoo entry through `timm.create_model(name, pretrained=True)`; optionally record it."""
    from archfamily import zoo

    folder = zoo_dir()
    entry = entry_named(name, folder)
    if folder.resolve() != zoo.ZOO_DIR.resolve():
        zoo.register_zoo(folder)
    model = _create(entry["name"])
    error = test_error(model, data, device)
    if write:
        entries = read_manifest(folder)
        for e in entries:
            if e["name"] == entry["name"]:
                e["test_error"], e["test_images"], e["data"] = round(error, 4), len(data.test_x), data.source
        write_manifest(entries, folder)
    return entry, error


def removable(name: str) -> dict[str, Any]:
    """The entry `name`, when its weights file is a file (or already gone); else a one-line refusal, before
    anything changes."""
    entry = entry_named(name)
    weights = zoo_dir() / entry["file"]
    if weights.exists() and not weights.is_file():
        raise UserError(f"cannot remove {entry['name']}: its weights {weights} are not a file")
    return entry


def remove(name: str) -> dict[str, Any]:
    """Take an entry out of the zoo: its weights file first, then the manifest (atomically), so the manifest
    never lists an entry whose file it says is gone, nor loses one whose file could not be deleted."""
    folder = zoo_dir()
    entry = removable(name)
    try:
        (folder / entry["file"]).unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"cannot remove {entry['name']}: {folder / entry['file']}: {exc.strerror or exc}") from None
    write_manifest([e for e in read_manifest(folder) if e["name"] != entry["name"]], folder)
    return entry
