"""Options shared by the commands that train or measure: the data, the seed, the device, resuming."""
from __future__ import annotations

from typing import Any, Callable, Optional

import click

from archfamily.errors import UserError
from archfamily.limits import MAX_SEED, MAX_TEST_IMAGES, MAX_TRAIN_IMAGES, cores, parse_whole


class Count(click.ParamType):
    """A whole number from `lo` to `hi` in ASCII digits, read by `limits.parse_whole` as plans read theirs
    (click's int takes '1_0' and Arabic-Indic digits; a range keeps counts a machine can take)."""

    name = "integer"

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> int:
        if isinstance(value, int) and not isinstance(value, bool):  # a default
            return value
        try:
            return parse_whole(str(value), self.lo, self.hi, "it")
        except UserError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: Optional[click.Context] = None) -> str:  # click 8.1 and 8.2+
        return f"INTEGER {self.lo}-{self.hi}"


DATA = click.option("--data", help="An ImageFolder tree (train/<class>/ and val/ or test/; any classes, any image "
                                    "sizes), a .tar/.tar.gz of one, or cifar-10-batches-py/ [the vendored CIFAR-10].")
SUBSET = click.option("--subset", type=Count(2, MAX_TRAIN_IMAGES),
                      help="Train on the first N/classes images of each class [all].")
TEST_SUBSET = click.option("--test-subset", type=Count(2, MAX_TEST_IMAGES),
                           help="Measure error on the first N/classes held-out images of each class [all].")
INPUT_SIZE = click.option("--input-size", help="Train at this image side, e.g. 64 or 64x64 [a spec file's own; else the "
                                               "images' own where they share one size up to 128, else the timm "
                                               "base's pretrained size or 224].")
VAL_FRACTION = click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                            help="Hold out this share of each class of train/ as the validation split, for data "
                                 "without val/ (the same images every run).")
SEED = click.option("--seed", type=Count(0, MAX_SEED), default=0, show_default=True)
DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
RESUME = click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped.")
PRECISION = click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
                         help="Training arithmetic; auto: bf16 autocast on CUDA and on CPUs with bf16 units "
                              "(avx512_bf16, AMX), float32 elsewhere. The run records what it resolved to.")
MODEL_KWARGS = click.option("--model-kwargs", "model_kwargs", multiple=True, metavar="NAME=VALUE",
                            help="A timm base's own timm.create_model keywords, as timm's train.py takes them, e.g. "
                                 "output_stride=16 (a larger final feature map at 32x32) (repeatable).")
PRETRAINED = click.option("--pretrained", is_flag=True,
                          help="Start a timm:NAME base from timm's pretrained weights (timm downloads them as "
                               "timm.create_model(pretrained=True) does; the classifier is reset to the data's "
                               "classes), normalised as their cfg says; the transfer recipe becomes the default.")
PRETRAINED_FILE = click.option("--pretrained-file", type=click.Path(dir_okay=False),
                               help="As --pretrained, from this local .safetensors file of timm's weights "
                                    "(timm's pretrained_cfg_overlay=dict(file=...)).")
COMPILE = click.option("--compile", is_flag=True, help="Run the training step under torch.compile.")


def _apply(options: list[Callable]) -> Callable[[Callable], Callable]:
    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


DATA_PATH = click.option("--data-path", type=click.Choice(["auto", "memory", "stream"]), default="auto",
                         show_default=True,
                         help="memory: decode every image once and keep it (augmented on the device); stream: read a "
                              "folder's images as training goes, in worker processes with timm's transforms; auto: "
                              "stream a folder that would take over 16 GiB decoded.")
THREADS = click.option("--threads", type=Count(1, cores()),
                       help="CPU threads the run computes with (run.json's provenance records them) [torch's: every "
                            "core]; fewer leave cores to other work, and a streaming run's workers use their own.")
training_options = _apply([DATA, SUBSET, TEST_SUBSET, INPUT_SIZE, VAL_FRACTION, DATA_PATH, SEED, DEVICE, PRECISION,
                           THREADS, RESUME])  # derive, train


def use_threads(threads: Optional[int]) -> None:
    """`--threads`: torch's intra-op threads for this process, when given."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
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
