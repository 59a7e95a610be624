"""`archfamily study PLAN`: run a study plan (TOML) to the end, resumably, and write its results;
`archfamily study compare NEW OLD`: two finished studies of one plan side by side."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import click

from archfamily.errors import UserError
from archfamily.limits import MAX_JOBS, cores
from archfamily.cli.options import Count, parse_settings

EXECUTORS = ("local", "slurm", "submitit-local")  # archfamily.study.executors.EXECUTORS (imported late: fast --help)


class _StudyGroup(click.Group):
    """`study PLAN [OPTIONS]` runs a plan (the `run` command, named or not); `study compare NEW OLD` compares."""

    class _Commands(dict):  # type: ignore[type-arg]
        def get(self, name, default=None):  # type: ignore[no-untyped-def,override]
            # anything but a command's name is the start of `run`'s arguments (cli.main._flags walks these too)
            return super().get(name, self["run"] if "run" in self else default)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.commands = self._Commands(self.commands)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_StudyGroup)
def study() -> None:
    """Run a study plan (archfamily study PLAN [OPTIONS], the run command), or compare two finished studies.

    \b
    archfamily study studies/smoke/plan.toml          run (or resume) a plan
    archfamily study run --help                       the options of a run
    archfamily study compare NEW OLD                  two finished studies of one plan, side by side
    """


@study.command("run")
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Study folder [beside the plan, named after it].")
@click.option("-j", "--jobs", type=Count(1, MAX_JOBS), default=1, show_default=True,
              help="Runs at once (trainings are independent; each gets cores/jobs threads); on a cluster, the "
                   "jobs in flight.")
@click.option("--threads", type=Count(1, cores()), help="CPU threads per run, at most this machine's cores [cores / "
                                                        "jobs; on a cluster, --cpus-per-task].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where every run trains; part of each run's command.")
@click.option("--arms", "arms_list", metavar="NAME[,NAME...]",
              help="Run only these arms (and the runs they need) now; the bench waits for the whole plan.")
@click.option("--dry-run", is_flag=True, help="Print the queue, each run's state and estimated time (and on a "
                                              "cluster its #SBATCH lines); run nothing.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local: child processes here; slurm: one sbatch job per run through submitit; submitit-local: "
                   "submitit's local executor (the slurm path, on this machine).")
@click.option("--partition", help="SLURM partition [the cluster's default].")
@click.option("--time", "time_min", type=click.IntRange(1, 525_600), default=240, show_default=True,
              help="Time limit per job, minutes; a job that hits it is submitted again by the next study run and "
                   "resumes.")
@click.option("--cpus-per-task", type=click.IntRange(1, 1024), default=4, show_default=True,
              help="CPUs per job on a cluster (its runs' threads).")
@click.option("--gpus-per-node", type=click.IntRange(0, 64), default=0, show_default=True,
              help="GPUs per job; more than 1 runs each training and pruning run under torchrun, one process each.")
@click.option("--mem-gb", type=click.FloatRange(0.1, 1e5), help="Memory per job, GB [the cluster's default].")
@click.option("--account", help="SLURM account to charge.")
@click.option("--qos", help="SLURM quality of service.")
@click.option("--sbatch", "sbatch_items", multiple=True, metavar="KEY=VALUE",
              help="A further #SBATCH parameter, e.g. constraint=a100 (repeatable).")
def run(plan_file: str, out: Optional[str], jobs: int, threads: Optional[int], device: str,
          arms_list: Optional[str], dry_run: bool, executor: str, partition: Optional[str], time_min: int,
          cpus_per_task: int, gpus_per_node: int, mem_gb: Optional[float], account: Optional[str],
          qos: Optional[str], sbatch_items: tuple[str, ...]) -> None:
    """Run the plan's pruning runs, arms and bench; skip what is finished, resume what is partial.

    Writes results.md and results.json (every arm x budget, mean ± sd over seeds, the commands) in the
    study folder after each finished run, and the bench's plots under bench/.
    """
    from archfamily.study import default_folder, prepare, queue_lines, run_study, select_arms
    from archfamily.study.executors import ClusterOptions, Executor, require_submitit
    from archfamily.study.plan import load_plan

    cluster_set = [flag for flag, value in (("--partition", partition), ("--mem-gb", mem_gb), ("--account", account),
                                            ("--qos", qos), ("--sbatch", sbatch_items or None),
                                            ("--gpus-per-node", gpus_per_node or None)) if value is not None]
    if executor == "local" and cluster_set:
        raise UserError(f"{cluster_set[0]} is an option for a submitted job; add --executor slurm or submitit-local")
    options = ClusterOptions(partition, time_min, cpus_per_task, gpus_per_node, mem_gb, account, qos,
                             parse_settings(sbatch_items, "--sbatch"))
    plan = replace(load_plan(plan_file), device=device)
    study_dir = Path(out) if out else default_folder(plan)
    per_run = threads or (cpus_per_task if executor == "slurm" else max(1, cores() // jobs))
    arms = [a.strip() for a in arms_list.split(",") if a.strip()] if arms_list is not None else None
    if arms is not None and not arms:
        raise UserError(f"--arms takes arm names, e.g. --arms copycat,reduced-width, got {arms_list!r:.40}")
    try:
        if dry_run:
            if executor != "local":
                require_submitit(executor, commands=False)  # a plan's sbatch lines can be read before a cluster
            queue, estimates, source = prepare(plan, study_dir, per_run)
            queue = select_arms(plan, queue, arms) if arms else queue
            for line in queue_lines(queue, estimates, study_dir, jobs, bench=not arms,
                                    cluster=options if executor == "slurm" else None):
                click.echo(line)
            click.echo(f"(estimates from {source}, {per_run} thread{'s' if per_run > 1 else ''} per run)")
            return
        runs_on = Executor(executor, study_dir, per_run, options)
        doc, failed = run_study(plan, runs_on, jobs, lambda text: click.echo(text, err=True), arms)
    except KeyboardInterrupt:
        left = "; submitted jobs go on" if executor != "local" else ""
        click.echo(f"\narchfamily: interrupted{left}; run the same command again to continue the study", err=True)
        sys.exit(130)
    done = sum(bool(r["test_errors"]) for r in doc["rows"])
    click.echo(f"wrote {study_dir}/results.md and results.json ({done} of {len(doc['rows'])} rows measured)")
    if failed:
        for job_id, why in failed.items():
            click.echo(f"archfamily: run {job_id} {why}", err=True)
        sys.exit(1)


@study.command("compare")
@click.argument("new", type=click.Path(file_okay=False))
@click.argument("old", type=click.Path(file_okay=False))
def compare(new: str, old: str) -> None:
    """Two finished studies of one plan side by side, in Markdown: each row's test error beside OLD's, NEW's
    batch-1 latency, and each of the paper's findings as gaps between arms.

    A gap is resolved when it exceeds twice the larger of its rows' seed spreads and the study's pooled spread.
    """
    from archfamily.study.compare import compare as report

    click.echo(report(Path(new), Path(old)), nl=False)
