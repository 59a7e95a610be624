"""How big a trained network's conv filters are, and how far one optimizer step moves them relative to that size.

Behind BatchNorm a filter's scale does not change the function, only how far a step moves it: SGD's step on such a
filter is lr * grad with grad proportional to 1 / |w|, so its relative step falls as 1 / |w|^2. This prints, per
checkpoint, the median RMS of the conv filters and the median relative step |dw| / |w| of a step of (a) a recipe at
its peak rate and (b) the paper's pruning fine-tune (SGD lr 8e-4, wd 5e-4, momentum 0.9, batch 128), measured on
real CIFAR-10 batches in training mode (1 thread, the first 5,000 training images):

    python studies/experiments/base-wrn-16-2/weight_scale.py zoo/weights/archfamily_wrn16_2_fast2_e50.safetensors:fast2 \
        zoo/weights/archfamily_wrn16_2_fast2_muon_e100.safetensors:fast2-muon

Each argument is CHECKPOINT:RECIPE (the recipe it was trained with, for (a)); the network is WRN-16-2.
"""
from __future__ import annotations

import statistics
import sys

import torch
import torch.nn.functional as F

from archfamily.data.batches import BatchStream
from archfamily.data.dataset import load_data
from archfamily.models.checkpoint import load_checkpoint_for
from archfamily.specs import base_spec
from archfamily.training.recipes import FINETUNE, RECIPES, Recipe
from archfamily.training.trainer import optimizer_for

STEPS, MEASURED = 10, 5  # steps taken, and how many of the last ones are measured (the momentum has built up)


def relative_steps(checkpoint: str, recipe: Recipe, data) -> tuple[float, float]:
    """(median conv RMS before, median relative step per step over the last MEASURED of STEPS steps at `recipe.lr`)."""
    model, _ = load_checkpoint_for(base_spec("wrn-16-2"), checkpoint, wanted="base")
    model.train()
    optimizer = optimizer_for(model, recipe)
    for group in optimizer.param_groups:
        group["lr"] = recipe.lr * group.get("lr_scale", 1.0)  # the peak rate, as the trainer sets it each step
    stream = BatchStream(data.train_x, data.train_y, recipe.batch_size, 0, torch.device("cpu"), data.mean, data.std,
                         translate=recipe.translate)
    convs = {name: p for name, p in model.named_parameters() if p.ndim == 4}
    rms = statistics.median(float(p.detach().pow(2).mean().sqrt()) for p in convs.values())
    relative = []
    for step in range(STEPS):
        before = {name: p.detach().clone() for name, p in convs.items()}
        x, y = stream.batch(step)
        loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= STEPS - MEASURED:
            relative += [float((p.detach() - before[name]).norm() / before[name].norm()) for name, p in convs.items()]
    return rms, statistics.median(relative)


def main(args: list[str]) -> None:
    torch.set_num_threads(1)
    data = load_data(None, 5000, 100)
    print("| checkpoint | conv RMS (median) | relative step at its recipe's peak | relative step of the paper's fine-tune |")
    print("|---|---:|---:|---:|")
    for arg in args:
        checkpoint, _, name = arg.rpartition(":")
        rms, own = relative_steps(checkpoint, RECIPES[name], data)
        _, tune = relative_steps(checkpoint, FINETUNE, data)
        print(f"| `{checkpoint.rsplit('/', 1)[-1]}` ({name}, lr {RECIPES[name].lr:g}) | {rms:.3f} | {own:.2%} | {tune:.4%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
