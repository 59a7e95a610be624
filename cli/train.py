"""`archfamily train --spec FILE`: train any spec from scratch with the core trainer."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import click

from archfamily.limits import format_count
from archfamily.limits import MAX_TRAIN_BATCH
from archfamily.training.recipes import RECIPES
from archfamily.cli.options import (COMPILE, MODEL_KWARGS, PRETRAINED, PRETRAINED_FILE, Count, parse_settings,
                                   training_options, use_threads)


@click.command()
@click.option("--spec", "spec_file", required=True, help="Spec JSON (e.g. from `archfamily scale --out`), a model .safetensors whose architecture to train afresh, or a base name such as wrn-16-2.")
@click.option("--recipe", type=click.Choice(list(RECIPES)),
              help="fast: one-cycle, Nesterov, label smoothing; fast2: fast with 2-pixel translation; fast2-muon: "
                   "fast2 with timm's Muon for the conv filters at lr 0.02; fast3: fast2-muon with weight decay 0.05, "
                   "4-pixel translation and cutout 12; transfer: fast at lr 0.01 for 10 epochs, for pretrained "
                   "weights; wrn, densenet: the papers' [fast3; with --pretrained, transfer].")
@click.option("--epochs", type=float, help="Train this many epochs; the schedule keeps its shape [the recipe's].")
@click.option("--batch-size", type=Count(1, MAX_TRAIN_BATCH), help="Batch size; the learning rate scales with it [the recipe's].")
@click.option("--ema", type=float, help="Keep an EMA of the weights, its decay capped at this, e.g. 0.99 (it ramps up as 1-(1+step)^-2/3); 0 is off [the recipe's].")
@click.option("--tta", is_flag=True, help="Also report the error with test-time augmentation: the mirror, and the mirror with 1-pixel shifts.")
@click.option("--recipe-set", "recipe_set", multiple=True, metavar="FIELD=VALUE",
              help="Set one recipe field, e.g. flip=alternating, translate=2, lookahead_k=5 (repeatable).")
@click.option("--initial-checkpoint", type=click.Path(dir_okay=False),
              help="Start from these trained weights (a model file of the same network) instead of a random "
                   "initialisation; the recipe's optimizer and schedule start afresh, e.g. a second cycle.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@MODEL_KWARGS
@PRETRAINED
@PRETRAINED_FILE
@training_options
@COMPILE
def train(spec_file: str, recipe: Optional[str], epochs: Optional[float], batch_size: Optional[int], ema: Optional[float],
          tta: bool, recipe_set: tuple[str, ...], initial_checkpoint: Optional[str], out: str, model_kwargs: tuple[str, ...], pretrained: bool, pretrained_file: Optional[str], data: Optional[str], subset: Optional[int],
          test_subset: Optional[int], input_size: Optional[str], val_fraction: Optional[float], data_path: str, seed: int, threads: Optional[int], device: str, precision: str, resume: bool, compile: bool) -> None:
    """Train a spec from scratch (or from --initial-checkpoint); writes model.safetensors and metrics.json to --out."""
    from archfamily.anycnn.spec import parse_model_kwargs, with_model_kwargs
    from archfamily.data.dataset import parse_input_size
    from archfamily.training.scratch import (TrainConfig, initial_checkpoint as checkpoint_record, pretrained_record,
                                             read_spec_file, train_spec)

    use_threads(threads)
    spec = with_model_kwargs(read_spec_file(spec_file), parse_model_kwargs(parse_settings(model_kwargs, "--model-kwargs")))
    starts_pretrained = pretrained_record(pretrained, pretrained_file)
    recipe = recipe or ("transfer" if starts_pretrained else "fast3")
    size = parse_input_size(input_size)
    if size is None and Path(spec_file).is_file():  # a spec made for some images (scale --out, a model file)
        size = spec.input_size
    config = TrainConfig(spec, recipe, epochs, data, subset, test_subset, size, val_fraction,
                         data_path, seed, batch_size, ema,
                         tta, precision, parse_settings(recipe_set, "--recipe-set"),
                         checkpoint_record(initial_checkpoint), starts_pretrained)
    metrics = train_spec(config, Path(out), device, resume, command=["archfamily", *sys.argv[1:]], compile=compile)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    extra = "".join(f", {label} {metrics[key]:.2f}%" for key, label in
                    (("test_error_no_ema", "without EMA"), ("test_error_tta", "with mirror TTA"),
                     ("test_error_tta_shift", "with mirror and shift TTA")) if key in metrics)
    facts = metrics.get("data") or {"split": "test"}  # finished runs from before data facts: CIFAR-10's test split
    final = f"; test/ error {metrics['final_test_error']:.2f}%" if "final_test_error" in metrics else ""
    click.echo(f"trained {format_count(metrics['params'])} params ({format_count(metrics['macs'])} MACs) in "
               f"{metrics['precision']}: "
               f"{facts['split']} error {metrics['test_error']:.2f}% on {metrics['test_images']:,} images{extra}{final}")
    click.echo(f"wrote {out}/model.safetensors and metrics.json")
