"""Training recipes: the paper's schedules, archfamily's `fast` default, and shortened versions of them.

A recipe is a pure description; `lr_at` makes the schedule a function of the step,
so a resumed run needs no scheduler state. The paper's recipes (`wrn`, `densenet`,
`finetune`) stay exactly as Crowley et al. ran them, for reproducing the paper.
`fast` is what a user gets by default: on the `quick` preset's budget it measured
about ten points lower error than the shortened paper schedule (see the README).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Optional

from archfamily.errors import SettingError, UserError
from archfamily.limits import MAX_EPOCHS, MAX_TRAIN_BATCH, check_count
from archfamily.specs import family_type

SCHEDULES = ("step", "onecycle")
DECAYS = ("linear", "cosine")
FLIPS = ("random", "alternating")
OPTIMIZERS = ("sgd", "muon")


@dataclass(frozen=True)
class Recipe:
    """SGD with momentum and a learning-rate schedule.

    - `step`: lr * gamma^(milestones passed), the paper's.
    - `onecycle`: linear warm-up from 0 over the first `warmup` fraction of training
      to `lr`, then `decay` (linear or cosine) to 0 at the last step.
    `lr` belongs to `batch_size`; `with_batch_size` scales it linearly.
    `decay_norm_bias=False` keeps weight decay off norm weights and biases.
    `ema_decay > 0` also keeps an exponential moving average of the weights, which is
    then the network that is evaluated and saved.
    Augmentation: a random crop of the image padded by `translate` pixels, and a
    horizontal flip that is `random` per image and step, or `alternating` (airbench's
    derandomised flip: each image is flipped on every other epoch, from a random start). `cutout > 0` blanks a
    square of that side in every training image (DeVries & Taylor; airbench96 adds it for its longer budget).
    `lookahead_k > 0` wraps SGD in Lookahead (timm's): every k steps the weights move
    `lookahead_alpha` of the way from a slow copy to the fast ones, and both become that.
    `norm_bias_lr` multiplies the learning rate of norm weights and biases and every other bias (airbench
    trains its BatchNorm biases at a much larger rate than its filters).
    `optimizer="muon"` trains the conv filters with timm's Muon (momentum orthogonalised by Newton-Schulz, its
    update scaled to AdamW's size, so `lr` is an AdamW-sized rate, e.g. 0.005, not SGD's 0.2) and every other
    parameter with its AdamW fallback; `momentum` and `nesterov` are Muon's, `weight_decay` is decoupled there.
    """

    epochs: float
    batch_size: int
    lr: float
    weight_decay: float
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    label_smoothing: float = 0.0
    schedule: str = "step"
    warmup: float = 0.0
    decay: str = "linear"
    decay_norm_bias: bool = True
    ema_decay: float = 0.0
    translate: int = 4
    flip: str = "random"
    lookahead_k: int = 0
    lookahead_alpha: float = 0.5
    norm_bias_lr: float = 1.0
    optimizer: str = "sgd"
    cutout: int = 0

    def __post_init__(self) -> None:
        for name, value, choices in (("schedule", self.schedule, SCHEDULES), ("decay", self.decay, DECAYS),
                                     ("flip", self.flip, FLIPS),
                                     ("optimizer", self.optimizer, OPTIMIZERS)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; one of {', '.join(choices)}")

    def lr_at(self, epoch: float) -> float:
        """The learning rate after `epoch` epochs (fractional: step / steps per epoch)."""
        if self.schedule == "step":
            return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        progress = min(max(epoch / self.epochs, 0.0), 1.0)
        if progress < self.warmup:
            return self.lr * progress / self.warmup
        left = (1.0 - progress) / (1.0 - self.warmup)  # 1 at the peak, 0 at the end
        return self.lr * (left if self.decay == "linear" else 0.5 * (1.0 - math.cos(math.pi * left)))

    def shortened(self, epochs: float) -> "Recipe":
        """The same schedule squeezed into `epochs`: milestones (and one-cycle phases) keep their fractions.

        A recipe without a length of its own (`finetune`) just takes `epochs`.
        """
        if not 0 < epochs <= MAX_EPOCHS:  # also NaN, which passes every comparison
            raise SettingError("{epochs} must be above 0 and at most {most:,}, got {got:g}", most=MAX_EPOCHS,
                               got=epochs)
        scale = epochs / self.epochs if self.epochs > 0 else 0.0
        return replace(self, epochs=epochs, milestones=tuple(m * scale for m in self.milestones))

    def with_batch_size(self, batch_size: int) -> "Recipe":
        """The linear scaling rule: the learning rate grows with the batch."""
        check_count(batch_size, 1, MAX_TRAIN_BATCH, "{batch_size}")
        return replace(self, batch_size=batch_size, lr=self.lr * batch_size / self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Zagoruyko & Komodakis / Crowley et al.: 200 epochs, lr 0.1 x0.2 at 60/120/160, wd 5e-4, batch 128.
WRN = Recipe(epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4, milestones=(60, 120, 160), gamma=0.2)
# Huang et al. DenseNet-BC: 300 epochs, batch 64, lr 0.1 x0.1 at 150/225, wd 1e-4.
DENSENET = Recipe(epochs=300, batch_size=64, lr=0.1, weight_decay=1e-4, milestones=(150, 225), gamma=0.1)
# Crowley et al. pruning fine-tune: constant lr 8e-4, wd 5e-4; the prune interval lives in the derive preset.
FINETUNE = Recipe(epochs=0, batch_size=128, lr=8e-4, weight_decay=5e-4)
# The seed code's DenseNet-BC pruning fine-tune: lr 1e-3, wd 1e-4, batch 64.
FINETUNE_DENSENET = Recipe(epochs=0, batch_size=64, lr=1e-3, weight_decay=1e-4)
# archfamily's default: one-cycle, Nesterov, label smoothing, no decay on norm weights and biases.
# Chosen by short CPU runs on the quick preset's budget (README, "The fast recipe").
FAST = Recipe(epochs=30, batch_size=128, lr=0.2, weight_decay=5e-4, momentum=0.9, nesterov=True,
              label_smoothing=0.2, schedule="onecycle", warmup=0.15, decay="linear", decay_norm_bias=False)

# `fast` with the crop's padding at 2 pixels instead of 4 (airbench's translate), the default of `train` before
# `fast2-muon`: the first change of the issue-25 ablation that beat the seeds (WRN-16-1, 5 epochs, all of
# CIFAR-10: 0.76 points better over 2 seeds, seed ranges 0.04-0.05; README, "bf16 parity and the recipe
# ablation"). `fast` stays as it was, so the runs and studies made with it reproduce.
FAST2 = replace(FAST, translate=2)
# `fast2` with timm's Muon for the conv filters and its AdamW fallback for the rest, at an AdamW-sized peak rate:
# the default of `train`, the largest gain of the issue-25 ablation (WRN-16-1, 5 epochs, all of CIFAR-10: 3.55
# points better than `fast2` over 2 seeds, seed ranges 0.04-0.22; of the rates tried, 0.005, 0.01 and 0.02, the
# largest was best; README, "bf16 parity and the recipe ablation").
FAST2_MUON = replace(FAST2, optimizer="muon", lr=0.02)
# `fast2-muon` regularised for a long budget, the default of `train`. Muon's weight decay is decoupled (the weights
# shrink by lr * weight_decay a step), so SGD's 5e-4 at lr 0.02 is about none: 100 epochs of `fast2-muon` grew
# WRN-16-2's conv filters to 48 times their SGD-trained size and fit the training set without lowering the error
# (studies/base-wrn-16-2/weight_scale.py). 0.05 is an AdamW-sized decay. With it, airbench96's augmentation for its
# longer budget, the crop's 4 pixels again and cutout 12, took 50 epochs of WRN-16-2 from 9.82% to 9.09% (one
# seed each; README, "The zoo").
FAST3 = replace(FAST2_MUON, weight_decay=0.05, translate=4, cutout=12)

# Transfer from pretrained weights (`--pretrained`): `fast`'s schedule at a twentieth of its rate, a tenth of its
# decay and half its label smoothing, for 10 epochs: the usual fine-tune of an ImageNet-pretrained CNN, lower
# and shorter than training from scratch (a convention, not a figure measured here).
TRANSFER = replace(FAST, epochs=10, lr=0.01, weight_decay=5e-5, label_smoothing=0.1)

RECIPES = {"fast": FAST, "fast2": FAST2, "fast2-muon": FAST2_MUON, "fast3": FAST3, "transfer": TRANSFER, "wrn": WRN,
           "densenet": DENSENET, "finetune": FINETUNE}
FINETUNES = {"finetune": FINETUNE, "finetune-densenet": FINETUNE_DENSENET}  # a family's `paper_finetune` names one
SCRATCH_RECIPES = tuple(name for name in RECIPES if name != "finetune")  # those a network trains from scratch with


def _recipe_for(family: str) -> Recipe:
    """The paper's from-scratch recipe for a family, as its registration names it (ResNets use the WRN one)."""
    return RECIPES[family_type(family).paper_recipe]


# What `--recipe-set FIELD=VALUE` may change, with the range each value must lie in (None: any the type takes).
# epochs, batch_size and ema_decay have flags of their own; milestones are tied to a schedule.
_SETTABLE: dict[str, Optional[tuple[float, float]]] = {
    "lr": (0.0, 100.0), "weight_decay": (0.0, 1.0), "gamma": (0.0, 1.0), "momentum": (0.0, 1.0), "nesterov": None,
    "label_smoothing": (0.0, 0.999), "schedule": None, "warmup": (0.0, 0.999), "decay": None,
    "decay_norm_bias": None, "translate": (0, 16), "flip": None, "lookahead_k": (0, 1000), "lookahead_alpha": (0.0, 1.0),
    "norm_bias_lr": (0.0, 1000.0), "optimizer": None, "cutout": (0, 32),
}


def _parse_field(name: str, text: str, kind: type, setting: str) -> Any:
    flag = "{" + setting + "}"  # the option the text came from, as the front end names it
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise SettingError(flag + " {name}: must be true or false, got {text!r}", name=name, text=text)
        return text.lower() == "true"
    try:
        value = kind(text)
    except ValueError:
        raise SettingError(flag + " {name}: must be {kind}, got {text!r}", name=name, text=text,
                           kind="an integer" if kind is int else "a number") from None
    bounds = _SETTABLE[name]
    if bounds is not None and not (bounds[0] <= value <= bounds[1]):  # NaN fails both comparisons
        raise SettingError(flag + " {name}: must be in [{lo}, {hi}], got {text}", name=name, lo=bounds[0],
                           hi=bounds[1], text=text)
    return value


def with_overrides(recipe: Recipe, overrides: Mapping[str, str], setting: str = "recipe_set") -> Recipe:
    """`recipe` with fields set from text (`--recipe-set flip=alternating`), each parsed by the field's type
    and checked against its range, for ablations that change one thing at a time. `setting` names the option
    the text came from, for the errors (`finetune_set` for derive's fine-tune)."""
    if not overrides:
        return recipe
    flag = "{" + setting + "}"
    types = {f.name: type(getattr(recipe, f.name)) for f in fields(recipe)}
    changes = {}
    for name, text in overrides.items():
        if name not in _SETTABLE:
            raise SettingError(flag + ": {name!r} cannot be set; one of {settable}", name=name,
                               settable=", ".join(_SETTABLE))
        changes[name] = _parse_field(name, text, types[name], setting) if types[name] is not str else text
    try:
        return replace(recipe, **changes)
    except ValueError as err:
        raise SettingError(flag + ": {err}", err=err) from None


def training_recipe(name: Optional[str], family: str, epochs: Optional[float] = None,
                    batch_size: Optional[int] = None, ema: Optional[float] = None,
                    overrides: Mapping[str, str] = {}) -> Recipe:
    """A run's recipe: `name` (None: the paper's for `family`) with its field overrides, batch size, EMA decay
    and length applied, in that order.

    One-line errors for an unknown name and for values no run can use.
    """
    if name is not None and name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    recipe = with_overrides(RECIPES[name] if name is not None else _recipe_for(family), overrides)
    if batch_size is not None:
        recipe = recipe.with_batch_size(batch_size)
    if ema is not None:
        if not 0 <= ema < 1:
            raise SettingError("{ema} must be in [0, 1), got {got}", got=ema)
        recipe = replace(recipe, ema_decay=ema)
    if epochs is not None:
        return recipe.shortened(epochs)
    if recipe.epochs <= 0:
        raise SettingError("recipe {name} has no epochs of its own; give {epochs}", name=name)
    return recipe


def finetune_recipe_for(family: str, overrides: Mapping[str, str] = {}) -> Recipe:
    """The paper's pruning fine-tune for a family, as its registration names it (DenseNet-BC follows its seed
    code's settings), with derive's `--finetune-set` fields applied: a base whose filters are larger than an
    SGD-trained one's (Muon with little weight decay) needs a larger rate for the same relative step."""
    return with_overrides(FINETUNES[family_type(family).paper_finetune], overrides, "finetune_set")
