"""What determines a derive run's results (`DeriveConfig`), and the presets that set its defaults (`PRESETS`).

Kept apart from `derive` (which imports torch), so the command line lists the presets and the study plan reads
configs without loading torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional


@dataclass(frozen=True)
class DeriveConfig:
    """Everything that determines a derive run's results (the device does not)."""

    base: str
    method: str = "fisher"
    cost: str = "params"
    cost_on: Optional[str] = None  # where a latency cost is measured: cpu, cpu:THREADS or cuda
    cost_runtime: Optional[str] = None  # what a latency cost is predicted in: onnxruntime; None: eager PyTorch
    recipe: Optional[str] = None  # base training; None: the paper's for the base's family (older run.json files)
    batch_size: Optional[int] = None  # base training; None: the recipe's
    data: Optional[str] = None
    subset: Optional[int] = None
    test_subset: Optional[int] = None
    input_size: Optional[int] = None  # None: the data's own (`data.dataset.load_data`)
    val_fraction: Optional[float] = None  # a validation split carved from train/
    data_path: str = "auto"  # memory, stream or auto (`data.dataset.load_data`)
    seed: int = 0
    epochs: Optional[float] = None
    prune_every: int = 100
    channels_per_step: int = 1
    eval_every: int = 50
    until_params: Optional[int] = None
    checkpoint: Optional[str] = None
    pretrained: Optional[dict[str, str]] = None  # the base starts from timm's pretrained weights (`scratch.pretrained_record`)
    save_at: tuple[int, ...] = ()  # parameter counts at which to save (and measure) the pruned network
    precision: str = "auto"  # auto, fp32 or bf16 for training and fine-tuning; `derive` resolves auto for run.json
    groups: Optional[str] = None  # a timm base's prunable groups: all or inner; None: all (the built-in families
    # prune their own inner groups)
    model_kwargs: Optional[dict[str, Any]] = None  # a timm base's own create_model keywords (output_stride=16)
    finetune_set: dict[str, str] = field(default_factory=dict)  # fine-tune recipe fields set by name (lr=0.02)

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "DeriveConfig":
        """The preset's settings (`PRESETS`), with every override that is not None set over them."""
        return replace(cls(**PRESETS[preset]), **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, dict[str, Any]] = {  # `DeriveConfig` fields each preset sets; the command line overrides any
    # Seconds, for tests: a tiny WRN on 500 images.
    "smoke": dict(base="wrn-16-1", recipe="fast", subset=500, test_subset=200, epochs=1, prune_every=2,
                  channels_per_step=16, eval_every=4),
    # A real result on a CPU (8 to 24 min on 2 cores, by CPU): WRN-16-2 on 10k images, pruned 8 channels every 10 steps.
    "quick": dict(base="wrn-16-2", recipe="fast", batch_size=64, subset=10_000, test_subset=2_000, epochs=6,
                  prune_every=10, channels_per_step=8, eval_every=5),
    # Crowley et al.: the paper's recipes in full, one channel every 100 steps, for a GPU.
    "paper": dict(base="wrn-40-2", prune_every=100, channels_per_step=1, eval_every=50),
}
