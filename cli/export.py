"""`archfamily export`: a spec, or the family member at a budget, as a timm local-dir folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from archfamily.errors import UserError
from archfamily.limits import MAX_ROUND_TO
from archfamily.scaling.rules import RULES
from archfamily.limits import format_count, parse_count
from archfamily.cli.options import Count


@click.command()
@click.option("--spec", "spec_file", help="Spec JSON (from `archfamily scale --out`).")
@click.option("--family", "family_path", help="Or: a derive run folder or family.json, with --params or --macs.")
@click.option("--params", help="Parameter budget of the family member, e.g. 1M.")
@click.option("--macs", help="MAC budget of the family member, e.g. 100M.")
@click.option("--rule", type=click.Choice(RULES), default="copycat", show_default=True)
@click.option("--round-to", type=Count(1, MAX_ROUND_TO), default=1, show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False), help="Trained weights (safetensors) of exactly this spec.")
@click.option("--onnx", "onnx", is_flag=True, help="Also write model.onnx (dynamic batch), for ONNX Runtime or OpenVINO.")
@click.option("--out", required=True, type=click.Path(), help="Folder to write config.json and model.safetensors.")
def export(spec_file: Optional[str], family_path: Optional[str], params: Optional[str], macs: Optional[str],
           rule: str, round_to: int, weights: Optional[str], onnx: bool, out: str) -> None:
    """Write a spec as a timm folder: config.json and model.safetensors.

    After `import archfamily.zoo`, timm.create_model('local-dir:OUT', pretrained=True) rebuilds it.
    """
    from archfamily.hub.export import export as run_export
    from archfamily.pruning.family_file import load_family
    from archfamily.scaling.rules import make_rule, solve
    from archfamily.training.scratch import read_spec_file

    if bool(spec_file) == bool(family_path):
        raise UserError("give --spec FILE, or --family F with --params or --macs")
    if spec_file and (params or macs):
        raise UserError("--params and --macs choose a member of --family; --spec already is one")
    meta: dict[str, str] = {}
    facts = None
    if spec_file:
        spec = read_spec_file(spec_file)
    else:
        if bool(params) == bool(macs):
            raise UserError("with --family, give exactly one budget: --params or --macs")
        metric = "params" if params else "macs"
        budget = parse_count(params or macs, f"--{metric}")
        family = load_family(family_path)
        result = solve(make_rule(rule, family.base, family.trajectory, family.rules), budget, metric, round_to)
        spec = result.member.spec
        facts = family.data_facts
        meta = {"family": str(family.path), "rule": rule, "multiplier": f"{result.member.multiplier:.6f}",
                "budget": json.dumps({metric: budget}), "round_to": str(round_to)}
    run_export(spec, Path(out), Path(weights) if weights else None, meta, onnx=onnx, facts=facts)
    files = "config.json, model.safetensors and model.onnx" if onnx else "config.json and model.safetensors"
    click.echo(f"wrote {out}/{files} ({format_count(spec.num_params())} params); "
               f"load with: import archfamily.zoo, timm; timm.create_model('local-dir:{out}', pretrained=True)")
