"""`archfamily train --spec FILE`: train any spec from scratch with the core trainer."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import click

from archfamily.units import format_count
from cli.options import training_options


@click.command()
@click.option("--spec", "spec_file", required=True, help="Spec JSON (e.g. from `archfamily scale --out`) or a model .safetensors whose architecture to train afresh.")
@click.option("--recipe", type=click.Choice(["wrn", "densenet"]),
              help="Training recipe [the paper's for the spec's family].")
@click.option("--epochs", type=float, help="Train this many epochs; the schedule keeps its shape [the recipe's].")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@training_options
def train(spec_file: str, recipe: Optional[str], epochs: Optional[float], out: str, data: Optional[str],
          subset: Optional[int], test_subset: Optional[int], seed: int, device: str, resume: bool) -> None:
    """Train a spec from scratch; writes model.safetensors and metrics.json to --out."""
    from archfamily.scratch import TrainConfig, read_spec_file, train_spec
    from archfamily.specs import spec_to_dict

    spec = read_spec_file(spec_file)
    config = TrainConfig(spec_to_dict(spec), recipe, epochs, data, subset, test_subset, seed)
    metrics = train_spec(config, Path(out), device, resume, command=["archfamily", *sys.argv[1:]])
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    click.echo(f"trained {format_count(metrics['params'])} params ({format_count(metrics['macs'])} MACs): "
               f"test error {metrics['test_error']:.2f}% on {metrics['test_images']:,} images")
    click.echo(f"wrote {out}/model.safetensors and metrics.json")
