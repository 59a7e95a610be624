"""`archfamily bench`: speed of reduced, pruned and family networks at matched budgets."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from archfamily.errors import UserError
from archfamily.units import parse_count


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{flag} takes comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{flag} takes positive whole numbers, got {text!r}")
    return values


def _devices(text: str) -> tuple[str, ...]:
    import torch

    if text == "auto":
        return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
    devices = tuple(d.strip() for d in text.split(","))
    unknown = [d for d in devices if d not in ("cpu", "cuda")]
    if unknown:
        raise UserError(f"unknown device {unknown[0]!r}: use cpu, cuda or auto")
    if "cuda" in devices and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but this machine has no CUDA GPU")
    return devices


@click.command()
@click.option("--family", "family_path", required=True, help="A derive run folder or its family.json.")
@click.option("--params", help="Parameter budgets, e.g. 0.25M,0.5M,1M.")
@click.option("--macs", help="Or MAC budgets, e.g. 25M,50M.")
@click.option("--device", "device", default="auto", show_default=True, help="cpu, cuda, cpu,cuda or auto.")
@click.option("--threads", help="CPU thread counts, e.g. 1,2 [1 and all cores].")
@click.option("--batch", "batches", help="Batch sizes: latency at 1, throughput at larger ones [1,64,256].")
@click.option("--formats", type=click.Choice(["both", "nchw", "channels_last"]),
              help="Memory formats to time [both; channels_last with --quick].")
@click.option("--rounds", type=int, help="Interleaved rounds per setting [3].")
@click.option("--compile", "compile_model", is_flag=True, help="Also torch.compile every network (slow to start).")
@click.option("--quick", is_flag=True, help="A fast, coarse run: batches 1 and 64, channels_last, one round.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for results.md/json and plots.")
def bench(family_path: str, params: Optional[str], macs: Optional[str], device: str, threads: Optional[str],
          batches: Optional[str], formats: Optional[str], rounds: Optional[int], compile_model: bool, quick: bool, out: str) -> None:
    """Time reduced, pruned (masked and compressed) and family networks at matched budgets."""
    import os

    from archfamily.bench import QUICK, BenchConfig, run, write_report
    from archfamily.family import load_family
    from archfamily.zoo_manifest import read_manifest

    if bool(params) == bool(macs):
        raise UserError("give exactly one list of budgets: --params or --macs")
    metric = "params" if params else "macs"
    budgets = tuple(parse_count(b, f"--{metric}") for b in (params or macs).split(",") if b.strip())
    settings = dict(QUICK) if quick else {}
    settings["devices"] = _devices(device)
    cores = os.cpu_count() or 1
    settings["threads"] = _ints(threads, "--threads") if threads else ((cores,) if quick else tuple(sorted({1, cores})))
    if batches:
        settings["batches"] = _ints(batches, "--batch")
    if formats:
        settings["formats"] = ("nchw", "channels_last") if formats == "both" else (formats,)
    if rounds:
        settings["rounds"] = rounds
    family = load_family(family_path)
    try:
        zoo_entries = read_manifest()
    except UserError:
        zoo_entries = []
    report = run(family, BenchConfig(budgets=budgets, metric=metric, compile=compile_model, **settings), zoo_entries)
    written = write_report(report, Path(out))
    click.echo(f"wrote {', '.join(str(p) for p in written)}")
