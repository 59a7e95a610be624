"""Options shared by the commands that train or measure: the data, the seed, the device, resuming."""
from __future__ import annotations

from typing import Callable

import click

DATA = click.option("--data", help="cifar-10-batches-py/ folder, ImageFolder tree or .tar.gz [the vendored archive].")
SUBSET = click.option("--subset", type=int, help="Train on the first N/10 images of each class.")
TEST_SUBSET = click.option("--test-subset", type=int,
                           help="Measure error on the first N/10 test images of each class [all 10,000].")
SEED = click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
RESUME = click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped.")
COMPILE = click.option("--compile", is_flag=True, help="Run the training step under torch.compile.")


def _apply(options: list[Callable]) -> Callable[[Callable], Callable]:
    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


training_options = _apply([DATA, SUBSET, TEST_SUBSET, SEED, DEVICE, RESUME])  # derive, train
data_options = _apply([DATA, TEST_SUBSET, DEVICE])  # commands that only measure: zoo eval, zoo add
