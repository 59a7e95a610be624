"""`archfamily train`: train any spec (e.g. from `archfamily scale --out`) from scratch into a run folder.

The folder gets `run.json`, `model.safetensors` (weights, spec and measured test
error in its metadata) and `metrics.json`; `--resume` continues a stopped run.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from archfamily.checkpoint import read_model_metadata
from archfamily.data import load_cifar10
from archfamily.distributed import resolve_device
from archfamily.errors import UserError
from archfamily.files import atomic_write_json
from archfamily.models import build_model
from archfamily.recipes import RECIPES, recipe_for
from archfamily.runs import finish_run, start_run
from archfamily.specs import ArchSpec, spec_from_dict, spec_from_json, spec_to_dict
from archfamily.train import train_to_file


@dataclass(frozen=True)
class TrainConfig:
    spec: dict[str, Any]
    recipe: Optional[str] = None  # None: the paper's recipe for the spec's family
    epochs: Optional[float] = None
    data: Optional[str] = None
    subset: Optional[int] = None
    test_subset: Optional[int] = None
    seed: int = 0


def read_spec_file(path: str) -> ArchSpec:
    """A spec JSON (from `archfamily scale --out`), or the spec inside a model file: its weights are not used.

    Reading a derive run's `pruned-*.safetensors` this way trains the architecture pruning found from scratch.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"spec file not found: {file}")
    if file.suffix == ".safetensors":
        return spec_from_json(read_model_metadata(file)["spec"])
    return spec_from_json(file.read_text())


def train_spec(config: TrainConfig, out: Path, device_name: str = "auto", resume: bool = False,
               command: Optional[list[str]] = None) -> dict[str, Any]:
    """Train `config.spec` from scratch; returns the metrics written to `metrics.json`."""
    started = time.time()
    spec = spec_from_dict(config.spec)
    if spec.num_classes != 10 or spec.in_chans != 3:
        raise UserError(f"archfamily trains on CIFAR-10 (10 classes, 3 channels); this spec has "
                        f"{spec.num_classes} classes and {spec.in_chans} channels")
    if config.recipe is not None and config.recipe not in RECIPES:
        raise UserError(f"unknown recipe {config.recipe!r}; choose from {', '.join(RECIPES)}")
    if config.epochs is not None and config.epochs <= 0:
        raise UserError("--epochs must be positive")
    recipe = RECIPES[config.recipe] if config.recipe else recipe_for(spec.family)
    recipe = recipe.shortened(config.epochs) if config.epochs is not None else recipe
    if recipe.epochs <= 0:
        raise UserError(f"recipe {config.recipe} has no epochs of its own; give --epochs")
    device = resolve_device(device_name)
    data = load_cifar10(config.data, config.subset, config.test_subset)
    dist_ctx, _ = start_run(out, asdict(config), resume, device, command or sys.argv)
    if (out / "metrics.json").is_file():  # resuming a finished run: nothing left to do
        return json.loads((out / "metrics.json").read_text())
    torch.manual_seed(config.seed)
    _, error = train_to_file(build_model(spec), data, recipe, device, config.seed, dist_ctx,
                             out / "model.safetensors", out / ".checkpoints" / "train", desc="train")
    metrics = {"test_error": error, "test_images": int(data.test_x.shape[0]), "params": spec.num_params(),
               "macs": spec.num_macs(), "recipe": recipe.to_dict(), "seed": config.seed,
               "spec": spec_to_dict(spec), "seconds": time.time() - started}
    if dist_ctx.is_main:
        atomic_write_json(out / "metrics.json", metrics)
    finish_run(out, dist_ctx)
    return metrics
