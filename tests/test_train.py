"""The trainer: exact resume from checkpoints, and DistributedDataParallel on gloo."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from archfamily.checkpoint import RunCheckpoint, load_model, save_model
from archfamily.data import Cifar10
from archfamily.models import build_model
from archfamily.recipes import WRN, Recipe
from archfamily.specs import base_spec
from archfamily.train import Trainer

CPU = torch.device("cpu")


def _data() -> Cifar10:
    gen = torch.Generator().manual_seed(0)
    return Cifar10(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(64) % 10,
                   torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=gen), torch.arange(20) % 10, "fake")


def _trainer(recipe: Recipe) -> Trainer:
    torch.manual_seed(0)
    return Trainer(build_model(base_spec("wrn-10-1")), _data(), recipe, CPU, seed=1)


def test_resumed_training_equals_uninterrupted(tmp_path: Path) -> None:
    recipe = Recipe(epochs=3, batch_size=16, lr=0.1, weight_decay=5e-4, milestones=(1, 2), gamma=0.2)
    whole = _trainer(recipe)
    whole.fit(10)

    first = _trainer(recipe)
    checkpoint = RunCheckpoint(tmp_path / "ckpt")
    first.fit(6, checkpoint, every=3)
    second = _trainer(recipe)  # a fresh process: new model, new optimizer
    second.resume(checkpoint)
    assert second.step == 6
    second.fit(10)
    for (name, a), b in zip(whole.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert len(list((tmp_path / "ckpt").glob("ckpt-*.safetensors"))) == 1


def test_schedule_is_the_papers_step_schedule() -> None:
    assert [WRN.lr_at(e) for e in (0, 59.9, 60, 120, 160)] == [0.1, 0.1, 0.1 * 0.2, 0.1 * 0.2**2, 0.1 * 0.2**3]
    short = WRN.shortened(10)
    assert short.milestones == (3.0, 6.0, 8.0) and short.lr_at(3) == 0.1 * 0.2


def test_model_file_round_trip(tmp_path: Path) -> None:
    model = build_model(base_spec("densenet-bc-40"))
    save_model(tmp_path / "m.safetensors", model, {"test_error": "12.5"})
    spec, again, meta = load_model(tmp_path / "m.safetensors")
    assert spec == model.spec and meta["test_error"] == "12.5"
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_two_process_gloo_ddp_step(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = Path(__file__).with_name("ddp_step.py")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(script), str(tmp_path)], check=True, env=env, timeout=300, capture_output=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["before"], ranks[1]["before"])
    assert torch.equal(ranks[0]["after"], ranks[1]["after"])  # gradients were averaged over both ranks
    assert not torch.equal(ranks[0]["before"], ranks[0]["after"])
    assert ranks[0]["error"] == ranks[1]["error"]  # errors are all-reduced over the two shards
