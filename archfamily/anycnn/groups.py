"""The coupled channel groups of a timm CNN, traced once by Torch-Pruning's dependency graph (DepGraph).

A group is a set of channels that must be kept or removed together: a convolution's output channels, the norm
after it, the input channels of every layer that reads them, and, through residual additions and
concatenations, every other layer tied to them. Torch-Pruning finds them by tracing one forward pass; this module
keeps what archfamily needs from the trace: per group, each layer dimension it occupies (`Place`) and how many of
that dimension's channels it holds. That is enough to rebuild the network at any widths and to count it.
"""
from __future__ import annotations

import math
import traceback

import signal
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from archfamily.anycnn.layers import NORM_TYPES, is_depthwise  # noqa: F401  (also read from here)
from archfamily.anycnn.resizable import resizable_groups
from archfamily.families import ChannelGroup, Place
from archfamily.errors import UserError

TRACE_SECONDS = 180  # a trace that takes longer is refused (Torch-Pruning has been seen not to finish on some
# networks; FocalNet's smallest takes about a minute on a busy 2-core CPU)


@contextmanager
def _time_limit(seconds: int, what: str) -> Iterator[None]:
    """A one-line error instead of a hang (SIGALRM: the main thread only, where the CLI traces)."""
    def expire(signum: int, frame: object) -> None:
        raise UserError(f"{what}: tracing its channel groups took more than {seconds} s; archfamily cannot prune it")

    try:
        previous = signal.signal(signal.SIGALRM, expire)
    except ValueError:  # not the main thread: no limit
        yield
        return
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _writes_channels(layer: nn.Module) -> bool:
    """A layer that makes new channels: a convolution (but not a depthwise one) or a linear layer."""
    if isinstance(layer, nn.Conv2d):
        return not is_depthwise(layer)
    return isinstance(layer, nn.Linear)


def _dim(handler: object) -> str:
    name = getattr(handler, "__name__", "")
    return "out" if name == "prune_out_channels" else "in"


def _raised_in(exc: BaseException) -> str:
    """Where in Torch-Pruning an error was raised (` in torch_pruning's FUNCTION`: its own bug, to report
    upstream), or nothing for an error raised elsewhere."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "torch_pruning" in f.filename]
    return f" in torch_pruning's {frames[-1].name}" if frames else ""


def trace_groups(model: nn.Module, name: str, input_size: int, in_chans: int = 3) -> list[ChannelGroup]:
    """The channel groups of `model` (a timm model named `name`, on the CPU), in Torch-Pruning's order: every
    group but the classifier's outputs (the input image has none). Each says whether it is inner, for the
    pruning policy that prunes only those (the paper's: `--groups inner`). A model with self-attention or patch
    tokens is refused first (`kinds.not_a_cnn`); a group the network does not run with resized is left fixed,
    not one of them (`resizable.resizable_groups`)."""
    import torch_pruning as tp

    from archfamily.anycnn.kinds import not_a_cnn

    found = not_a_cnn(model)
    if found:
        raise UserError(f"{name}: archfamily prunes CNNs; this model has {found}")
    names = {id(m): n for n, m in model.named_modules()}
    names.update({id(p): n for n, p in model.named_parameters()})  # parameters outside any layer (ConvNeXt's gamma)
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    ignored = [classifier] if isinstance(classifier, nn.Module) else []
    example = torch.randn(1, in_chans, input_size, input_size)
    with _time_limit(TRACE_SECONDS, name), torch.enable_grad():  # Torch-Pruning traces through autograd
        try:
            was_training = model.training
            graph = tp.DependencyGraph().build_dependency(model.eval(), example_inputs=example)
            model.train(was_training)  # the caller's model as it was (a trace runs it in eval mode)
            traced = list(graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]))
        except UserError:
            raise
        except Exception as exc:  # Torch-Pruning's own failures (IndexError, split sizes...) on what it cannot trace
            raise UserError(f"{name}: Torch-Pruning cannot trace its channel groups "
                            f"({type(exc).__name__}{_raised_in(exc)}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else 'no message'})") from None
    groups = []
    for group in traced:
        places: dict[tuple[str, str], tuple[int, int]] = {}
        for dep, idxs in group:
            target = dep.target.module
            if isinstance(target, nn.Parameter):
                key = (names[id(target)], "param")
            elif id(target) in names and any(True for _ in target.parameters(recurse=False)):
                key = (names[id(target)], _dim(dep.handler))
            else:
                continue  # an operation (add, concat, reshape) or a layer without weights
            idxs = sorted(int(i) for i in idxs)
            start = idxs[0] if idxs == list(range(idxs[0], idxs[0] + len(idxs))) else -1
            if len(idxs) > places.get(key, (0, 0))[0]:
                places[key] = (len(idxs), start)
        if not places:
            continue
        writers = [k for k in places if k[1] == "out" and _writes_channels(model.get_submodule(k[0]))]
        root = names[id(group[0][0].target.module)]
        grouped = [layer.in_channels // layer.groups for layer in (model.get_submodule(m) for m, _ in places if _ != "param")
                   if isinstance(layer, nn.Conv2d) and layer.groups > 1 and not is_depthwise(layer)]
        width = len(group[0][1])
        # a layer holding a part of the group (half of a ghost module's concatenation) resizes by whole channels
        # only at widths that are multiples of the group's width over that part's
        parts = [width // math.gcd(width, count) for count, _ in places.values() if count % width]
        groups.append(ChannelGroup(root, width, tuple(Place(m, d, c, at) for (m, d), (c, at) in places.items()),
                                   inner=len(writers) == 1, step=math.lcm(1, *grouped, *parts)))
    return resizable_groups(model, groups, input_size, in_chans)
