"""benchmarks/train_speed.py's parts: its multi-tensor SGD steps must be the trainer's SGD, or the figures
they print beside it compare two different optimizers."""
from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from archfamily.models import build_model
from archfamily.specs import base_spec
from archfamily.training.recipes import FAST
from archfamily.training.trainer import optimizer_for

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"


def _train_speed():
    spec = importlib.util.spec_from_file_location("train_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("implementation", ["foreach", "fused"])
def test_multi_tensor_sgd_steps_as_the_trainers_sgd(implementation: str) -> None:
    torch.manual_seed(0)
    model = build_model(base_spec("wrn-10-1"))
    twin = copy.deepcopy(model)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    trainers_sgd = optimizer_for(model, FAST)  # no decay on norm weights and biases: two groups
    other = _train_speed().sgd_like(optimizer_for(twin, FAST), implementation)
    assert [g["weight_decay"] for g in other.param_groups] == [g["weight_decay"] for g in trainers_sgd.param_groups]
    for _ in range(2):  # the second step reads the momentum the first left
        for net, optimizer in ((model, trainers_sgd), (twin, other)):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert other.defaults[implementation] is True
