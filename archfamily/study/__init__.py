"""`archfamily study PLAN`: the paper's comparison as one resumable command.

- `plan.py` reads and checks the TOML plan;
- `queue.py` expands it into archfamily commands (one job per run, paths relative to the study folder);
- `runner.py` runs them, up to `--jobs` at once, under one progress bar, on an executor from `executors.py`
  (child processes here, or SLURM jobs through submitit);
- `results.py` writes `results.json` and `results.md` after every finished run.

The study folder (default: the plan's own folder for `NAME/plan.toml`, else beside the plan, named after it) holds `runs/`, `specs/`, `logs/`, `bench/` and
the results. Everything in it can be deleted and made again by the same command.

Floor 9: may import every floor below it. It starts the CLI only as a process (`python -m archfamily`), never
by import.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence


from archfamily.errors import SettingError, UserError
from archfamily.progress import progress_bar
from archfamily.study.executors import ClusterOptions, Executor, sbatch_flags
from archfamily.study.plan import Plan
from archfamily.study.queue import Job, bench_job, check_records, check_started_runs, expand, with_needs
from archfamily.study.results import collect, write_results
from archfamily.study.runner import (Runner, bench_is_current, check_jobs, estimate_seconds, is_finished, is_partial,
                                     job_seconds, probe_rate, record_bench_inputs, training_rate)


PLAN_FILE = "plan.toml"  # a plan of this name lives in its study's folder: studies/NAME/plan.toml -> studies/NAME/


def default_folder(plan: Plan) -> Path:
    """The folder a plan named plan.toml is in (studies/cifar10-cpu/plan.toml -> studies/cifar10-cpu/), and
    beside any other plan, named after it (studies/cifar10-cpu.toml -> studies/cifar10-cpu/)."""
    if plan.path.name == PLAN_FILE:
        return plan.path.parent
    folder = plan.path.parent / plan.path.stem
    return folder if folder != plan.path else plan.path.parent / f"{plan.path.name}-study"


STUDY_FOLDERS = ("runs", "specs", "logs", "bench", "jobs", "submitit")  # submitit: the submitted jobs' own files
# all a study writes, its notes and its plan
STUDY_ENTRIES = {*STUDY_FOLDERS, "results.json", "results.md", "README.md", PLAN_FILE}


def check_study_folder(study_dir: Path) -> None:
    """Refuse, before anything is read, run or written, a --out that is not a study folder (a file; a folder
    holding anything a study does not write; one whose jobs/ or runs/ is a file) or that cannot be written."""
    if study_dir.exists() and not study_dir.is_dir():
        raise SettingError("{out} {path} is a file, not a study folder", path=study_dir)
    if study_dir.is_dir():
        try:
            entries = sorted(p.name for p in study_dir.iterdir())
        except OSError as exc:
            raise SettingError("{out} {path}: cannot read it ({why})", path=study_dir,
                               why=exc.strerror or exc) from None
        other = next((name for name in entries if name not in STUDY_ENTRIES
                      and not (name.startswith(".") and name.endswith(".tmp"))), None)  # a killed write's temporary
        if other is not None:
            raise SettingError("{out} {path} holds {other!r}, which no study writes: it is not a study folder; "
                               "choose an empty or new folder", path=study_dir, other=other)
        wrong = next((name for name in STUDY_FOLDERS if (study_dir / name).exists()
                      and not (study_dir / name).is_dir()), None)
        if wrong is not None:
            raise UserError(f"{study_dir / wrong} is a file where the study keeps a folder; move it away")
    existing = next(p for p in (study_dir, *study_dir.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise SettingError("{out} {path}: cannot write into {existing}", path=study_dir, existing=existing)


def prepare(plan: Plan, study_dir: Path, threads: int) -> tuple[list[Job], dict[str, float], str]:
    """The queue, each job's estimated seconds, and where the estimate's training rate comes from. Everything
    the study folder holds (records, results, the bench's) is checked here, before anything runs or changes."""
    check_study_folder(study_dir)
    jobs = expand(plan, study_dir)
    check_jobs(jobs)
    check_records(study_dir)
    check_started_runs(study_dir, jobs)
    collect(plan, study_dir, jobs)
    pending = [j for j in jobs if not is_finished(study_dir, j)]
    if not pending:  # no rate to estimate with, and nothing to estimate: a finished run shows what it took
        return jobs, {}, "nothing left to run"
    rate, source = training_rate(study_dir, jobs, lambda: probe_rate(plan.base_spec, threads))
    return jobs, {j.id: estimate_seconds(j, rate) for j in pending}, source


def select_arms(plan: Plan, jobs: list[Job], arms: Sequence[str]) -> list[Job]:
    """The runs of `arms` and every run they need (member choices, pruning runs), in queue order: `--arms`
    runs the part of a plan a question needs first, and a later run of the whole plan does the rest."""
    unknown = next((a for a in arms if a not in plan.arms), None)
    if unknown is not None:
        raise UserError(f"the plan has no arm {unknown!r}; its arms: {', '.join(plan.arms)}")
    wanted = {j.id for j in with_needs([j for j in jobs if j.arm in arms], {j.id: j for j in jobs})}
    return [j for j in jobs if j.id in wanted]


def queue_lines(jobs: list[Job], estimates: dict[str, float], study_dir: Path, parallel: int,
                bench: bool = True, cluster: Optional[ClusterOptions] = None) -> list[str]:
    """The --dry-run listing: each run's state, estimated time and commands, and with `cluster` the `#SBATCH`
    flags each job that a cluster would run gets."""
    lines = []
    left = 0.0
    for job in jobs:
        state = "finished" if is_finished(study_dir, job) else "partial" if is_partial(study_dir, job) else "to run"
        if state == "finished":  # what it took, not an estimate (with nothing left to run there is no rate)
            took = job_seconds(study_dir, job)
            lines.append(f"{job.id:<32} {state:<9} " + (f"{took / 60:7.1f} min taken" if took > 0
                                                          else "(time not recorded)"))
        else:
            left += estimates[job.id]
            lines.append(f"{job.id:<32} {state:<9} ~{estimates[job.id] / 60:6.1f} min")
        lines += [f"    {c}" for c in job.command_lines()]
        if cluster is not None and state != "finished":
            lines.append("    here, alone (it times networks)" if job.exclusive
                         else f"    {sbatch_flags(cluster, job, study_dir / 'submitit')}")
    lines.append(f"{sum(not is_finished(study_dir, j) for j in jobs)} of {len(jobs)} runs left, about "
                 f"{left / 3600:.1f} h of one lane ({left / 3600 / parallel:.1f} h with --jobs {parallel})"
                 + (", then the bench" if bench else "; the bench waits for the whole plan"))
    return lines


def run_study(plan: Plan, executor: Executor, parallel: int, echo: Callable[[str], None],
              arms: Optional[Sequence[str]] = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Run what is left of the plan (or of `arms` alone) on `executor`, up to `parallel` jobs at once, then the
    bench (only for the whole plan: it times every network in one run); returns the results document and the
    failed runs."""
    study_dir = executor.study_dir
    every, estimates, source = prepare(plan, study_dir, executor.threads)
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingError("{out} {path}: cannot make it ({why})", path=study_dir, why=exc.strerror or exc) from None
    jobs = select_arms(plan, every, arms) if arms else every
    todo = [j for j in jobs if not is_finished(study_dir, j)]
    echo(f"study {plan.name}: {len(jobs) - len(todo)} of {len(jobs)} runs finished"
         + (f" (arms {', '.join(arms)} only; the bench waits for the whole plan)" if arms else "")
         + f"; time estimates from {source}")
    runner = Runner(study_dir, parallel, executor)
    on_finished: Callable[[Job], None] = lambda job: write_results(plan, study_dir, every)
    total = sum(estimates[j.id] for j in todo)
    with progress_bar(total=max(total, 1.0), desc="study", unit="s",
                      bar_format="{l_bar}{bar}| [{elapsed}<{remaining}{postfix}]") as bar:
        runner.run(jobs, estimates, bar, on_finished)
        finished = {j.id for j in jobs if is_finished(study_dir, j)}
        bench = None if arms else bench_job(plan, jobs, finished)
        if bench is not None and not runner.failed and not bench_is_current(study_dir, jobs, bench):
            (study_dir / bench.done_file).unlink(missing_ok=True)
            estimates[bench.id] = bench.extra_seconds
            bar.total += bench.extra_seconds
            runner.run([bench], estimates, bar, on_finished)
            if is_finished(study_dir, bench):
                record_bench_inputs(study_dir, jobs)
    return write_results(plan, study_dir, every), runner.failed
