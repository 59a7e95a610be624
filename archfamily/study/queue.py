"""A plan expanded into its queue: one job per archfamily run, each a list of CLI commands run in the study folder.

Every job is what a user could type: `archfamily derive`, `scale`, `train`, `measure` and `bench` commands
with paths relative to the study folder, so the folder can move and its commands still read true. A job is
finished when the file its last command writes is there (`done_file`); a job whose run folder exists
without it is partial, and its command (always with `--resume`) continues it.
"""
from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from archfamily.checks import Fields, read_json
from archfamily.errors import SettingError
from archfamily.files import atomic_write_json
from archfamily.limits import MAX_SECONDS
from archfamily.pruning.derive import pruned_at_stem
from archfamily.training.metrics_file import METRICS_FILE
from archfamily.training.recipes import finetune_recipe_for, training_recipe
from archfamily.scaling.rules import base_rules
from archfamily.specs import spec_from_dict
from archfamily.study.plan import Arm, Plan, PruneRun

TRAIN_IMAGES = 50_000  # CIFAR-10's training split
TEST_IMAGES = 10_000
SUBMITTED_ON = ("slurm", "submitit-local")  # the executors whose jobs outlive the study process


@dataclass
class Job:
    """One run of the study: its commands (argv after `archfamily`), what it needs first, what it costs."""

    id: str
    kind: str  # train, derive, measure, scale (a latency budget's member), bench
    commands: list[list[str]]
    done_file: str  # relative to the study folder
    deps: tuple[str, ...] = ()
    arm: Optional[str] = None
    budget: Optional[float] = None  # params, or ms for an arm with latency budgets
    seed: Optional[int] = None
    train_macs: float = 0.0  # multiply-accumulates of its training (forward + backward), for the estimate
    eval_macs: float = 0.0
    extra_seconds: float = 0.0  # what the MAC count does not cover (the bench's timing loops)
    priority: tuple[Any, ...] = field(default=(), compare=False)
    exclusive: bool = False  # runs with nothing else running: it measures latency

    @property
    def run_dir(self) -> Optional[str]:
        return f"runs/{self.id}" if self.kind in ("train", "derive") else None

    def command_lines(self) -> list[str]:
        return [shlex.join(["archfamily", *c]) for c in self.commands]


def _rel(path: Path, study_dir: Path) -> str:
    return os.path.relpath(path, study_dir.resolve())


def _data_args(plan: Plan, study_dir: Path, test_subset: Optional[int], train: bool) -> list[str]:
    """--data, --subset (training commands), --test-subset and --device, as the plan sets them."""
    args = ["--data", _rel(plan.data, study_dir)] if plan.data else []
    if train and plan.subset:
        args += ["--subset", str(plan.subset)]
    settings = plan.data_settings
    if train and settings.get("input_size"):
        args += ["--input-size", str(settings["input_size"])]
    if train and settings.get("data_path", "auto") != "auto":
        args += ["--data-path", settings["data_path"]]
    if settings.get("val_fraction"):
        args += ["--val-fraction", repr(settings["val_fraction"])]
    if test_subset:
        args += ["--test-subset", str(test_subset)]
    if plan.device != "auto":
        args += ["--device", plan.device]
    return args


def _precision_args(plan: Plan) -> list[str]:
    return ["--precision", plan.recipe.precision] if plan.recipe.precision else []


def _recipe_args(plan: Plan) -> list[str]:
    r = plan.recipe
    args = ["--recipe", r.name]
    for flag, value in (("--epochs", r.epochs), ("--batch-size", r.batch_size), ("--ema", r.ema)):
        if value is not None:
            args += [flag, str(value)]  # exactly as the plan has it
    return args + _precision_args(plan)


def _train_images(plan: Plan) -> int:
    return plan.subset or TRAIN_IMAGES


def _test_images(test_subset: Optional[int]) -> int:
    return test_subset or TEST_IMAGES


def _train_cost(plan: Plan, macs: float, family: str) -> tuple[float, float]:
    recipe = training_recipe(plan.recipe.name, family, plan.recipe.epochs, plan.recipe.batch_size, plan.recipe.ema)
    return 3.0 * macs * recipe.epochs * _train_images(plan), macs * _test_images(plan.test_subset) * (recipe.epochs + 2)


def _train_job(plan: Plan, study_dir: Path, job_id: str, spec_arg: str, seed: int, macs: float,
               deps: tuple[str, ...], pre: Optional[list[str]] = None, **row: Any) -> Job:
    train = ["train", "--spec", spec_arg, *_recipe_args(plan), *_data_args(plan, study_dir, plan.test_subset, True),
             "--seed", str(seed), "--out", f"runs/{job_id}", "--resume"]
    train_macs, eval_macs = _train_cost(plan, macs, plan.base_spec.family)
    return Job(job_id, "train", ([pre] if pre else []) + [train], f"runs/{job_id}/{METRICS_FILE}", deps,
               train_macs=train_macs, eval_macs=eval_macs, seed=seed, **row)


def _save_at(plan: Plan, run: PruneRun) -> list[int]:
    """The budgets the pruning run saves its network at: its pruned arms' (checked by the plan), and the plan's
    that it passes on its way down (so every budget has a pruned-and-tuned network to compare with)."""
    pruned = {b for arm in plan.arms.values() if arm.prune == run.name
              and arm.kind in ("pruned-scratch", "pruned-tuned") for b in arm.budgets}
    floor, base_params = plan.floors[run.name], plan.base_spec.num_params()
    return sorted(pruned | {b for b in plan.budgets if floor <= b < base_params})


def _derive_job(plan: Plan, study_dir: Path, run: PruneRun, checkpoint: str, deps: tuple[str, ...]) -> Job:
    args = ["derive", "--preset", "paper", "--base", plan.base, "--checkpoint", checkpoint, "--method", run.method]
    if run.cost:
        args += ["--cost", run.cost]
    if run.on:
        args += ["--on", run.on]
    if run.runtime:
        args += ["--runtime", run.runtime]
    args += ["--prune-every", str(run.prune_every), "-k", str(run.channels_per_step),
             "--eval-every", str(run.eval_every), *_data_args(plan, study_dir, run.test_subset or plan.test_subset, True),
             *_precision_args(plan)]
    if run.until_params:
        args += ["--until-params", str(run.until_params)]
    save_at = _save_at(plan, run)
    if save_at:
        args += ["--save-at", ",".join(plan.budget_labels[b] for b in save_at)]
    if run.seed:
        args += ["--seed", str(run.seed)]
    for field_name, value in run.finetune_set:
        args += ["--finetune-set", f"{field_name}={value}"]
    args += ["--out", f"runs/prune-{run.name}", "--resume"]
    base = plan.base_spec
    prunes = sum(base.prunable_widths()) / run.channels_per_step  # to about 10% of the base's params
    mean_macs = 0.5 * base.num_macs()
    images = prunes * run.prune_every * finetune_recipe_for(base.family).batch_size
    evals = prunes / run.eval_every + 2
    return Job(f"prune-{run.name}", "derive", [args], f"runs/prune-{run.name}/family.json", deps,
               train_macs=3.0 * mean_macs * images, eval_macs=mean_macs * _test_images(run.test_subset) * evals,
               seed=run.seed)


def _scale_args(arm: Arm, family: str, budget: list[str], spec_file: str) -> list[str]:
    args = ["scale", "--family", family, *budget, "--rule", arm.kind]
    if arm.at is not None:
        args += ["--at", f"{arm.at:g}"]
    if arm.round_to != 1:
        args += ["--round-to", str(arm.round_to)]
    return args + ["--out", spec_file]


def _latency_arm_jobs(plan: Plan, study_dir: Path, arm: Arm, derive_ids: dict[str, str]) -> list[Job]:
    """An arm with latency budgets: per budget, one `scale --latency-ms` job that measures on a quiet machine
    (exclusive) and writes the member's spec once, then a training per seed of that spec. Its spec file is the
    job's output, so a resumed study trains the member it chose, never a newly measured one."""
    assert plan.latency is not None  # the plan refuses latency budgets without [latency]
    jobs = []
    family = plan.base if arm.kind in base_rules() else f"runs/prune-{arm.prune}"
    deps = () if arm.kind in base_rules() else (derive_ids[arm.prune],)
    for ms in arm.latency_ms:
        label = arm.budget_label(ms, plan.budget_labels)
        spec_file = f"specs/{arm.name}-{label}.json"
        budget = ["--latency-ms", f"{ms:g}", "--on", plan.latency.on, "--batch", str(plan.latency.batch)]
        if plan.latency.runtime != "eager":  # eager's jobs keep the arguments studies from before runtimes have
            budget += ["--runtime", plan.latency.runtime]
        scale_id = f"spec-{arm.name}-{label}"
        jobs.append(Job(scale_id, "scale", [_scale_args(arm, family, budget, spec_file)], spec_file, deps,
                        extra_seconds=60.0, exclusive=True, priority=(False, -math.inf)))
        chosen = study_dir / spec_file
        macs = float(spec_from_dict(read_json(chosen), str(chosen)).num_macs()) if chosen.is_file() \
            else 0.5 * plan.base_spec.num_macs()  # an estimate until the member is chosen
        for seed in arm.seeds:
            later_seed = seed != arm.seeds[0]
            row = {"arm": arm.name, "budget": ms, "priority": (later_seed, ms if later_seed else -ms)}
            jobs.append(_train_job(plan, study_dir, f"{arm.name}-{label}-s{seed}", spec_file, seed, macs, (scale_id,),
                                   **row))
    return jobs


def _arm_jobs(plan: Plan, study_dir: Path, arm: Arm, derive_ids: dict[str, str]) -> list[Job]:
    if arm.latency_ms:
        return _latency_arm_jobs(plan, study_dir, arm, derive_ids)
    jobs = []
    base = plan.base_spec
    for budget in arm.budgets:
        label = plan.budget_labels[budget]
        # the architecture's MACs: exact where the base alone gives it (the member the plan solved), else the
        # base's MACs per param
        if arm.kind in base_rules():
            macs = float(plan.members[(arm.name, budget)].num_macs())
        else:
            macs = base.num_macs() * budget / base.num_params()
        prune_dir = f"runs/prune-{arm.prune}"
        pruned_file = f"{prune_dir}/{pruned_at_stem(budget)}.safetensors"
        for seed in arm.seeds:
            job_id = f"{arm.name}-{label}-s{seed}"
            later_seed = seed != arm.seeds[0]  # first seeds largest first (lanes end together), then the
            row = {"arm": arm.name, "budget": budget,  # other seeds cheapest first: a spread at every budget soonest
                   "priority": (later_seed, budget if later_seed else -budget)}
            if arm.kind == "pruned-tuned":
                measure = ["measure", pruned_file, "--out", f"runs/{job_id}",
                           *_data_args(plan, study_dir, plan.test_subset, False)]
                jobs.append(Job(job_id, "measure", [measure], f"runs/{job_id}/{METRICS_FILE}", (derive_ids[arm.prune],),
                                eval_macs=macs * _test_images(plan.test_subset), seed=seed, **row))
                continue
            if arm.kind == "pruned-scratch":
                jobs.append(_train_job(plan, study_dir, job_id, pruned_file, seed, macs, (derive_ids[arm.prune],), **row))
                continue
            spec_file = f"specs/{arm.name}-{label}.json"
            family = plan.base if arm.kind in base_rules() else prune_dir
            scale = _scale_args(arm, family, ["--params", label], spec_file)
            deps = () if arm.kind in base_rules() else (derive_ids[arm.prune],)
            jobs.append(_train_job(plan, study_dir, job_id, spec_file, seed, macs, deps, pre=scale, **row))
    return jobs


def bench_job(plan: Plan, jobs: list[Job], finished: set[str]) -> Optional[Job]:
    """The bench of every finished network, grouped by arm (seeds of one architecture are one row); None when
    the plan has no bench or no pruning run to bench against."""
    if plan.bench is None or not plan.prune_runs:
        return None
    b = plan.bench
    trained, count = [], 0
    for job in jobs:  # each finished run by name: a glob would also take a seed still running
        if job.arm is not None and job.id in finished:
            trained += ["--trained", f"{job.arm}=runs/{job.id}"]
            count += 1
    first = next(iter(plan.prune_runs))
    args = ["bench", "--family", f"runs/prune-{first}", "--params", ",".join(plan.budget_labels[x] for x in plan.budgets),
            "--threads", ",".join(map(str, b.threads)), "--batch", ",".join(map(str, b.batches)),
            "--formats", b.formats, "--rounds", str(b.rounds), "--runtime", ",".join(b.runtimes), *trained,
            "--out", "bench"]
    settings = len(b.threads) * len(b.batches) * len(b.runtimes) * (2 if b.formats == "both" else 1)
    return Job("bench", "bench", [args], "bench/results.json", (),  # run once every other job has ended, here:
               extra_seconds=20.0 + 2.0 * (count + 6 * len(plan.budgets)) * settings * b.rounds,  # it times
               exclusive=True)  # the networks on the machine that runs the study, never on a cluster node



def expand(plan: Plan, study_dir: Path) -> list[Job]:
    """Every run of the plan in the order they start when free: the latency budgets' member choices that need no
    pruning run (each alone, minutes), the base's training (if the study trains it), the pruning runs, then each
    arm's first seed from the largest budget down, then the other seeds from the smallest budget up. The bench
    comes last."""
    head: list[Job] = []
    if plan.checkpoint is not None:
        checkpoint, base_deps = _rel(plan.checkpoint, study_dir), ()
    else:
        base = _train_job(plan, study_dir, "base", plan.base, 0, float(plan.base_spec.num_macs()), ())
        base.priority = (False, -math.inf)
        head.append(base)
        checkpoint, base_deps = "runs/base/model.safetensors", ("base",)
    derives = [_derive_job(plan, study_dir, run, checkpoint, base_deps) for run in plan.prune_runs.values()]
    for job in derives:
        job.priority = (False, -math.inf)
    derive_ids = {run.name: job.id for run, job in zip(plan.prune_runs.values(), derives)}
    arms = [job for arm in plan.arms.values() for job in _arm_jobs(plan, study_dir, arm, derive_ids)]
    first = [j for j in arms if j.kind == "scale" and not j.deps]
    rest = sorted((j for j in arms if j not in first), key=lambda j: j.priority)  # stable: the plan's order within
    return first + head + derives + rest


def with_needs(jobs: list[Job], by_id: dict[str, Job]) -> list[Job]:
    """`jobs` after everything they need, transitively (the base's training, then the pruning run)."""
    ordered: list[Job] = []
    for job in jobs:
        for need in with_needs([by_id[d] for d in job.deps], by_id) + [job]:
            if need not in ordered:
                ordered.append(need)
    return ordered


def _record_file(study_dir: Path, job: Job) -> Path:
    return study_dir / "jobs" / f"{job.id}.json"


def read_record(study_dir: Path, job: Job) -> Optional[dict[str, Any]]:
    """What the study recorded of a job it started: its commands, the seconds it has run so far, and where it
    was submitted (`{"executor", "job_id"}`, for a job a cluster runs; None for a child process)."""
    path = _record_file(study_dir, job)
    return read_record_file(path) if path.is_file() else None


def read_record_file(path: Path) -> dict[str, Any]:
    """A job record, checked: a list of commands (lists of strings), the seconds run (finite, in range) and, for a
    submitted job, its executor and job id."""
    record = Fields(read_json(path), str(path), ("commands", "seconds"))
    commands = record.list("commands", nonempty=True)
    if not all(isinstance(c, list) and c and all(isinstance(a, str) for a in c) for c in commands):
        record.fail("commands", "must be a list of commands (lists of strings)")
    submission = None
    if "submission" in record.data:
        sub = record.obj("submission", ("executor", "job_id"))
        submission = {"executor": sub.str("executor", SUBMITTED_ON), "job_id": sub.str("job_id")}
        if not submission["job_id"].isascii() or not submission["job_id"].replace("_", "").isdigit():
            sub.fail("job_id", "must be a job id (digits)")
    return {"commands": commands, "seconds": record.number("seconds", 0, MAX_SECONDS), "submission": submission}


def check_records(study_dir: Path) -> None:
    """Every record in `jobs/`, read before the study uses, deletes or re-runs anything."""
    for path in sorted((study_dir / "jobs").glob("*.json")):
        read_record_file(path)


def write_record(study_dir: Path, job: Job, seconds: float, submission: Optional[dict[str, str]] = None) -> None:
    doc: dict[str, Any] = {"commands": job.commands, "seconds": seconds}
    if submission is not None:
        doc["submission"] = submission
    atomic_write_json(_record_file(study_dir, job), doc)


def _run_json_command(study_dir: Path, job: Job) -> Optional[list[str]]:
    """The command a job's run folder was started with (run.json's provenance), `--resume` aside; None if none."""
    if job.run_dir is None:
        return None
    run_file = study_dir / job.run_dir / "run.json"
    if not run_file.is_file():
        return None
    prov = Fields(read_json(run_file), str(run_file), ("provenance",)).obj("provenance", ("command",))
    command = prov.list("command")
    if not all(isinstance(c, str) for c in command):
        prov.fail("command", "must be a list of strings")
    return [c for c in command[1:] if c != "--resume"]


def check_started_runs(study_dir: Path, jobs: list[Job]) -> None:
    """Refuse a study folder whose runs were started by other commands than the plan's (a changed plan): every
    command of a job the study recorded, else the command its run folder records."""
    for job in jobs:
        if job.kind == "bench":
            continue  # its results are simply made again
        record = read_record(study_dir, job)
        if record is not None:
            other = record["commands"][-1] if record["commands"] != job.commands else None
        else:
            recorded = _run_json_command(study_dir, job)
            other = recorded if recorded not in (None, [c for c in job.commands[-1] if c != "--resume"]) else None
        if other is not None:
            raise SettingError("{run} was started by another command than this plan's ({command!r:.200}); move it "
                               "away or choose another {out}", run=study_dir / "runs" / job.id,
                               command=shlex.join(["archfamily", *other]))
