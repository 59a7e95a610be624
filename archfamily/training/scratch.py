"""`archfamily train`: train any spec (e.g. from `archfamily scale --out`) from scratch into a run folder.

The folder gets `run.json`, `model.safetensors` (weights, spec and measured test
error in its metadata) and `metrics.json`; `--resume` continues a stopped run.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch

from archfamily.files import sha256_of
from archfamily.models.checkpoint import load_checkpoint_for, read_model_spec
from archfamily.models.pretrained import check_pretrained, pretrained_data, pretrained_network
from archfamily.data.dataset import ImageData, load_data
from archfamily.training.distributed import resolve_device
from archfamily.checks import read_json
from archfamily.errors import UserError
from archfamily.training.metrics_file import METRICS_FILE, metrics_document, read_metrics, write_metrics
from archfamily.models import build_model
from archfamily.training.recipes import training_recipe
from archfamily.training.runs import finish_run, run_precision, start_run
from archfamily.specs import ArchSpec, base_spec, for_data, native_input_size, spec_from_dict, spec_to_dict
from archfamily.training.trainer import train_to_file


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a train run's results; `to_dict` is its run.json form."""

    spec: ArchSpec
    recipe: Optional[str] = None  # None: the paper's recipe for the spec's family (run.json files before `fast`)
    epochs: Optional[float] = None
    data: Optional[str] = None
    subset: Optional[int] = None
    test_subset: Optional[int] = None
    input_size: Optional[int] = None  # None: the data's own (`data.dataset.load_data`)
    val_fraction: Optional[float] = None  # a validation split carved from train/
    data_path: str = "auto"  # memory, stream or auto (`data.dataset.load_data`)
    seed: int = 0
    batch_size: Optional[int] = None  # None: the recipe's; otherwise its lr scales with it
    ema: Optional[float] = None  # EMA decay; None: the recipe's, 0: off
    tta: bool = False  # also measure with test-time augmentation (figures of their own)
    precision: str = "auto"  # auto, fp32 or bf16; `train_spec` resolves auto, so run.json holds fp32 or bf16
    recipe_set: dict[str, str] = field(default_factory=dict)  # recipe fields set by name (`--recipe-set`)
    initial_checkpoint: Optional[dict[str, str]] = None  # {"file", "sha256"}: trained weights to start from
    pretrained: Optional[dict[str, str]] = None  # timm's pretrained weights: {"source": "timm"} or {"file", "sha256"}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spec": spec_to_dict(self.spec)}


def read_spec_file(path: str) -> ArchSpec:
    """A spec JSON (from `archfamily scale --out`), the spec inside a model file (its weights are not used),
    or a base network's name such as `wrn-16-2`.

    Reading a derive run's `pruned-*.safetensors` this way trains the architecture pruning found from scratch.
    """
    file = Path(path)
    if not file.is_file():
        try:
            return base_spec(path)
        except UserError:
            raise UserError(f"spec file not found: {file} (nor is it a base network such as wrn-16-2)") from None
    if file.suffix == ".safetensors":
        return read_model_spec(file)
    return spec_from_dict(read_json(file), str(file))


def initial_checkpoint(path: Optional[str]) -> Optional[dict[str, str]]:
    """`--initial-checkpoint` as run.json records it: the file and its sha256, so a resume with the file changed
    is refused as a different run (timm's train.py has the option of the same name)."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise UserError(f"initial checkpoint not found: {file}")
    return {"file": str(file), "sha256": sha256_of(file)}


def pretrained_record(pretrained: bool, file: Optional[str]) -> Optional[dict[str, str]]:
    """`--pretrained` (and `--pretrained-file`) as run.json records it: timm's own weights, or a local file and its
    sha256, so a resume with the file changed is refused as a different run."""
    if file is not None:
        if not Path(file).is_file():
            raise UserError(f"pretrained weights not found: {file}")
        return {"file": str(file), "sha256": sha256_of(Path(file))}
    return {"source": "timm"} if pretrained else None


def pretrained_file(record: Optional[dict[str, str]]) -> Optional[str]:
    """The local file a pretrained record names (checked against its sha256), or None for timm's own weights."""
    if record is None or "file" not in record:
        return None
    if sha256_of(Path(record["file"])) != record["sha256"]:
        raise UserError(f"pretrained weights {record['file']} changed since the run started (their sha256 differs)")
    return record["file"]


def run_data(config: Any, spec: ArchSpec) -> ImageData:
    """The data a run trains on (a train or a derive config's settings), preprocessed as its network expects: as
    timm's pretrained cfg says when it starts from pretrained weights, else at the data's own statistics."""
    default, norm, crop_pct = native_input_size(spec), None, 1.0
    if config.pretrained is not None:
        check_pretrained(spec, pretrained_file(config.pretrained))
        mean, std, crop_pct, default = pretrained_data(spec)
        norm = (mean, std)
    return load_data(config.data, config.subset, config.test_subset, config.input_size, config.val_fraction, norm=norm,
                     crop_pct=crop_pct, default_size=default, data_path=config.data_path)


def initial_model(config: TrainConfig) -> torch.nn.Module:
    """The network training starts from: freshly initialised, timm's pretrained weights, or the weights of
    `config.initial_checkpoint` (checked tensor by tensor against `config.spec`'s network, and its file against the
    sha256 recorded)."""
    if config.pretrained is not None:
        return pretrained_network(config.spec, pretrained_file(config.pretrained))
    if config.initial_checkpoint is None:
        return build_model(config.spec)
    file = config.initial_checkpoint["file"]
    if sha256_of(Path(file)) != config.initial_checkpoint["sha256"]:
        raise UserError(f"initial checkpoint {file} changed since the run started (its sha256 differs)")
    model, _ = load_checkpoint_for(config.spec, file, wanted="--spec")
    return model


def train_spec(config: TrainConfig, out: Path, device_name: str = "auto", resume: bool = False,
               command: Optional[list[str]] = None, compile: bool = False) -> dict[str, Any]:
    """Train `config.spec` (from scratch, or from `config.initial_checkpoint`'s weights with the optimizer and
    schedule afresh); returns the metrics written to `metrics.json`."""
    started = time.time()
    if config.spec.in_chans != 3:
        raise UserError(f"archfamily trains on RGB images (3 channels); this spec has {config.spec.in_chans}")
    recipe = training_recipe(config.recipe, config.spec.family, config.epochs, config.batch_size, config.ema,
                             config.recipe_set)
    device = resolve_device(device_name)
    config = replace(config, precision=run_precision(config.precision, device, out, resume))  # as run.json holds it
    if config.pretrained is not None and config.initial_checkpoint is not None:
        raise UserError("start from --pretrained weights or from an --initial-checkpoint, not both")
    data = run_data(config, config.spec)
    config = replace(config, spec=for_data(config.spec, data.num_classes, data.input_size))
    spec = config.spec
    torch.manual_seed(config.seed)
    model = initial_model(config)  # before the run folder is written: a wrong checkpoint leaves nothing behind
    dist_ctx, _ = start_run(out, config.to_dict(), resume, device, command or sys.argv)
    if (out / METRICS_FILE).is_file():  # resuming a finished run: nothing left to do
        return {"precision": config.precision, **read_metrics(out).document}  # files before precision: run.json's
    _, errors = train_to_file(model, data, recipe, device, config.seed, dist_ctx,
                              out / "model.safetensors", out / ".checkpoints" / "train", desc="train",
                              tta=config.tta, compile=compile, precision=config.precision)
    metrics = metrics_document(spec, errors, len(data.test_x), config.seed, recipe=recipe.to_dict(),
                               precision=config.precision, seconds=time.time() - started, data=data.facts())
    if dist_ctx.is_main:
        write_metrics(out, metrics)
    finish_run(out, dist_ctx)
    return metrics
