"""The `family.json` format: what one derive run found, and the scaling rules fitted to it.

Version 1 holds the base spec, the pruning method and data, the trajectory of
per-stage and per-block width ratios, the fitted scaling rules (`rules`), and
provenance. `load_family` refuses other versions and damaged files with a
one-line error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from archfamily.errors import UserError
from archfamily.recipes import finetune_recipe_for
from archfamily.scaling import fit_rules
from archfamily.specs import ArchSpec, spec_from_dict, spec_to_dict

if TYPE_CHECKING:  # reading a family (`archfamily scale`) must not pay for importing torch
    from archfamily.data import Cifar10

FAMILY_FORMAT = "archfamily.family"
FAMILY_VERSION = 1


@dataclass(frozen=True)
class Family:
    """A loaded family.json: the base spec, its trajectory, and its fitted rules."""

    path: Path
    base: ArchSpec
    base_name: str
    method: str
    trajectory: list[dict[str, Any]]
    rules: dict[str, Any]
    document: dict[str, Any]


def load_family(path: str | Path) -> Family:
    """Read a family from a derive folder or its family.json."""
    path = Path(path)
    if path.is_dir():
        path = path / "family.json"
    if not path.is_file():
        raise UserError(f"family not found: {path} (give a derive run folder or its family.json)")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is corrupted or truncated: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FAMILY_FORMAT:
        raise UserError(f"{path} is not an archfamily family file")
    if doc.get("version") != FAMILY_VERSION:
        raise UserError(f"{path} is family format version {doc.get('version')}; "
                        f"this archfamily reads version {FAMILY_VERSION}")
    try:
        return Family(path, spec_from_dict(doc["base"]), doc["base_name"], doc["method"], doc["trajectory"],
                      doc["rules"], doc)
    except KeyError as exc:
        raise UserError(f"{path} is corrupted or truncated: missing {exc}") from None


def family_document(config: dict[str, Any], base: ArchSpec, base_recipe: Optional[dict[str, Any]], data: "Cifar10",
                    trajectory: list[dict[str, Any]], provenance: dict[str, Any],
                    checkpoints: list[str]) -> dict[str, Any]:
    """The family.json of a finished derive run, with its scaling rules fitted.

    `base_recipe` is None when the base came from a checkpoint that does not record its recipe.
    """
    return {
        "format": FAMILY_FORMAT, "version": FAMILY_VERSION,
        "base": spec_to_dict(base), "base_name": config["base"],
        "base_params": base.num_params(), "base_macs": base.num_macs(), "base_test_error": trajectory[0]["test_error"],
        "method": config["method"], "cost": config["cost"] if config["method"] == "fisher-cost" else None,
        "channels_per_step": config["channels_per_step"], "prune_every": config["prune_every"],
        "seed": config["seed"],
        "data": {"source": data.source, "train_images": int(data.train_x.shape[0]),
                 "test_images": int(data.test_x.shape[0]), "subset": config["subset"],
                 "test_subset": config["test_subset"]},
        "recipes": {"base": base_recipe, "finetune": finetune_recipe_for(base.family).to_dict()},
        "trajectory": [
            {k: e[k] for k in ("prune_step", "params", "macs", "test_error", "stage_ratios", "block_ratios")}
            for e in trajectory
        ],
        "rules": fit_rules(base, trajectory),
        "checkpoints": checkpoints,
        "provenance": provenance,
    }
