"""`archfamily bench`: speed of reduced, pruned and family networks at matched budgets.

Figures taken on a busy machine are marked in the report and named on stderr (`bench.measure`); the bench
caches no figure, so a rerun on an idle machine measures everything afresh."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from archfamily.errors import UserError
from archfamily.limits import MAX_BATCH, MAX_ROUNDS, cores, parse_wholes
from archfamily.bench.runtimes import RUNTIMES, cpu_only, check_runtimes
from archfamily.limits import parse_counts
from archfamily.cli.options import Count


def _devices(text: str) -> tuple[str, ...]:
    """`auto` is the CPU and, when present, the GPU; named devices are checked as every command checks them."""
    from archfamily.training.distributed import resolve_device

    if text == "auto":
        return tuple(sorted({"cpu", resolve_device("auto").type}))
    return tuple(resolve_device(d.strip()).type for d in text.split(","))


@click.command()
@click.option("--family", "family_path", required=True, help="A derive run folder or its family.json.")
@click.option("--params", help="Parameter budgets, e.g. 0.25M,0.5M,1M.")
@click.option("--macs", help="Or MAC budgets, e.g. 25M,50M.")
@click.option("--device", "device", default="auto", show_default=True, help="cpu, cuda, cpu,cuda or auto.")
@click.option("--threads", help="CPU thread counts, e.g. 1,2, each from 1 to the machine's cores [1 and all cores].")
@click.option("--batch", "batches",
              help=f"Batch sizes, from 1 to {MAX_BATCH}: latency at 1, throughput at larger ones [1,64,256].")
@click.option("--formats", type=click.Choice(["both", "nchw", "channels_last"]),
              help="Memory formats to time [both; channels_last with --quick].")
@click.option("--rounds", type=Count(1, MAX_ROUNDS), help="Interleaved rounds per setting [3].")
@click.option("--compile", "compile_model", is_flag=True,
              help="Time torch.compile'd networks instead of eager ones (slow to start).")
@click.option("--trained", "trained", multiple=True, metavar="ARM=GLOB",
              help="Time trained networks instead: train run folders or model files GLOB matches, as arm ARM "
                   "(seeds of one architecture become one row). Repeat for each arm.")
@click.option("--runtime", "runtimes", default="eager", show_default=True,
              help=f"Runtimes to time each network in: {', '.join(RUNTIMES)}, or several, comma-separated "
                   f"({', '.join(cpu_only())} on the CPU only).")
@click.option("--quick", is_flag=True, help="A fast, coarse run: batches 1 and 64, channels_last, one round.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for results.md/json and plots.")
def bench(family_path: str, params: Optional[str], macs: Optional[str], device: str, threads: Optional[str],
          batches: Optional[str], formats: Optional[str], rounds: Optional[int], compile_model: bool,
          trained: tuple[str, ...], runtimes: str, quick: bool, out: str) -> None:
    """Time reduced, pruned (masked and compressed) and family networks at matched budgets."""
    from archfamily.pruning.family_file import load_family

    if bool(params) == bool(macs):
        raise UserError("give exactly one list of budgets: --params or --macs")
    metric = "params" if params else "macs"
    budgets = tuple(parse_counts(params or macs, f"--{metric}"))
    family = load_family(family_path)  # before the timing machinery is imported: a bad file is refused at once

    from archfamily.bench.measure import QUICK, BenchConfig, run
    from archfamily.bench.report import write_report
    from archfamily.bench.select import trained_groups
    from archfamily.zoo.manifest import read_manifest, zoo_dir

    settings = dict(QUICK) if quick else {}
    settings["devices"] = _devices(device)
    every = cores()
    settings["threads"] = parse_wholes(threads, 1, every, "--threads") if threads is not None \
        else ((every,) if quick else tuple(sorted({1, every})))
    if batches is not None:
        settings["batches"] = parse_wholes(batches, 1, MAX_BATCH, "--batch")
    if formats:
        settings["formats"] = ("nchw", "channels_last") if formats == "both" else (formats,)
    if rounds:
        settings["rounds"] = rounds
    settings["runtimes"] = tuple(dict.fromkeys(r.strip() for r in runtimes.split(",") if r.strip()))
    check_runtimes(settings["runtimes"])
    pairs = []
    for item in trained:
        arm, sep, pattern = item.partition("=")
        if not sep or not arm.strip() or not pattern.strip():
            raise UserError(f"--trained takes ARM=GLOB, e.g. copycat=runs/study/train/copycat-*, got {item!r}")
        pairs.append((arm.strip(), pattern.strip()))
    groups = trained_groups(pairs) if pairs else None
    try:
        zoo = zoo_dir()
    except UserError:  # no zoo installed: no zoo networks to compare with
        zoo_entries = []
    else:
        zoo_entries = read_manifest(zoo)  # a damaged manifest is one line, never an empty zoo
    report = run(family, BenchConfig(budgets=budgets, metric=metric, compile=compile_model, **settings), zoo_entries,
                 groups)
    written = write_report(report, Path(out))
    click.echo(f"wrote {', '.join(str(p) for p in written)}")
    busy = sum(r["busy"] for r in report["rows"])
    if busy or report["peaks_busy"]:
        click.echo(f"archfamily: {busy} of {len(report['rows'])} figures and {len(report['peaks_busy'])} matmul peaks "
                   "were taken while this process did not get its cores: marked busy in results.md and left out of "
                   "the plots; run the bench again on an idle machine", err=True)
