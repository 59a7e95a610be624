"""One trainer for base training, pruning fine-tune and training from scratch.

SGD with momentum (in timm's Lookahead when the recipe asks) on `BatchStream` batches,
channels_last everywhere (measured 1.35x faster than NCHW for WRN-16-2 training on a
2-core CPU). The forward runs under bf16 autocast when the run's precision is bf16 (on
a GPU, and on CPUs with bf16 units: `archfamily.precision`). On a GPU the data lives on
the device, and the step never waits for the device: the loss is summed in a device
buffer and read every `log_every` steps.
`compile=True` runs the forward and backward under `torch.compile`. Under torchrun
with WORLD_SIZE > 1 the model is wrapped in DistributedDataParallel and each rank
takes its share of every global batch. The loop state is the step alone (the
schedule, the batches and the EMA's decay are functions of it), so checkpoints
resume exactly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from timm.optim import Lookahead, Muon, param_groups_weight_decay
from timm.utils import ModelEmaV3

from archfamily.data.batches import BatchStream
from archfamily.data.streaming import StreamBatches
from archfamily.models.checkpoint import RunCheckpoint, save_model
from archfamily.data.dataset import ImageData
from archfamily.training.distributed import DistContext
from archfamily.training.precision import default_precision
from archfamily.training.evaluation import count_errors, error_percent
from archfamily.progress import progress_bar
from archfamily.training.recipes import Recipe
from archfamily.weights import check_tensor, check_tensors


def batch_stream(data: ImageData, recipe: Recipe, seed: int, device: torch.device,
                 dist_ctx: DistContext) -> "BatchStream | StreamBatches":
    """The training batches of `data` as `recipe` augments them: in memory (`BatchStream`), or decoded from its files
    by worker processes (`StreamBatches`, timm's training transform in place of the recipe's crops and flips)."""
    if data.streams:
        return StreamBatches(data.train_x, recipe.batch_size, seed, device, data.mean, data.std, dist_ctx.rank,
                             dist_ctx.world, channels_last=True, cutout=recipe.cutout)
    return BatchStream(data.train_x, data.train_y, recipe.batch_size, seed, device, data.mean, data.std,
                       dist_ctx.rank, dist_ctx.world, channels_last=True, translate=recipe.translate,
                       flip=recipe.flip, cutout=recipe.cutout)


def optimizer_for(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD (or timm's Muon for the conv filters) as the recipe says; norm weights and biases (timm's parameter
    groups: every 1-d parameter) without decay and at `norm_bias_lr` times the rate (timm's `lr_scale`) if it
    asks; inside timm's Lookahead if it asks."""
    params: Any = model.parameters()
    if not recipe.decay_norm_bias or recipe.norm_bias_lr != 1.0 or recipe.optimizer == "muon":
        params = param_groups_weight_decay(model, recipe.weight_decay)
        no_decay, _ = params
        no_decay["lr_scale"] = recipe.norm_bias_lr
        if recipe.decay_norm_bias:
            no_decay["weight_decay"] = recipe.weight_decay
    if recipe.optimizer == "muon":
        optimizer: torch.optim.Optimizer = Muon(_muon_groups(params), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                                momentum=recipe.momentum, nesterov=recipe.nesterov)
    else:
        optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                                    nesterov=recipe.nesterov)
    return Lookahead(optimizer, alpha=recipe.lookahead_alpha, k=recipe.lookahead_k) if recipe.lookahead_k > 0 \
        else optimizer


def _muon_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """timm's weight-decay groups split so that only conv filters (4-d) take Muon's step: the classifier's matrix,
    norm weights and biases take its AdamW fallback (`use_fallback`), as airbench keeps Muon to its filters."""
    split = []
    for group in groups:
        filters = [p for p in group["params"] if p.ndim == 4]
        others = [p for p in group["params"] if p.ndim != 4]
        split += [{**group, "params": filters}] if filters else []
        split += [{**group, "params": others, "use_fallback": True}] if others else []
    return split


def _state_key(state: str, name: str) -> str:
    """A checkpoint key for one optimizer state tensor of parameter `name` (momentum keeps its older form)."""
    return f"optim.{name}" if state == "momentum_buffer" else f"optim-{state}.{name}"


class Trainer:
    def __init__(self, model: nn.Module, data: ImageData, recipe: Recipe, device: torch.device, seed: int = 0,
                 dist_ctx: DistContext = DistContext(), compile: bool = False, log_every: int = 25,
                 precision: Optional[str] = None) -> None:
        """`precision`: fp32 or bf16 (resolved, see `archfamily.precision`); None is bf16 on CUDA, fp32 on a CPU."""
        self.device, self.recipe, self.dist, self.data = device, recipe, dist_ctx, data
        self.on_gpu = device.type == "cuda"
        self.precision = precision or default_precision(device)
        self.bf16 = self.precision == "bf16"
        self.model = model.to(device, memory_format=torch.channels_last)  # faster on GPUs and CPUs alike
        self.net = DistributedDataParallel(self.model, device_ids=[device.index] if self.on_gpu else None) \
            if dist_ctx.enabled else self.model
        self.forward = torch.compile(self.net) if compile else self.net
        self.optimizer = optimizer_for(self.model, recipe)
        # timm's EMA with its warm-up, updated with the step, so the decay too is a function of the step: it ramps
        # as 1 - (1 + step)^(-2/3) (0.99 at 1k steps, 0.996 at 4k) and is capped at the recipe's ema_decay
        self.ema = ModelEmaV3(self.model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema_decay > 0 else None
        self.stream = batch_stream(data, recipe, seed, device, dist_ctx)
        self.log_every = log_every
        self._loss_sum = torch.zeros((), device=device)  # read every `log_every` steps, not every step
        self._loss_steps = 0  # steps summed into `_loss_sum` since it was last read
        self.step = 0

    @property
    def eval_model(self) -> nn.Module:
        """The network that is measured and saved: the EMA weights when the recipe keeps them."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def steps_per_epoch(self) -> int:
        return self.stream.steps_per_epoch

    def steps_for(self, epochs: float) -> int:
        return max(1, round(epochs * self.steps_per_epoch))

    def train_step(self) -> torch.Tensor:
        x, y = self.stream.batch(self.step)
        lr = self.recipe.lr_at(self.step / self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss = self.loss_and_grads(x, y)
        self.optimizer.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        loss = loss.detach()
        self._loss_sum += loss
        self._loss_steps += 1
        return loss

    def loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (forward under the run's precision) with its gradients in the
        parameters: the step's part between the batch and the optimizer, apart so benchmarks can time it."""
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.forward(x), y, label_smoothing=self.recipe.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def fit(self, total_steps: int, checkpoint: Optional[RunCheckpoint] = None, every: int = 0,
            desc: str = "train") -> None:
        """Train until `total_steps`, saving a resumable checkpoint every `every` steps and at the end."""
        self._loss_sum.zero_()
        self._loss_steps = 0
        with progress_bar(total=total_steps, initial=self.step, desc=desc, unit="step",
                          disable=not self.dist.is_main) as bar:
            while self.step < total_steps:
                self.train_step()
                bar.update(1)
                if self.step % self.log_every == 0:  # the only read of a device value in the loop
                    loss = float(self._loss_sum) / self._loss_steps
                    self._loss_sum.zero_()
                    self._loss_steps = 0
                    bar.set_postfix(loss=f"{loss:.3f}", epoch=f"{self.step / self.steps_per_epoch:.1f}",
                                    refresh=False)
                if checkpoint is not None and (self.step == total_steps or (every and self.step % every == 0)):
                    self.save(checkpoint)

    def evaluate(self, images: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                 tta: str = "", model: Optional[nn.Module] = None, desc: Optional[str] = None) -> float:
        """Top-1 error in percent of `model` (default: `eval_model`) on the held-out split (or the given images),
        split over ranks; `tta` as `count_errors` takes it, and `desc` names a progress bar (rank 0's)."""
        images = self.data.test_x if images is None else images
        labels = self.data.test_y if labels is None else labels
        shard = slice(self.dist.rank, None, self.dist.world)
        mine = images[shard] if isinstance(images, torch.Tensor) else images.shard(self.dist.rank, self.dist.world)
        wrong, total = count_errors(self.eval_model if model is None else model, mine, labels[shard],
                                    self.data.mean, self.data.std, self.device, bf16=self.bf16, tta=tta,
                                    desc=desc if self.dist.is_main else None)
        counts = torch.tensor([wrong, total], dtype=torch.float64, device=self.device)
        if self.dist.enabled:
            dist.all_reduce(counts)
        return error_percent(int(counts[0]), int(counts[1]))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Model tensors (masks included), the optimizer's per-parameter tensors (SGD and Muon momentum, AdamW
        moments and step counts, Lookahead's slow weights) and EMA tensors, keyed by name. Everything else the loop
        keeps is a function of the step."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.module.state_dict().items()})
        state = self._optimizer_state()
        for name, p in self.model.named_parameters():
            for key, value in state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[_state_key(key, name)] = value
        return tensors

    def _optimizer_state(self) -> dict:
        """Per-parameter state; Lookahead keeps it, slow weights too, in the optimizer it wraps."""
        return getattr(self.optimizer, "_base_optimizer", self.optimizer).state

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], step: int) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if self.ema is not None:
            self.ema.module.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        params = dict(self.model.named_parameters())
        state = self._optimizer_state()
        for key, value in tensors.items():  # the inverse of `_state_key`; keys of no parameter are not state
            if key.startswith("optim."):
                kind, name = "momentum_buffer", key[6:]
            elif key.startswith("optim-"):
                kind, _, name = key[6:].partition(".")
            else:
                continue
            if name in params:
                state[params[name]][kind] = value.to(params[name].device)
        for group in self.optimizer.param_groups:
            if "lookahead_step" in group:
                group["lookahead_step"] = step  # Lookahead counts the steps; it syncs when the count is a multiple of k
        self.step = step

    def save(self, checkpoint: RunCheckpoint, extra: Optional[dict[str, Any]] = None) -> None:
        if self.dist.is_main:
            checkpoint.save(self.step, self.state_tensors(), {"recipe": self.recipe.to_dict(), **(extra or {})})

    def resume(self, checkpoint: RunCheckpoint) -> Optional[dict[str, Any]]:
        """Load the last checkpoint if there is one; returns its JSON state."""
        found = checkpoint.load()
        if found is None:
            return None
        tensors, state = found
        self.check_state_tensors(str(checkpoint.folder / state["file"]), tensors)
        self.load_state_tensors(tensors, int(state["step"]))
        return state

    def check_state_tensors(self, where: str, tensors: dict[str, torch.Tensor]) -> None:
        """A resume checkpoint's tensors against this loop's network (a checkpoint of another network, one with
        NaN weights or momenta): one line naming the file and the first tensor that differs."""
        check_tensors(where, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, self.model.state_dict())
        if self.ema is not None:
            check_tensors(where, {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")},
                          self.ema.module.state_dict())
        params = dict(self.model.named_parameters())
        for key, value in tensors.items():
            name = key[6:] if key.startswith("optim.") else key[6:].partition(".")[2] if key.startswith("optim-") else None
            if name in params:
                scalar = key.startswith("optim-step.")  # Adam's step count, one per parameter
                check_tensor(where, key, value, params[name].new_empty(()) if scalar else params[name])


def train_to_file(model: nn.Module, data: ImageData, recipe: Recipe, device: torch.device, seed: int,
                  dist_ctx: DistContext, model_file: Path, checkpoint_dir: Path, desc: str, tta: bool = False,
                  compile: bool = False, precision: Optional[str] = None) -> tuple[nn.Module, dict[str, float]]:
    """Train `model` with `recipe` (resuming from `checkpoint_dir`), then save it with its measured test errors.

    The errors: `test_error` of the saved network (the EMA weights when the recipe keeps
    them) on the held-out split (`data.split`), `test_error_no_ema` of the trained weights when it does, and when
    `tta` is on `test_error_tta` with the mirror and `test_error_tta_shift` with the mirror and 1-pixel
    shifts (test-time augmentation); each is its own figure, measured in the run's precision. Where the data has a
    `test/` split beside its validation split, `final_test_error` is the saved network's error on it, measured
    once here.
    """
    trainer = Trainer(model, data, recipe, device, seed, dist_ctx, compile=compile, precision=precision)
    checkpoint = RunCheckpoint(checkpoint_dir)
    trainer.resume(checkpoint)
    trainer.fit(trainer.steps_for(recipe.epochs), checkpoint, every=trainer.steps_per_epoch, desc=desc)
    errors = {"test_error": trainer.evaluate(desc=f"{data.split} error")}
    if trainer.ema is not None:
        errors["test_error_no_ema"] = trainer.evaluate(model=trainer.model, desc=f"{data.split} error, no EMA")
    if tta:
        errors["test_error_tta"] = trainer.evaluate(tta="mirror", desc=f"{data.split} error, mirror TTA")
        errors["test_error_tta_shift"] = trainer.evaluate(tta="mirror-shift",
                                                          desc=f"{data.split} error, mirror+shift TTA")
    if data.final_x is not None:
        errors["final_test_error"] = trainer.evaluate(data.final_x, data.final_y, desc="test error (test/)")
    if dist_ctx.is_main:
        save_model(model_file, trainer.eval_model, {
            **{k: repr(v) for k, v in errors.items()}, "test_images": str(len(data.test_x)),
            "data": data.source, "data_cfg": json.dumps(data.facts()), "recipe": json.dumps(recipe.to_dict()),
            "seed": str(seed), "precision": trainer.precision,
        })
    return trainer.eval_model, errors
