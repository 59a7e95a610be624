"""`archfamily study PLAN`: run a study plan (TOML) to the end, resumably, and write its results."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import click

from archfamily.errors import UserError
from archfamily.limits import MAX_JOBS, cores
from cli.options import Count


@click.command()
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Study folder [beside the plan, named after it].")
@click.option("-j", "--jobs", type=Count(1, MAX_JOBS), default=1, show_default=True,
              help="Runs at once (trainings are independent; each gets cores/jobs threads).")
@click.option("--threads", type=Count(1, cores()), help="CPU threads per run, at most the cores [cores / jobs].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where every run trains; part of each run's command.")
@click.option("--arms", "arms_list", metavar="NAME[,NAME...]",
              help="Run only these arms (and the runs they need) now; the bench waits for the whole plan.")
@click.option("--dry-run", is_flag=True, help="Print the queue, each run's state and estimated time; run nothing.")
def study(plan_file: str, out: Optional[str], jobs: int, threads: Optional[int], device: str,
          arms_list: Optional[str], dry_run: bool) -> None:
    """Run the plan's pruning runs, arms and bench; skip what is finished, resume what is partial.

    Writes results.md and results.json (every arm x budget, mean ± sd over seeds, the commands) in the
    study folder after each finished run, and the bench's plots under bench/.
    """
    from archfamily.study import default_folder, prepare, queue_lines, run_study, select_arms
    from archfamily.study.plan import load_plan

    plan = replace(load_plan(plan_file), device=device)
    study_dir = Path(out) if out else default_folder(plan)
    per_run = threads or max(1, cores() // jobs)
    arms = [a.strip() for a in arms_list.split(",") if a.strip()] if arms_list is not None else None
    if arms is not None and not arms:
        raise UserError(f"--arms takes arm names, e.g. --arms copycat,reduced-width, got {arms_list!r:.40}")
    try:
        if dry_run:
            queue, estimates, source = prepare(plan, study_dir, per_run)
            queue = select_arms(plan, queue, arms) if arms else queue
            for line in queue_lines(queue, estimates, study_dir, jobs, bench=not arms):
                click.echo(line)
            click.echo(f"(estimates from {source}, {per_run} thread{'s' if per_run > 1 else ''} per run)")
            return
        doc, failed = run_study(plan, study_dir, jobs, per_run, lambda text: click.echo(text, err=True), arms)
    except KeyboardInterrupt:
        click.echo("\narchfamily: interrupted; run the same command again to continue the study", err=True)
        sys.exit(130)
    done = sum(bool(r["test_errors"]) for r in doc["rows"])
    click.echo(f"wrote {study_dir}/results.md and results.json ({done} of {len(doc['rows'])} rows measured)")
    if failed:
        for job_id, why in failed.items():
            click.echo(f"archfamily: run {job_id} {why}", err=True)
        sys.exit(1)
