"""A study's results: every arm x budget with the mean and sd over seeds, the seeds' values, and the commands.

Written as `results.json` and `results.md` in the study folder after every finished run, so what is there is
always what has been measured so far; rows whose runs are not finished say how many seeds are missing. The
plots are the bench's (`bench/error_vs_params.png`, `bench/error_vs_latency.png`): error against parameters
and against latency measured on this machine.
"""
from __future__ import annotations

import platform
import shlex
from collections import Counter
import statistics
from pathlib import Path
from typing import Any, Optional

from archfamily.bench.rows import headline, runtime_of
from archfamily.checks import Fields, read_json
from archfamily.errors import UserError
from archfamily.files import atomic_write_json, atomic_write_text
from archfamily.specs import ArchSpec, base_spec
from archfamily.study.plan import Plan
from archfamily.study.queue import Job, with_needs
from archfamily.study.runner import job_seconds
from archfamily.training.metrics_file import read_metrics
from archfamily.limits import format_count


def _metrics(study_dir: Path, job: Job) -> Optional[dict[str, Any]]:
    path = study_dir / job.done_file
    if not path.is_file():
        return None
    m = read_metrics(path)
    planned = _planned_spec(study_dir, job)
    if planned is not None and m.spec != planned:
        raise UserError(f"{path}: spec is not the network its run trains or measures "
                        f"({shlex.join(job.commands[-1])[:80]})")
    return {"test_error": m.test_error, "params": m.params, "macs": m.macs, "test_images": m.test_images,
            "seconds": job_seconds(study_dir, job), "cpu": _recorded_cpu(path.parent)}


def _recorded_cpu(run_dir: Path) -> Optional[str]:
    """The CPU a run's run.json names (runs record it since 2026-12-05); None where it names none. A study's runs
    can span machines (sessions, cluster nodes), so each run says its own."""
    path = run_dir / "run.json"
    if not path.is_file():
        return None
    provenance = Fields(read_json(path), str(path), ("provenance",)).obj("provenance", ())
    return provenance.str("cpu") if "cpu" in provenance.data else None


def _planned_spec(study_dir: Path, job: Job) -> Optional[ArchSpec]:
    """The network a job's last command trains (`--spec`) or measures, when that can be read now: a base name, or
    a spec or model file in the study folder; None while it is not there yet."""
    from archfamily.training.scratch import read_spec_file  # torch: only for a study with finished runs

    command = job.commands[-1]
    arg = command[command.index("--spec") + 1] if "--spec" in command else command[1] if command[0] == "measure" \
        else None
    if arg is None:
        return None
    if (study_dir / arg).is_file():
        return read_spec_file(str(study_dir / arg))
    try:
        return base_spec(arg)
    except UserError:
        return None


def _latency(study_dir: Path) -> tuple[dict[str, float], str]:
    """Median latency (ms) per trained run folder at the bench's headline setting and smallest batch (eager
    PyTorch where it was timed, else the first runtime that was)."""
    path = study_dir / "bench" / "results.json"
    if not path.is_file():
        return {}, ""
    rows = Fields(read_json(path), str(path), ("rows",)).list("rows")
    for i, row in enumerate(rows):
        r = Fields(row, f"{path}: rows[{i}]", ("device", "threads", "format", "batch", "median_ms"))
        r.str("device"), r.int("threads", 1), r.str("format"), r.int("batch", 1), r.number("median_ms", 0)
        if not all(isinstance(src, str) for src in r.data.get("sources", [])):
            r.fail("sources", "must be a list of run folders")
    if not rows:
        return {}, ""
    dev, threads, fmt = headline(rows)
    picked = [r for r in rows if (r["device"], r["threads"], r["format"]) == (dev, threads, fmt)]
    runtime = "eager" if any(runtime_of(r) == "eager" for r in picked) else runtime_of(picked[0])
    picked = [r for r in picked if runtime_of(r) == runtime]
    batch = min(r["batch"] for r in picked)
    latency = {src: r["median_ms"] for r in picked if r["batch"] == batch for src in r.get("sources", [])}
    return latency, f"{dev}, {threads} thread{'s' if threads > 1 else ''}, batch {batch}, {fmt}, {runtime}"


def collect(plan: Plan, study_dir: Path, jobs: list[Job]) -> dict[str, Any]:
    """The results document: one row per arm and budget, in the plan's order."""
    latency, setting = _latency(study_dir)
    by_id = {j.id: j for j in jobs}
    # each finished network's figures read once (its metrics.json and run.json): the rows and the totals share them
    measured = {j.id: _metrics(study_dir, j) for j in jobs if j.arm is not None or j.kind == "train"}
    rows = []
    for arm in plan.arms.values():
        for budget in arm.all_budgets:
            arm_jobs = [j for j in jobs if j.arm == arm.name and j.budget == budget]
            runs = [(j, measured[j.id]) for j in arm_jobs]
            done = [(j, m) for j, m in runs if m is not None]
            errors = [m["test_error"] for _, m in done]
            commands = [line for j in with_needs(arm_jobs[:1], by_id) for line in j.command_lines()]
            ms = [latency[f"runs/{j.id}"] for j, _ in done if f"runs/{j.id}" in latency]
            rows.append({
                "arm": arm.name, "kind": arm.kind, "budget": budget, "budget_label": arm.budget_label(budget, plan.budget_labels),
                "params": done[0][1]["params"] if done else None, "macs": done[0][1]["macs"] if done else None,
                "test_errors": errors, "seeds": [j.seed for j, _ in done],
                "mean": round(statistics.fmean(errors), 4) if errors else None,  # to the errors' own 4 decimals
                "sd": round(statistics.stdev(errors), 4) if len(errors) > 1 else None,
                "seeds_planned": len(arm_jobs), "test_images": sorted({m["test_images"] for _, m in done}),
                "latency_ms": ms[0] if ms else None, "runs": [f"runs/{j.id}" for j, _ in done],
                "seconds": sum(m["seconds"] for _, m in done), "commands": commands,
            })
    trained = [m for j in jobs if j.kind == "train" and (m := measured[j.id])]
    seconds = sum(m["seconds"] for m in trained)
    cpus = dict(Counter(m["cpu"] or "not recorded" for m in trained))
    return {"format": "archfamily.study", "version": 1, "plan": str(plan.path.name), "name": plan.name,
            "description": plan.description, "base": plan.base,
            "base_checkpoint": str(plan.checkpoint.name) if plan.checkpoint else None,
            "recipe": {"name": plan.recipe.name, "epochs": plan.recipe.epochs, "batch_size": plan.recipe.batch_size,
                       "ema": plan.recipe.ema},
            "data": {"path": str(plan.data) if plan.data else "vendored CIFAR-10 (JPEG)", "subset": plan.subset,
                     "test_subset": plan.test_subset},
            "machine": {"cpus": cpus, "python": platform.python_version()},  # CPU: trainings on it
            "latency_setting": setting, "training_seconds": seconds, "rows": rows}


def _error_cell(row: dict[str, Any]) -> str:
    if row["mean"] is None:
        return "not run yet"
    text = f"{row['mean']:.2f}" + (f" ± {row['sd']:.2f}" if row["sd"] is not None else "")
    missing = row["seeds_planned"] - len(row["test_errors"])
    return text + (f" ({missing} of {row['seeds_planned']} seeds to run)" if missing else "")


def _cpus_text(doc: dict[str, Any]) -> str:
    """', on CPU A (2 runs), CPU B (1 run); 3 runs recorded no CPU' from results.json's count per CPU."""
    cpus = dict(doc["machine"]["cpus"])
    unrecorded = cpus.pop("not recorded", 0)
    runs = lambda n: f"{n} run{'s' if n > 1 else ''}"  # noqa: E731
    text = (", on " + ", ".join(f"{cpu} ({runs(n)})" for cpu, n in cpus.items())) if cpus else ""
    return text + (f"{';' if cpus else ','} {runs(unrecorded)} recorded no CPU (from before runs did)"
                   if unrecorded else "")


def markdown(doc: dict[str, Any]) -> str:
    r = doc["recipe"]
    lines = [f"# Study `{doc['name']}`\n", doc["description"].strip() + "\n" if doc["description"] else "",
             f"Base `{doc['base']}`" + (f" (trained: `{doc['base_checkpoint']}`)" if doc["base_checkpoint"] else "")
             + f"; every network trained from scratch with the `{r['name']}` recipe"
             + (f", {r['epochs']:g} epoch{'s' if r['epochs'] != 1 else ''}" if r["epochs"] else "") + f"; data: {doc['data']['path']}"
             + (f", {doc['data']['subset']:,} training images" if doc["data"]["subset"] else "")
             + (f", error on {doc['data']['test_subset']:,} test images" if doc["data"]["test_subset"]
                else ", error on all 10,000 test images") + ".",
             f"Training time of the finished networks: {doc['training_seconds'] / 3600:.2f} h{_cpus_text(doc)}. "
             f"Test error in %, mean ± sd over seeds (sample sd); latency: the bench's median"
             + (f" ({doc['latency_setting']})." if doc["latency_setting"] else " (not benched yet)."), "",
             "| arm | budget | params | MACs | test error % | seeds' errors | latency ms |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for row in doc["rows"]:
        values = ", ".join(f"{e:.2f} (s{s})" for e, s in zip(row["test_errors"], row["seeds"])) or "-"
        params = f"{row['params']:,}" if row["params"] else "-"
        macs = format_count(row["macs"]) if row["macs"] else "-"
        ms = f"{row['latency_ms']:.3f}" if row["latency_ms"] is not None else "-"
        lines.append(f"| {row['arm']} | {row['budget_label']} | {params} | {macs} | {_error_cell(row)} | {values} | {ms} |")
    lines += ["", "![error vs params](bench/error_vs_params.png) ![error vs latency](bench/error_vs_latency.png)", "",
              "## The commands behind each row", "",
              "Run in the study folder; the seeds of a row differ only in `--seed` and `--out`.", ""]
    for row in doc["rows"]:
        lines += [f"**{row['arm']}, {row['budget_label']}**", "", "```bash", *row["commands"], "```", ""]
    return "\n".join(lines)


def write_results(plan: Plan, study_dir: Path, jobs: list[Job]) -> dict[str, Any]:
    doc = collect(plan, study_dir, jobs)
    atomic_write_json(study_dir / "results.json", doc)
    atomic_write_text(study_dir / "results.md", markdown(doc))
    return doc
