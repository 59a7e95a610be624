"""Training recipes: the paper's schedules as named presets, and shortened versions of them.

A recipe is a pure description; `lr_at` makes the schedule a function of the step,
so a resumed run needs no scheduler state.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """SGD with momentum and a step schedule: lr * gamma^(milestones passed)."""

    epochs: float
    batch_size: int
    lr: float
    weight_decay: float
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    label_smoothing: float = 0.0

    def lr_at(self, epoch: float) -> float:
        return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)

    def shortened(self, epochs: float) -> "Recipe":
        """The same schedule squeezed into fewer epochs: milestones keep their fractions."""
        scale = epochs / self.epochs
        return replace(self, epochs=epochs, milestones=tuple(m * scale for m in self.milestones))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Zagoruyko & Komodakis / Crowley et al.: 200 epochs, lr 0.1 x0.2 at 60/120/160, wd 5e-4, batch 128.
WRN = Recipe(epochs=200, batch_size=128, lr=0.1, weight_decay=5e-4, milestones=(60, 120, 160), gamma=0.2)
# Huang et al. DenseNet-BC: 300 epochs, batch 64, lr 0.1 x0.1 at 150/225, wd 1e-4.
DENSENET = Recipe(epochs=300, batch_size=64, lr=0.1, weight_decay=1e-4, milestones=(150, 225), gamma=0.1)
# Crowley et al. pruning fine-tune: constant lr 8e-4, wd 5e-4; the prune interval lives in the derive preset.
FINETUNE = Recipe(epochs=0, batch_size=128, lr=8e-4, weight_decay=5e-4)

RECIPES = {"wrn": WRN, "densenet": DENSENET, "finetune": FINETUNE}


def recipe_for(family: str) -> Recipe:
    """The paper's from-scratch recipe for a family (ResNets use the WRN one)."""
    return DENSENET if family == "densenet_bc" else WRN
