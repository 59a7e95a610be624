"""Channel saliencies: which channels matter least.

- Fisher (Theis et al. 2018, as used by Crowley et al.): for a gate's activation a
  and the gradient g of the training loss with respect to it,
  Delta_c = 1/(2N) * sum_n (sum_{h,w} a_nchw * g_nchw)^2, accumulated over every
  training step since the last prune. It is the Fisher estimate of the loss
  increase from zeroing channel c.
- L1 (Li et al. 2017): sum of |w| over the filter that produces the channel. (The
  reference code summed signed weights; we take absolute values as the paper says.)
- Random: a seeded uniform score, the sanity baseline.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.hooks import RemovableHandle

from archfamily.models.gates import PruneGroup
from archfamily.seeding import generator


class FisherAccumulator:
    """Accumulates per-channel Fisher sums on every gate through forward + tensor hooks.

    The sums stay on the gates' device (float64) and the sample count on the host, so a
    training step never waits for the GPU; they are reduced over ranks and copied to the
    host once per prune, in `saliency`.
    """

    def __init__(self, groups: list[PruneGroup]) -> None:
        self.groups = groups
        self.sums = [torch.zeros(g.gate.mask.numel(), dtype=torch.float64, device=g.gate.mask.device) for g in groups]
        self.samples = 0
        self._handles: list[RemovableHandle] = [
            g.gate.register_forward_hook(self._make_hook(i, first=(i == 0))) for i, g in enumerate(groups)
        ]

    def _make_hook(self, i: int, first: bool):
        def on_forward(module: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            if not (module.training and out.requires_grad):
                return
            act = out.detach()
            if first:
                self.samples += act.shape[0]

            def on_grad(grad: torch.Tensor) -> None:
                dtype = torch.promote_types(act.dtype, torch.float32)  # bf16 under autocast: sum in fp32
                per_sample = (act.to(dtype) * grad.to(dtype)).sum((2, 3))
                self.sums[i] += per_sample.pow(2).sum(0)

            out.register_hook(on_grad)

        return on_forward

    def saliency(self) -> list[torch.Tensor]:
        """Delta per channel (on the host), summed over all ranks when training is distributed."""
        sums = self.sums
        samples = torch.tensor([float(self.samples)], dtype=torch.float64, device=sums[0].device)
        if dist.is_available() and dist.is_initialized():  # one all-reduce on the device (NCCL on GPUs)
            flat = torch.cat([*sums, samples])
            dist.all_reduce(flat)
            *sums, samples = torch.split(flat, [s.numel() for s in sums] + [1])
        n = max(float(samples.item()), 1.0)
        return [(s / (2 * n)).cpu() for s in sums]

    def reset(self) -> None:
        for s in self.sums:
            s.zero_()
        self.samples = 0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def l1_saliency(groups: list[PruneGroup]) -> list[torch.Tensor]:
    """L1 norm of each producing filter: sum |w| over input channels and kernel."""
    return [g.producer.weight.detach().abs().sum((1, 2, 3)).double().cpu() for g in groups]


def random_saliency(groups: list[PruneGroup], seed: int, step: int) -> list[torch.Tensor]:
    """Uniform scores from a generator seeded by (seed, step): identical on every rank and on resume."""
    gen = generator(seed, 3, step)
    return [torch.rand(g.gate.mask.numel(), generator=gen, dtype=torch.float64) for g in groups]
