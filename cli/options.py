"""Options shared by the commands that train or measure: the data, the seed, the device, resuming."""
from __future__ import annotations

from typing import Callable

import click

from archfamily.limits import MAX_TEST_IMAGES, MAX_TRAIN_IMAGES

DATA = click.option("--data", help="cifar-10-batches-py/ folder, ImageFolder tree or .tar.gz [the vendored archive].")
SUBSET = click.option("--subset", type=click.IntRange(10, MAX_TRAIN_IMAGES), help="Train on the first N/10 images of each class.")
TEST_SUBSET = click.option("--test-subset", type=click.IntRange(10, MAX_TEST_IMAGES),
                           help="Measure error on the first N/10 test images of each class [all 10,000].")
SEED = click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
RESUME = click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped.")
PRECISION = click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
                         help="Training arithmetic; auto: bf16 autocast on CUDA and on CPUs with bf16 units "
                              "(avx512_bf16, AMX), float32 elsewhere. The run records what it resolved to.")
COMPILE = click.option("--compile", is_flag=True, help="Run the training step under torch.compile.")


def _apply(options: list[Callable]) -> Callable[[Callable], Callable]:
    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


training_options = _apply([DATA, SUBSET, TEST_SUBSET, SEED, DEVICE, PRECISION, RESUME])  # derive, train
data_options = _apply([DATA, TEST_SUBSET, DEVICE])  # commands that only measure: zoo eval, zoo add


def parse_settings(items: tuple[str, ...], option: str) -> dict[str, str]:
    """FIELD=VALUE items of a repeatable option as a dict; a malformed or repeated one is a usage error."""
    settings: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter(f"expected FIELD=VALUE, got {item!r}", param_hint=option)
        if name in settings:
            raise click.BadParameter(f"{name} is set twice", param_hint=option)
        settings[name] = value
    return settings
