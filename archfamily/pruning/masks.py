"""Pruning a network before making it smaller: one 0/1 mask per channel group, and the groups' Fisher saliency.

A group's mask multiplies its channels wherever they leave a norm layer (BatchNorm and timm's norm-act layers,
whose output is past the activation), or, for a group with no norm (a squeeze-excitation's reduction), the
layer that makes them; Fisher saliency is read there. It multiplies them again where a convolution or linear
layer reads them, so what comes between (a learnable affine, a bias past the last norm) cannot reopen them. So a
closed channel is zero everywhere it is read: after a residual addition (every addend is masked), in a
concatenation (the mask sits at the group's offset there) and in a depthwise convolution (masked before and
after it). Removing the closed channels for real (`compress.py`) then gives the
same network. Groups whose channels meet a LayerNorm over channels (ConvNeXt) are masked alike, but there a
closed channel still takes part in the norm's statistics, so masking only approximates removal. A closable group
(a residual branch of archfamily's own families) may lose every channel; once it has, the output of its `branch`
layer (a post-activation ResNet's last norm, which would still add its bias) is zeroed too, so the block computes
its shortcut alone, as the network without the branch does.

Fisher (Theis et al. 2018, the paper's criterion): with one mask m shared by all P places of a group,
dLoss/dm_c = sum over places and positions of a * g, so Delta_c = 1/(2N) sum_n (sum_p sum_hw a g)^2, accumulated
over the training steps between prunes. With the mask after a norm and before its ReLU, a*g is the same as at the
ReLU's output (ReLU passes the gradient where it passes the activation). The per-sample sums of one step
are squared once every place's gradient is in (at the next forward, or when the saliency is read); the sums stay
on the device and are reduced over ranks once per prune.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle

from archfamily.anycnn.groups import NORM_TYPES
from archfamily.families import ChannelGroup, Place
from archfamily.errors import UserError


def mask_places(model: nn.Module, group: ChannelGroup) -> list[Place]:
    """Where the group's mask multiplies its channels: the outputs of its norms, else of the layers that make it."""
    outs = [p for p in group.places if p.dim == "out"]
    norms = [p for p in outs if isinstance(model.get_submodule(p.module), NORM_TYPES)]
    places = norms or [p for p in outs if isinstance(model.get_submodule(p.module), (nn.Conv2d, nn.Linear))]
    for place in places:
        if place.start < 0 or place.count != group.width:
            raise UserError(f"{place.module}: the channels of group {group.name} are not one run there; "
                            "archfamily cannot mask them")
    return places


def input_places(model: nn.Module, group: ChannelGroup) -> list[Place]:
    """Where the group's mask also multiplies the layers that read its channels: the inputs of its convolutions
    and linear layers, where its channels are one run. Masked at the norms alone, a closed channel may come back
    before they read it (a learnable affine after the activation, HGNet's; a bias added past the last norm, as
    a residual branch's closing convolution adds); its readers then see what the pruned network does not have."""
    return [p for p in group.places if p.dim == "in" and p.start >= 0 and p.count == group.width
            and isinstance(model.get_submodule(p.module), (nn.Conv2d, nn.Linear))]


def channels_last(layer: nn.Module, out: torch.Tensor) -> bool:
    """Whether `layer`'s output holds its channels last: a LayerNorm or a linear layer applied to a map laid out
    (N, H, W, C), as ConvNeXt's blocks run them (timm's LayerNorm2d takes and gives (N, C, H, W))."""
    if not isinstance(layer, (nn.LayerNorm, nn.Linear)) or out.dim() <= 2:
        return False
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.normalized_shape[0]
    if out.shape[1] != channels or out.shape[-1] != channels:
        return out.shape[-1] == channels
    return not type(layer).__name__.endswith("2d")


class GroupMasks:
    """The masks of `groups[i]` for i in `prunable` (the others stay whole), applied by forward hooks. `groups` maps
    each group's index among the spec's prunable widths to the group."""

    def __init__(self, model: nn.Module, groups: Mapping[int, ChannelGroup], prunable: Sequence[int]) -> None:
        device = next(model.parameters()).device
        self.model, self.groups, self.prunable = model, dict(groups), list(prunable)
        self.masks = {i: torch.ones(groups[i].width, device=device) for i in self.prunable}
        self.sums = {i: torch.zeros(groups[i].width, dtype=torch.float64, device=device) for i in self.prunable}
        self.samples = 0
        self._step: dict[int, torch.Tensor] = {}  # this step's per-sample sums, squared once the step is over
        segments: dict[str, list[tuple[int, int]]] = defaultdict(list)  # layer -> (group, first channel)
        for i in self.prunable:
            for place in mask_places(model, groups[i]):
                segments[place.module].append((i, place.start))
        self._handles: list[RemovableHandle] = [model.register_forward_pre_hook(lambda module, args: self._end_step())]
        self._first = next(iter(segments), None)
        for name, parts in segments.items():
            self._handles.append(model.get_submodule(name).register_forward_hook(self._hook(name, parts)))
        readers: dict[str, list[tuple[int, int]]] = defaultdict(list)  # layer -> (group, first input channel)
        for i in self.prunable:
            for place in input_places(model, groups[i]):
                readers[place.module].append((i, place.start))
        for name, parts in readers.items():
            self._handles.append(model.get_submodule(name).register_forward_pre_hook(self._input_hook(parts)))
        branches: dict[str, list[int]] = defaultdict(list)  # layer -> the closable groups whose branch it ends
        for i in self.prunable:
            if groups[i].closable and groups[i].branch:
                branches[groups[i].branch].append(i)
        for name, members in branches.items():
            self._handles.append(model.get_submodule(name).register_forward_hook(self._branch_hook(members)))

    def _branch_hook(self, members: list[int]):
        def on_forward(module: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
            alive = torch.stack([self.masks[i].amax() for i in members]).amin()  # 0 once any of them is closed
            return out * alive.to(out.dtype)

        return on_forward

    def _full_mask(self, parts: list[tuple[int, int]], width: int, like: torch.Tensor,
                   detach: bool = False) -> torch.Tensor:
        """One mask over a layer's `width` channels: each group's at its first channel there, 1 elsewhere
        (`detach`: values only, so a mask's gradient is its norms' alone, where saliency is read)."""
        full = torch.ones(width, device=like.device, dtype=like.dtype)
        for i, start in parts:
            mask = self.masks[i].detach() if detach else self.masks[i]
            full[start:start + mask.numel()] = mask.to(like.dtype)
        return full

    def _input_hook(self, parts: list[tuple[int, int]]):
        def on_forward(module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            dim = -1 if isinstance(module, nn.Linear) else 1
            full = self._full_mask(parts, x.shape[dim], x, detach=True)
            return (x * (full if dim == -1 else full.view((1, -1) + (1,) * (x.dim() - 2))), *args[1:])

        return on_forward

    def _hook(self, name: str, parts: list[tuple[int, int]]):
        def on_forward(module: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
            last = channels_last(module, out)
            full = self._full_mask(parts, out.shape[-1 if last else 1], out)
            shape = (1,) * (out.dim() - 1) + (-1,) if last else (1, -1) + (1,) * (out.dim() - 2)
            masked = out * full.view(shape)
            if self.model.training and masked.requires_grad:  # the network's mode: its norms may be frozen
                if name == self._first:
                    self.samples += out.shape[0]
                act = out.detach()  # dLoss/dm = sum of the unmasked activation times the masked one's gradient

                def on_grad(grad: torch.Tensor) -> None:
                    dtype = torch.promote_types(act.dtype, torch.float32)  # bf16 under autocast: sum in fp32
                    per_sample = (act.to(dtype) * grad.to(dtype))
                    if last and per_sample.dim() > 2:
                        per_sample = per_sample.movedim(-1, 1)
                    per_sample = per_sample.sum(tuple(range(2, per_sample.dim()))) if per_sample.dim() > 2 else per_sample
                    for i, start in parts:
                        part = per_sample[:, start:start + self.masks[i].numel()].double()
                        self._step[i] = self._step[i] + part if i in self._step else part

                masked.register_hook(on_grad)
            return masked

        return on_forward

    def _end_step(self) -> None:
        for i, per_sample in self._step.items():
            self.sums[i] += per_sample.pow(2).sum(0)
        self._step = {}

    def saliency(self) -> dict[int, torch.Tensor]:
        """Delta per channel of each prunable group (on the host), summed over ranks when distributed."""
        self._end_step()
        order = self.prunable
        samples = torch.tensor([float(self.samples)], dtype=torch.float64, device=self.sums[order[0]].device)
        sums = [self.sums[i] for i in order]
        if dist.is_available() and dist.is_initialized():  # one all-reduce per prune, on the device
            flat = torch.cat([*sums, samples])
            dist.all_reduce(flat)
            *sums, samples = torch.split(flat, [s.numel() for s in sums] + [1])
        n = max(float(samples.item()), 1.0)
        return {i: (s / (2 * n)).cpu() for i, s in zip(order, sums)}

    def reset(self) -> None:
        self._step = {}
        for s in self.sums.values():
            s.zero_()
        self.samples = 0

    def close(self, closed: Sequence[tuple[int, int]]) -> None:
        """Close (group, channel) pairs."""
        for i, channel in closed:
            self.masks[i][channel] = 0.0

    def closed_channels(self) -> dict[int, list[int]]:
        return {i: torch.nonzero(m == 0).flatten().tolist() for i, m in self.masks.items()}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
