"""The CUDA paths (data on the device, bf16 autocast, device-side Fisher sums); skipped without a GPU.

Run on a lent GPU with `pytest -m cuda`.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archfamily.data.dataset import ImageData, in_memory
from archfamily.models import build_model
from archfamily.pruning.run import PruneRun
from archfamily.training.recipes import FAST
from archfamily.specs import base_spec
from archfamily.training.trainer import Trainer

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
GPU = torch.device("cuda")


def _data() -> ImageData:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen)
    return in_memory(images, torch.arange(64) % 10, images[:20], torch.arange(20) % 10, "fake")


def test_bf16_training_step_on_cuda() -> None:
    torch.manual_seed(0)
    trainer = Trainer(build_model(base_spec("wrn-10-1")), _data(), FAST.with_batch_size(16).shortened(1), GPU)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    losses = [trainer.train_step() for _ in range(3)]
    assert all(torch.isfinite(loss) and loss.device.type == "cuda" for loss in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert 0 <= trainer.evaluate() <= 100


def test_fisher_on_cuda_matches_the_cpu_within_bf16() -> None:
    torch.manual_seed(0)
    cpu_model = build_model(base_spec("wrn-10-1"))
    gpu_model = build_model(base_spec("wrn-10-1")).to(GPU)
    gpu_model.load_state_dict(cpu_model.state_dict())
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    cpu_run, gpu_run = PruneRun(cpu_model.spec, cpu_model), PruneRun(gpu_model.spec, gpu_model)
    F.cross_entropy(cpu_model(x), y).backward()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(gpu_model(x.to(GPU)), y.to(GPU))
    loss.backward()
    gpu_run.masks.saliency()
    assert all(s.device.type == "cuda" for s in gpu_run.masks.sums.values())  # accumulated on the device
    cpu_scores = torch.cat(list(cpu_run.masks.saliency().values()))
    gpu_scores = torch.cat(list(gpu_run.masks.saliency().values()))
    torch.testing.assert_close(gpu_scores, cpu_scores, rtol=0.1, atol=1e-3 * float(cpu_scores.max()))
    lowest = set(cpu_scores.argsort()[:8].tolist())
    assert len(lowest & set(gpu_scores.argsort()[:8].tolist())) >= 6  # the channels pruned first barely move


def test_compress_on_cuda_keeps_the_outputs() -> None:
    torch.manual_seed(0)
    model = build_model(base_spec("wrn-16-2")).to(GPU).eval()
    run = PruneRun(model.spec, model, "random", channels_per_prune=sum(model.spec.prunable_widths()) // 2)
    run.prune()
    small = run.compressed()
    x = torch.randn(4, 3, 32, 32, device=GPU)
    with torch.no_grad():
        torch.testing.assert_close(small.to(GPU).eval()(x), model(x), atol=1e-4, rtol=1e-4)
