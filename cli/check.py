"""`archfamily check timm:NAME`: whether archfamily handles a timm network, stage by stage (`compat.check`)."""
from __future__ import annotations

import json
from typing import Optional

import click

from archfamily.errors import UserError
from archfamily.specs import MAX_INPUT_SIZE
from archfamily.cli.options import Count


@click.command()
@click.argument("network")
@click.option("--input-size", type=Count(1, MAX_INPUT_SIZE),
              help="Side of the small input the stages run at [32, or the least of 64, 96... the network runs "
                   "at]; the native stage runs at timm's own.")
@click.option("--json", "as_json", is_flag=True,
              help="Print each stage's result as a JSON line as it ends, then the whole check as one.")
def check(network: str, input_size: Optional[int], as_json: bool) -> None:
    """Check that a timm CNN goes through every stage of a run (trace to ONNX); writes nothing."""
    from archfamily.compat.check import STAGES, StageResult, check_network

    if not network.startswith("timm:"):
        raise UserError(f"check takes a timm network as timm:NAME (timm:resnet18), got {network!r}")

    def say(stage: str, result: StageResult) -> None:
        if as_json:  # as it ends, so a caller that stops a slow check knows where it was
            click.echo(json.dumps({"stage": stage, "ok": result.ok, "seconds": round(result.seconds, 2),
                                   "detail": result.detail}))
        else:
            mark = {True: "ok", False: "FAILED", None: "skipped"}[result.ok]
            click.echo(f"{stage:<9} {mark:<7} {result.seconds:6.1f} s  {result.detail}")

    result = check_network(network.removeprefix("timm:"), input_size, on_stage=say)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    failed = result.failure()
    if failed:
        raise UserError(f"{network}: {failed[0]}: {failed[1]}")
    if not as_json:
        click.echo(f"{network}: every stage of {len(STAGES)} passed" if all(r.ok for r in result.stages.values())
                   else f"{network}: every stage that ran passed")
