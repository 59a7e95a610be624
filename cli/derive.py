"""`archfamily derive`: train a base, Fisher-prune it once, record the trajectory."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import click

from archfamily.limits import MAX_STEPS, MAX_TRAIN_BATCH
from archfamily.pruning.config import PRESETS
from archfamily.anycnn.table import POLICIES
from archfamily.pruning.criteria import COSTS, CRITERIA
from archfamily.training.recipes import SCRATCH_RECIPES
from archfamily.limits import format_count, parse_count, parse_counts
from archfamily.cli.options import (COMPILE, MODEL_KWARGS, PRETRAINED, PRETRAINED_FILE, Count, parse_settings,
                                   training_options, use_threads)


@click.command()
@click.option("--preset", type=click.Choice(tuple(PRESETS)), default="quick", show_default=True,
              help="smoke: seconds; quick: ~25 min on a 2-core CPU without bf16 units, ~3 with AMX (measured; see "
                   "README); paper: the paper's recipe, for a GPU.")
@click.option("--base", help="Base network, e.g. wrn-40-2, wrn-16-2, densenet-bc-100, resnet-18, or any timm CNN as "
                             "timm:NAME (timm:mobilenetv2_050) [preset's].")
@click.option("--groups", type=click.Choice(POLICIES),
              help="A timm base's channel groups to prune: all but the input and classifier, or inner: only those not "
                   "tied to a residual stream (the paper's choice for WRNs) [all].")
@click.option("--method", type=click.Choice(tuple(CRITERIA)),
              default="fisher", show_default=True,
              help="Channel saliency; fisher is the paper's; fisher-cost divides it by --cost, fisher-penalty "
                   "subtracts a scaled --cost (Theis et al.).")
@click.option("--cost", type=click.Choice(COSTS), default="params", show_default=True,
              help="What a channel costs, for fisher-cost and fisher-penalty; latency is predicted for --on "
                   "(with fisher-penalty, which measured better per millisecond).")
@click.option("--on", "cost_on", help="Where --cost latency is measured: cpu, cpu:THREADS or cuda (batch 1).")
@click.option("--runtime", "cost_runtime", type=click.Choice(("eager", "onnxruntime")),
              help="What --cost latency is predicted in: eager PyTorch or ONNX Runtime (on the CPU) [eager].")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Start from this trained base (safetensors).")
@click.option("--recipe", type=click.Choice(SCRATCH_RECIPES),
              help="Base training recipe: fast, or the paper's wrn or densenet [quick, smoke: fast; paper: the paper's; "
                   "with --pretrained: transfer].")
@click.option("--epochs", type=float, help="Base training epochs; the schedule keeps its shape [preset's].")
@click.option("--batch-size", type=Count(1, MAX_TRAIN_BATCH), help="Base training batch size; the learning rate scales with it [preset's].")
@click.option("--prune-every", type=Count(1, MAX_STEPS), help="Fine-tuning steps between two prunes [preset's].")
@click.option("-k", "--channels-per-step", type=Count(1, MAX_STEPS), help="Channels closed per prune; 1 is the paper [preset's].")
@click.option("--eval-every", type=Count(1, MAX_STEPS), help="Prunes between test-error measurements and checkpoints [preset's].")
@click.option("--until-params", help="Stop pruning at this many parameters, e.g. 70k [10% of the base].")
@click.option("--save-at", help="Also save the pruned network at these sizes, e.g. 76k,152k (pruned-at-N.safetensors).")
@click.option("--finetune-set", "finetune_set", multiple=True, metavar="FIELD=VALUE",
              help="Set one field of the paper's fine-tune between prunes, e.g. lr=0.02 for a base whose filters are "
                   "larger than an SGD-trained one's (repeatable; the fields of train's --recipe-set).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder [runs/<preset>-<base>-<method>-s<seed>].")
@MODEL_KWARGS
@PRETRAINED
@PRETRAINED_FILE
@training_options
@COMPILE
def derive(preset: str, base: Optional[str], groups: Optional[str], method: str, cost: str, cost_on: Optional[str],
           cost_runtime: Optional[str], checkpoint: Optional[str], recipe: Optional[str],
           epochs: Optional[float], batch_size: Optional[int], prune_every: Optional[int], channels_per_step: Optional[int],
           eval_every: Optional[int], until_params: Optional[str], save_at: Optional[str],
           finetune_set: tuple[str, ...], out: Optional[str], model_kwargs: tuple[str, ...], pretrained: bool,
           pretrained_file: Optional[str],
           data: Optional[str], subset: Optional[int], test_subset: Optional[int], input_size: Optional[str],
           val_fraction: Optional[float], data_path: str, seed: int, threads: Optional[int], device: str, precision: str, resume: bool,
           compile: bool) -> None:
    """Train a base network, Fisher-prune it once, and record the trajectory and width ratios."""
    from archfamily.anycnn.spec import parse_model_kwargs
    from archfamily.data.dataset import parse_input_size
    from archfamily.pruning.derive import DeriveConfig, derive as run_derive
    from archfamily.training.scratch import pretrained_record

    use_threads(threads)
    if cost_runtime == "onnxruntime":
        from archfamily.bench.runtimes import check_runtimes

        check_runtimes((cost_runtime,))  # its packages installed
    starts_pretrained = pretrained_record(pretrained, pretrained_file)
    recipe = recipe or ("transfer" if starts_pretrained else None)
    config = DeriveConfig.from_preset(
        preset, base=base, pretrained=starts_pretrained, groups=groups, method=method, cost=cost, cost_on=cost_on,
        cost_runtime=None if cost_runtime == "eager" else cost_runtime, recipe=recipe, data=data, subset=subset, test_subset=test_subset,
        input_size=parse_input_size(input_size), val_fraction=val_fraction, data_path=data_path, seed=seed,
        epochs=epochs, batch_size=batch_size, prune_every=prune_every, channels_per_step=channels_per_step, eval_every=eval_every,
        until_params=parse_count(until_params, "--until-params") if until_params is not None else None, checkpoint=checkpoint,
        save_at=tuple(sorted(set(parse_counts(save_at, "--save-at")))) if save_at is not None else None, precision=precision,
        model_kwargs=parse_model_kwargs(parse_settings(model_kwargs, "--model-kwargs")) or None,
        finetune_set=parse_settings(finetune_set, "--finetune-set") or None,
    )
    out_dir = Path(out) if out else Path("runs") / f"{preset}-{config.base.replace(':', '-')}-{method}-s{seed}"
    result = run_derive(config, out_dir, device, resume, command=["archfamily", *sys.argv[1:]], compile=compile)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    spec = result.final_spec
    click.echo(f"base {config.base}: {format_count(result.trajectory[0]['params'])} params, "
               f"{result.split} error {result.base_error:.2f}%")
    click.echo(f"pruned in {result.prune_steps} steps to {format_count(spec.num_params())} params "
               f"({format_count(spec.num_macs())} MACs), {result.split} error {result.final_error:.2f}%")
    click.echo(f"wrote {result.out}/family.json and trajectory.jsonl ({result.seconds:.0f} s)")
