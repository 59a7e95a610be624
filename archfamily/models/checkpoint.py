"""Saving and loading networks and resumable training state, as safetensors plus JSON.

- A *model file* is one safetensors file whose metadata holds the spec as JSON, so
  the file alone rebuilds its network. Loading never unpickles anything.
- A *run checkpoint* is `ckpt-<step>.safetensors` (model and optimizer tensors)
  plus `state.json` (loop state), written in that order, each atomically, so a
  run killed at any moment resumes from the last complete checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from archfamily.checks import Fields, decode_json, read_json
from archfamily.errors import SettingError, UserError
from archfamily.files import atomic_save_safetensors, atomic_write_json
from archfamily.models import build_model
from archfamily.specs import MAX_CLASSES, MAX_INPUT_SIZE, ArchSpec, family_type, spec_from_dict, spec_to_dict
from archfamily.weights import read_weights, unreadable

MODEL_FORMAT = "archfamily.model/1"


def save_model(path: Path, model: nn.Module, metadata: Optional[dict[str, str]] = None) -> None:
    """Weights (gate masks dropped) and the spec, so `load_model(path)` rebuilds the network."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("gate.mask")}
    spec = json.dumps(spec_to_dict(model.spec), separators=(",", ":"))
    meta = {"format": MODEL_FORMAT, "spec": spec, **(metadata or {})}
    atomic_save_safetensors(state, path, meta)


def read_model_spec(path: Path) -> ArchSpec:
    """The spec a model file's metadata holds; the weights are not read."""
    where = f"{path}: metadata 'spec'"
    return spec_from_dict(decode_json(read_model_metadata(path)["spec"], where), where)


def model_test_error(path: Path, meta: dict[str, str]) -> float:
    """The test error (%) a model file's metadata records, checked to be a figure in [0, 100]."""
    try:
        error = float(meta["test_error"])
    except (KeyError, ValueError):
        raise UserError(f"{path}: metadata 'test_error' must be a number, got {meta.get('test_error')!r:.40}") from None
    if not 0 <= error <= 100:
        raise UserError(f"{path}: metadata 'test_error' must be from 0 to 100, got {error}")
    return error


FACTS = ("num_classes", "label_names", "input_size", "mean", "std", "crop_pct", "split")


def checked_facts(raw: object, where: str) -> dict[str, object]:
    """Data facts (`data.dataset.ImageData.facts`) as a file holds them (a model's metadata, family.json): every
    field's type and range checked, one line naming `where` and the field for any that is not."""
    facts = Fields(raw, where, FACTS)
    n = facts.int("num_classes", 1, MAX_CLASSES)
    names = facts.list("label_names", n)
    if not all(isinstance(name, str) and len(name) <= 256 for name in names):
        facts.fail("label_names", "must be the class names, as text")
    facts.int("input_size", 1, MAX_INPUT_SIZE)
    facts.numbers("mean", 3, 0, 1)
    facts.numbers("std", 3, 1e-6, 1e3)
    facts.number("crop_pct", 0.01, 1)
    facts.str("split", ("val", "test"))
    return {k: facts.data[k] for k in FACTS}


def model_facts(path: Path, meta: dict[str, str]) -> Optional[dict[str, Any]]:
    """The facts of the data a model file's network was trained on (`data.dataset.ImageData.facts`), checked;
    None for a file that records none (CIFAR-10's, before they were recorded)."""
    if "data_cfg" not in meta:
        return None
    where = f"{path}: metadata 'data_cfg'"
    return checked_facts(decode_json(meta["data_cfg"], where), where)


def read_model_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise UserError(f"cannot read checkpoint {path}: {unreadable(path, exc)}") from None
    if meta.get("format") != MODEL_FORMAT or "spec" not in meta:
        raise UserError(f"{path} is not an archfamily model file (no spec in its metadata)")
    return meta


def load_model(path: Path) -> tuple[ArchSpec, nn.Module, dict[str, str]]:
    """(spec, model, metadata) from a model file, with one-line errors for anything wrong with it: its weights
    are checked against the network its spec builds (`weights.read_weights`), its metadata as `checked_metadata`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    meta = checked_metadata(path, read_model_metadata(path))
    spec = read_model_spec(path)
    model = build_model(spec)
    model.load_state_dict(read_weights(path, model.state_dict()))
    return spec, model, meta


def load_checkpoint_for(spec: ArchSpec, path: str, wanted: str) -> tuple[nn.Module, dict[str, str]]:
    """The trained network of `spec` a user hands over (`derive --checkpoint`, `train --initial-checkpoint`): an
    archfamily model file of that very network, or for a graph-pruned family's network (a timm CNN, no gates of
    ours in it) also its plain safetensors state dict (what timm's own `save_file(model.state_dict())` writes), its
    tensors checked against the network. `wanted` names what the file should match, for the error."""
    try:
        found, model, meta = load_model(Path(path))
    except UserError:
        if not family_type(spec.family).graph_pruned or not Path(path).is_file():
            raise
        model = spec.build()
        model.load_state_dict(read_weights(Path(path), model.state_dict()))
        return model, {}
    if found != spec:
        raise SettingError(f"mismatched checkpoint: {{file}} holds a different network than {wanted}", file=path)
    return model, meta


WHOLE_METADATA = ("seed", "test_images")  # whole numbers a model file's metadata may record


def checked_metadata(path: Path, meta: dict[str, str]) -> dict[str, str]:
    """A model file's metadata with the figures archfamily reads back checked: `test_error` a figure in [0, 100],
    `seed` and `test_images` whole numbers (ASCII digits), so what is copied into an export or reported is valid."""
    if "test_error" in meta:
        model_test_error(path, meta)
    for key in WHOLE_METADATA:
        value = meta.get(key)
        if value is not None and not (value.isascii() and value.isdigit() and len(value) <= 15):
            raise UserError(f"{path}: metadata {key!r} must be a whole number, got {value!r:.40}")
    return meta


class RunCheckpoint:
    """The resumable state of one training loop, kept in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def save(self, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        name = f"ckpt-{step:09d}.safetensors"
        atomic_save_safetensors(tensors, self.folder / name)
        atomic_write_json(self.folder / "state.json", {**state, "step": step, "file": name})
        for old in self.folder.glob("ckpt-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def load(self) -> Optional[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        """The last complete checkpoint, or None when the loop has not saved one yet."""
        state_file = self.folder / "state.json"
        if not state_file.is_file():
            return None
        state = Fields(read_json(state_file), str(state_file), ("step", "file"))
        state.int("step")
        name = state.str("file")
        if Path(name).name != name or not name.startswith("ckpt-"):
            state.fail("file", "must name a checkpoint file beside it")
        try:
            tensors = load_file(str(self.folder / name))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"cannot resume from {self.folder}: damaged checkpoint ({exc})") from None
        return tensors, state.data
