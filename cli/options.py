"""Options shared by the commands that train or measure: where the data is, the seed, the device, resuming."""
from __future__ import annotations

from typing import Callable

import click

_SHARED = [
    click.option("--data", help="cifar-10-batches-py/ folder, ImageFolder tree or .tar.gz [the vendored archive]."),
    click.option("--subset", type=int, help="Train on the first N/10 images of each class."),
    click.option("--test-subset", type=int, help="Measure error on the first N/10 test images of each class."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
    click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped."),
]


def training_options(command: Callable) -> Callable:
    for option in reversed(_SHARED):
        command = option(command)
    return command


_EVAL = [
    click.option("--data", help="cifar-10-batches-py/ folder, ImageFolder tree or .tar.gz [the vendored archive]."),
    click.option("--test-subset", type=int, help="Measure on the first N/10 test images of each class [all 10,000]."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
]


def data_options(command: Callable) -> Callable:
    """The options of commands that only measure: data, test subset, device."""
    for option in reversed(_EVAL):
        command = option(command)
    return command
