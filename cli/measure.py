"""`archfamily measure MODEL --out DIR`: a trained model file's test error, written as `archfamily train` writes it.

A pruned-and-tuned network (`derive --save-at`) was measured on the pruning run's own test split; this
re-measures it on the split a study compares every arm on, so it sits beside networks trained from scratch
(`archfamily bench --trained`, `archfamily study`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from archfamily.limits import format_count
from archfamily.cli.options import VAL_FRACTION, data_options


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write metrics.json into.")
@data_options
@VAL_FRACTION
def measure(model: str, out: str, data: Optional[str], test_subset: Optional[int], device: str,
            val_fraction: Optional[float]) -> None:
    """Measure MODEL (a .safetensors model file) through timm; write --out/metrics.json."""
    from archfamily.data.dataset import load_data
    from archfamily.models.checkpoint import model_facts, read_model_metadata, read_model_spec
    from archfamily.training.distributed import resolve_device
    from archfamily.training.metrics_file import METRICS_FILE, metrics_document, write_metrics
    from archfamily.zoo.curation import measure_file

    facts = model_facts(Path(model), read_model_metadata(Path(model)))
    images = load_data(data, subset=facts["num_classes"] if facts else 10, test_subset=test_subset,
                       input_size=read_model_spec(Path(model)).input_size, val_fraction=val_fraction)
    spec, meta, _, error = measure_file(Path(model), images, resolve_device(device))
    seed = meta.get("seed")
    metrics = metrics_document(spec, {"test_error": error}, len(images.test_x),
                               int(seed) if seed is not None else None, source=model, data=images.source)
    write_metrics(Path(out), metrics)
    click.echo(f"{model}: {format_count(metrics['params'])} params, test error {error:.2f}% on "
               f"{metrics['test_images']:,} images; wrote {out}/{METRICS_FILE}")
