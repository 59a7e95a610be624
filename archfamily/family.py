"""The `family.json` format: what one derive run found, and the scaling rules fitted to it.

Version 2 holds the base spec, the pruning method and data, the trajectory (each
point's exact prunable widths, and per-stage and per-block width ratios as readable
figures), the fitted scaling rules (`rules`), and provenance. Version 1 files (no
widths) still load: their ratios are kept/original of whole channels, so the widths
come back exactly. `load_family` refuses other versions and damaged files with a
one-line error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from archfamily.errors import UserError
from archfamily.recipes import finetune_recipe_for
from archfamily.scaling import fit_rules, trajectory_spec
from archfamily.specs import ArchSpec, block_ratios, spec_from_dict, spec_to_dict, stage_ratios

if TYPE_CHECKING:  # reading a family (`archfamily scale`) must not pay for importing torch
    from archfamily.data import Cifar10

FAMILY_FORMAT = "archfamily.family"
FAMILY_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Family:
    """A loaded family.json: the base spec, its trajectory (and each point's spec), and its fitted rules."""

    path: Path
    base: ArchSpec
    base_name: str
    method: str
    trajectory: list[dict[str, Any]]
    rules: dict[str, Any]
    document: dict[str, Any]

    @property
    def specs(self) -> list[ArchSpec]:
        """The pruned network at each trajectory point."""
        return [trajectory_spec(self.base, e) for e in self.trajectory]


def _widths_from_ratios(base: ArchSpec, entry: dict[str, Any]) -> list[int]:
    """A version 1 point's widths: its ratios are kept/original of whole channels, so rounding is exact."""
    return [round(r * w) for r, w in zip(entry["block_ratios"], base.prunable_widths())]


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
    if doc.get("version") not in READABLE_VERSIONS:
        raise UserError(f"{path} is family format version {doc.get('version')}; "
                        f"this archfamily reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    try:
        base = spec_from_dict(doc["base"])
        trajectory = doc["trajectory"]
        if doc["version"] == 1:
            trajectory = [{**e, "widths": _widths_from_ratios(base, e)} for e in trajectory]
        blocks = len(base.prunable_widths())
        if any(len(e["widths"]) != blocks for e in trajectory):
            raise UserError(f"{path} is corrupted: a trajectory point does not hold {blocks} widths")
        return Family(path, base, doc["base_name"], doc["method"], trajectory, doc["rules"], doc)
    except KeyError as exc:
        raise UserError(f"{path} is corrupted or truncated: missing {exc}") from None


def _family_point(entry: dict[str, Any], base: ArchSpec) -> dict[str, Any]:
    """One family.json trajectory point from a trajectory.jsonl line: counts, error, exact widths and ratios."""
    spec = spec_from_dict(entry["spec"])
    return {
        **{k: entry[k] for k in ("prune_step", "params", "macs", "test_error")},
        "widths": spec.prunable_widths(), "stage_ratios": stage_ratios(spec, base), "block_ratios": block_ratios(spec, base),
    }


def family_document(config: dict[str, Any], base: ArchSpec, base_recipe: Optional[dict[str, Any]], data: "Cifar10",
                    trajectory: list[dict[str, Any]], provenance: dict[str, Any],
                    checkpoints: list[str]) -> dict[str, Any]:
    """The family.json of a finished derive run (`trajectory` as trajectory.jsonl holds it), its rules fitted.

    `base_recipe` is None when the base came from a checkpoint that does not record its recipe.
    """
    points = [_family_point(e, base) for e in trajectory]
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
        "trajectory": points,
        "rules": fit_rules(base, points),
        "checkpoints": checkpoints,
        "provenance": provenance,
    }
