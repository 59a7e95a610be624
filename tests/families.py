"""Families for tests without training: a real trajectory of random pruning on an untrained network."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from archfamily.data.dataset import in_memory
from archfamily.pruning.derive import DeriveConfig, trajectory_entry
from archfamily.pruning.family_file import family_document
from archfamily.models import build_model
from archfamily.pruning.run import PruneRun
from archfamily.training.recipes import WRN, finetune_recipe_for
from archfamily.specs import base_spec


def write_family(folder: Path, base_name: str = "wrn-16-2", seed: int = 0, k: int = 8) -> Path:
    base = base_spec(base_name)
    run = PruneRun(base, build_model(base), "random", seed=seed, channels_per_prune=k)
    trajectory = [trajectory_entry(base, 0, 0, 50.0)]
    while trajectory[-1]["params"] > base.num_params() // 10 and run.open_channels():
        run.prune()
        trajectory.append(trajectory_entry(run.member(), run.num_prunes, 0, None))
    tiny = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    data = in_memory(tiny, torch.arange(10) % 10, tiny, torch.arange(10) % 10, "synthetic")
    config = DeriveConfig(base=base_name, method="random", seed=seed, channels_per_step=k).to_dict()
    doc = family_document(config, base, WRN.to_dict(), finetune_recipe_for(base.family).to_dict(), data, trajectory,
                          {"command": ["tests"]}, [])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "family.json").write_text(json.dumps(doc))
    return folder / "family.json"


def write_timm_family(folder: Path, base_name: str = "timm:test_resnet", model_kwargs: dict | None = None,
                      steps: int = 3) -> Path:
    """A timm base's family.json without training or tracing a pruning run: each point closes a quarter of the
    channels left in every inner group (what a run pruning inner groups could reach)."""
    from dataclasses import replace

    from archfamily.anycnn.spec import with_model_kwargs

    base = with_model_kwargs(base_spec(base_name), model_kwargs or {})
    specs = [base]
    for _ in range(steps):
        last = specs[-1]
        widths = tuple(w - w // 4 if g.inner else w for w, g in zip(last.widths, base.groups))
        specs.append(replace(last, widths=widths))
    trajectory = [trajectory_entry(spec, i, 0, 50.0 if i == 0 else None) for i, spec in enumerate(specs)]
    tiny = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    data = in_memory(tiny, torch.arange(10) % 10, tiny, torch.arange(10) % 10, "synthetic")
    config = DeriveConfig(base=base_name, method="random", groups="inner", model_kwargs=model_kwargs).to_dict()
    doc = family_document(config, base, None, finetune_recipe_for(base.family).to_dict(), data, trajectory,
                          {"command": ["tests"]}, [])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "family.json").write_text(json.dumps(doc))
    return folder / "family.json"
