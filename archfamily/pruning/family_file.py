"""The `family.json` format: what one derive run found, and the scaling rules fitted to it.

Version 3 holds the base spec, the pruning method and data, which channel groups a timm base pruned (`groups`:
all or inner; null for archfamily's own families), the trajectory (each point's exact prunable widths, and
per-stage and per-block width ratios as readable figures), the fitted scaling rules (`rules`), and provenance. Its
base may be a member of any registered family, a timm CNN's (`{"family": "timm", "base": ..., "widths": ...}`)
among them; an archfamily that reads only versions 1 and 2 says so rather than misreading one. Version 2 files
are version 3 without `groups`; version 1 files (no widths) still load: their ratios are kept/original of whole
channels, so the widths come back exactly. `load_family` refuses other versions and damaged files with a
one-line error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from archfamily.checks import Fields, read_json, show
from archfamily.errors import UserError
from archfamily.pruning.criteria import cost_weighing
from archfamily.scaling.rules import RULES, family_order, fit_rules, trajectory_spec
from archfamily.specs import ArchSpec, block_ratios, family_type, spec_from_dict, spec_to_dict, stage_ratios

if TYPE_CHECKING:  # reading a family (`archfamily scale`) must not pay for importing torch
    from archfamily.data.dataset import ImageData

FAMILY_FORMAT = "archfamily.family"
FAMILY_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


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
    def data_facts(self) -> Optional[dict[str, Any]]:
        """The facts of the data it was derived on (`ImageData.facts`), checked; None for a family.json written
        before they were recorded (CIFAR-10's)."""
        from archfamily.models.checkpoint import FACTS, checked_facts

        data = self.document.get("data")
        if not isinstance(data, dict) or not any(k in data for k in FACTS):
            return None
        return checked_facts({k: data.get(k) for k in FACTS}, f"{self.path}: data")

    @property
    def specs(self) -> list[ArchSpec]:
        """The pruned network at each trajectory point."""
        return [trajectory_spec(self.base, e) for e in self.trajectory]


def _widths_from_ratios(base: ArchSpec, ratios: list[float]) -> list[int]:
    """A version 1 point's widths: its ratios are kept/original of whole channels, so rounding is exact."""
    return [round(r * w) for r, w in zip(ratios, base.prunable_widths())]


def _checked_point(raw: Any, where: str, base: ArchSpec, version: int) -> dict[str, Any]:
    """One trajectory point, its types and ranges checked, and its counts those of its widths."""
    blocks, stages = len(base.prunable_widths()), len(set(base.prunable_stages()))
    point = Fields(raw, where)
    point.int("prune_step")
    params, macs = point.int("params", 1), point.int("macs", 1)
    point.number("test_error", 0, 100, optional=True)
    ratios = point.numbers("block_ratios", blocks, 0, 1)
    point.numbers("stage_ratios", stages, 0, 1)
    widths = point.ints("widths", blocks) if version >= 2 else _widths_from_ratios(base, ratios)
    if any(w > w0 for w, w0 in zip(widths, base.prunable_widths())):
        point.fail("widths", "must not exceed the base's widths")
    spec = base.with_prunable_widths(widths)
    if (spec.num_params(), spec.num_macs()) != (params, macs):
        point.fail("params", f"and macs ({params:,}, {macs:,}) are not those of its widths "
                             f"({spec.num_params():,}, {spec.num_macs():,})")
    return {**raw, "widths": widths}


def _check_rules(rules: Fields, base: ArchSpec) -> None:
    """The fitted numbers `make_rule` reads, as each rule checks them (`Rule.keys`, `Rule.check`): present,
    finite and in range."""
    unknown = sorted(str(k) for k in rules.data if k not in RULES)
    if unknown:
        rules.fail(unknown[0], f"is not a rule; rules are {', '.join(RULES)}")
    for rule in family_order():
        if rule.name in rules.data or not rule.optional:
            rule.check(rules.obj(rule.name, rule.keys), base)


def load_family(path: str | Path) -> Family:
    """Read a family from a derive folder or its family.json, checking every field `scale` and `bench` use."""
    path = Path(path)
    if path.is_dir():
        path = path / "family.json"
    if not path.is_file():
        raise UserError(f"family not found: {path} (give a derive run folder or its family.json)")
    doc = Fields(read_json(path), str(path))
    if doc.data.get("format") != FAMILY_FORMAT:
        raise UserError(f"{path} is not an archfamily family file")
    version = doc.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise UserError(f"{path} is family format version {show(version)}; "
                        f"this archfamily reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    base = spec_from_dict(doc.get("base"), f"{path}: base")
    trajectory = [_checked_point(p, f"{path}: trajectory[{i}]", base, version)
                  for i, p in enumerate(doc.list("trajectory", nonempty=True))]
    if trajectory[0]["params"] != base.num_params():
        doc.fail("trajectory[0]", "is not the base network")
    rules = doc.obj("rules")
    _check_rules(rules, base)
    _check_groups(doc, base, version)
    return Family(path, base, doc.str("base_name"), doc.str("method"), trajectory, rules.data, doc.data)


def _check_groups(doc: Fields, base: ArchSpec, version: int) -> None:
    """`groups` (version 3): the channel groups a timm base's run pruned, one of the pruning policies; null for
    archfamily's own families, whose runs prune their inner widths."""
    if version < 3:
        return
    if family_type(base.family).graph_pruned:
        from archfamily.anycnn.table import POLICIES

        doc.str("groups", POLICIES)
    elif doc.get("groups") is not None:
        doc.fail("groups", f"must be null for a {base.family} family, got {show(doc.get('groups'))}")



def _family_point(entry: dict[str, Any], base: ArchSpec) -> dict[str, Any]:
    """One family.json trajectory point from a trajectory.jsonl line: counts, error, exact widths and ratios."""
    spec = spec_from_dict(entry["spec"])
    return {
        **{k: entry[k] for k in ("prune_step", "params", "macs", "test_error")},
        "widths": spec.prunable_widths(), "stage_ratios": stage_ratios(spec, base), "block_ratios": block_ratios(spec, base),
    }


def _groups(config: dict[str, Any], base: ArchSpec) -> Optional[str]:
    """The channel groups a timm base's run pruned (its default, all, written out); None for the built-in families."""
    return (config.get("groups") or "all") if family_type(base.family).graph_pruned else None


def _cost_fields(config: dict[str, Any]) -> dict[str, Optional[str]]:
    """What a cost-aware run weighed saliency against, and for a latency cost the device it was predicted for:
    a family pruned against one machine's latency is that machine's family, and its reader needs to know which."""
    weighs_cost = config["method"] in cost_weighing()
    latency = weighs_cost and config["cost"] == "latency"
    runtime = config.get("cost_runtime")  # ONNX Runtime's is named; eager's is not, as before runtimes
    return {"cost": config["cost"] if weighs_cost else None, "cost_on": config.get("cost_on") if latency else None,
            **({"cost_runtime": runtime} if latency and runtime else {})}


def family_document(config: dict[str, Any], base: ArchSpec, base_recipe: Optional[dict[str, Any]],
                    finetune: dict[str, Any], data: "ImageData", trajectory: list[dict[str, Any]],
                    provenance: dict[str, Any], checkpoints: list[str]) -> dict[str, Any]:
    """The family.json of a finished derive run (`trajectory` as trajectory.jsonl holds it), its rules fitted.

    `base_recipe` is None when the base came from a checkpoint that does not record its recipe; `finetune` is the
    recipe the run fine-tuned with while pruning.
    """
    points = [_family_point(e, base) for e in trajectory]
    return {
        "format": FAMILY_FORMAT, "version": FAMILY_VERSION,
        "base": spec_to_dict(base), "base_name": config["base"],
        "base_params": base.num_params(), "base_macs": base.num_macs(), "base_test_error": trajectory[0]["test_error"],
        "method": config["method"], **_cost_fields(config), "groups": _groups(config, base),
        "channels_per_step": config["channels_per_step"], "prune_every": config["prune_every"],
        "seed": config["seed"],
        "data": {"source": data.source, "train_images": len(data.train_x),
                 "test_images": len(data.test_x), "subset": config["subset"],
                 "test_subset": config["test_subset"], **data.facts()},
        "recipes": {"base": base_recipe, "finetune": finetune},
        "trajectory": points,
        "rules": fit_rules(base, points),
        "checkpoints": checkpoints,
        "provenance": provenance,
    }
