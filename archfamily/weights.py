"""Checking tensors read from a model file against the network they are meant for, before any is used.

Every place archfamily reads weights (`--checkpoint`, `--weights`, a run's resume checkpoint, `zoo add`,
`measure`, `bench --trained`, timm's `pretrained=True` and `local-dir:`) calls `read_weights` or
`check_tensors`: the names are the network's, every shape is its shape, every dtype is its dtype's kind
(floating point where the network has floating point), and every floating value is finite. `load_state_dict`
would otherwise fail with a multi-line `size mismatch` traceback, cast integers silently, or, with NaN weights,
let a run train on garbage for as long as it is left. The first tensor that differs is named in one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open

from archfamily.errors import UserError


def unreadable(path: Path, exc: Exception) -> str:
    """Why a file safetensors cannot open is not a model, in words (not its parser's `Error while deserializing
    header: header too large`, which is what a JSON spec given for a model file gets)."""
    if not isinstance(exc, SafetensorError):
        return getattr(exc, "strerror", None) or str(exc)
    if "not fully covered" in str(exc):
        return "a damaged model file (safetensors): shorter than its header says, perhaps cut off while copied"
    try:
        with open(path, "rb") as fh:
            json_text = fh.read(64).lstrip()[:1] in (b"{", b"[")
    except OSError:
        json_text = False
    return "not a model file (safetensors)" + ("; it holds JSON (a spec?): this takes a trained model's "
                                               ".safetensors" if json_text else "")


def _dtype_kind(dtype: torch.dtype) -> str:
    return "floating point" if dtype.is_floating_point else "complex" if dtype.is_complex else \
        "bool" if dtype == torch.bool else "integer"


GATE_MASKS = ("gate.mask", "gate1.mask", "gate2.mask")  # the channel gates pruning once put in archfamily's networks


def _names(where: str, found: set[str], wanted: Mapping[str, torch.Tensor]) -> None:
    missing = [k for k in wanted if k not in found]
    unexpected = sorted(found - wanted.keys())
    if any(k.endswith(GATE_MASKS) for k in unexpected):
        raise UserError(f"{where} holds channel gates, written while pruning by an archfamily before its one pruning "
                        "engine; it cannot be resumed: derive again into a new folder")
    if missing or unexpected:
        first = f"no tensor {missing[0]!r}" if missing else f"unexpected tensor {unexpected[0]!r}"
        raise UserError(f"{where} does not hold the weights of its network ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected tensors; first: {first})")


def check_tensor(where: str, name: str, tensor: torch.Tensor, wanted: torch.Tensor) -> None:
    """One tensor against the network's: shape, dtype kind, finite values (a meta-device `wanted` is enough)."""
    if tuple(tensor.shape) != tuple(wanted.shape):
        raise UserError(f"{where}: tensor {name!r} has shape {list(tensor.shape)}, its network's is "
                        f"{list(wanted.shape)}")
    if _dtype_kind(tensor.dtype) != _dtype_kind(wanted.dtype):
        raise UserError(f"{where}: tensor {name!r} is {tensor.dtype} ({_dtype_kind(tensor.dtype)}), its network's "
                        f"is {_dtype_kind(wanted.dtype)}")
    if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
        raise UserError(f"{where}: tensor {name!r} holds NaN or infinite values")


def check_tensors(where: str, tensors: Mapping[str, torch.Tensor], wanted: Mapping[str, torch.Tensor]) -> None:
    """Tensors already in memory (a resume checkpoint's), checked as `read_weights` checks a file's."""
    _names(where, set(tensors), wanted)
    for name, want in wanted.items():
        check_tensor(where, name, tensors[name], want)


def read_weights(path: Path, wanted: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file `path`, each checked against `wanted` (a network's `state_dict()`); a
    one-line `UserError` naming the file and the first tensor that differs. Tensors are read one at a time, so a
    bad one is refused before the rest are loaded."""
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            _names(str(path), set(fh.keys()), wanted)
            for name, want in wanted.items():
                shape = tuple(fh.get_slice(name).get_shape())
                if shape != tuple(want.shape):  # before reading it: a huge wrong tensor is never loaded
                    check_tensor(str(path), name, torch.empty(shape, device="meta"), want)
                tensors[name] = fh.get_tensor(name)
                check_tensor(str(path), name, tensors[name], want)
    except (SafetensorError, OSError) as exc:
        raise UserError(f"cannot read model file {path}: {unreadable(path, exc)}") from None
    return tensors
