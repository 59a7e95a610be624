"""`archfamily study`: the smoke plan end to end, killed and resumed, and plans refused before anything runs."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "studies" / "smoke" / "plan.toml"
STUDY = [sys.executable, "-m", "archfamily", "study", str(SMOKE), "--jobs", "2"]


# The killed studies run these arms of the smoke plan (`--arms`): every kind of run a study starts (a base
# training, a pruning run, measuring its networks, training from scratch, two at once) in half the smoke plan's time.
KILLED_ARMS = ("pruned-tuned", "copycat-r8", "bottleneck")


def _measured(study_dir: Path, arms: tuple[str, ...]) -> list[tuple]:
    """What a study measured for `arms`, without the timings (which differ from run to run)."""
    doc = json.loads((study_dir / "results.json").read_text())
    return [(r["arm"], r["budget"], r["params"], r["macs"], r["test_errors"], r["seeds"]) for r in doc["rows"]
            if r["arm"] in arms]


def _children_in(study_dir: Path) -> list[int]:
    """Processes whose working folder is the study folder: the runs a study started."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == study_dir.resolve():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study") / "smoke"
    done = subprocess.run([*STUDY, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "study:" in done.stderr  # the progress bar
    return out


def test_smoke_study_writes_every_row_with_its_commands(smoke_study: Path) -> None:
    doc = json.loads((smoke_study / "results.json").read_text())
    arms = {(r["arm"], r["budget_label"]) for r in doc["rows"]}
    assert arms == {("reduced-width", "60k"), ("reduced-width", "100k"), ("copycat-r8", "60k"), ("bottleneck", "100k"),
                    ("fitted", "60k"), ("pruned-scratch", "60k"), ("pruned-tuned", "60k"), ("pruned-tuned", "100k")}
    for row in doc["rows"]:
        assert len(row["test_errors"]) == row["seeds_planned"] and row["test_images"] == [200]
        assert 0 <= row["mean"] <= 100 and row["latency_ms"] > 0
        assert row["commands"][-1].startswith(("archfamily train", "archfamily measure"))
    width = next(r for r in doc["rows"] if r["arm"] == "reduced-width" and r["budget_label"] == "60k")
    assert width["seeds"] == [0, 1] and width["sd"] is not None
    assert abs(width["params"] - 60_000) <= 600  # within 1% of the budget
    tuned = next(r for r in doc["rows"] if r["arm"] == "pruned-tuned" and r["budget_label"] == "60k")
    assert tuned["params"] <= 60_000 and any(c.startswith("archfamily derive") for c in tuned["commands"])
    for plot in ("error_vs_params.png", "error_vs_latency.png"):
        assert (smoke_study / "bench" / plot).stat().st_size > 0
    assert "| reduced-width | 60k |" in (smoke_study / "results.md").read_text()


def test_a_finished_study_runs_nothing_again(smoke_study: Path) -> None:
    before = {p: p.stat().st_mtime for p in (smoke_study / "runs").rglob("metrics.json")}
    done = subprocess.run([*STUDY, "--out", str(smoke_study), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "0 of 12 runs left" in done.stdout
    finished = [line for line in done.stdout.splitlines() if " finished " in line]
    assert len(finished) == 12 and all(line.endswith("min taken") for line in finished)  # no estimate at 1 MAC/s
    assert max(float(line.split()[-3]) for line in finished) < 60
    assert {p: p.stat().st_mtime for p in (smoke_study / "runs").rglob("metrics.json")} == before


def test_a_copied_finished_study_keeps_its_bench_until_a_network_changes(smoke_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(smoke_study, out)
    bench = out / "bench" / "results.json"
    old = time.time() - 3600
    os.utime(bench, (old, old))  # older than every network, as a fresh clone may leave it
    done = subprocess.run([*STUDY, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert bench.stat().st_mtime == old  # the same networks: the bench is not run again
    metrics = sorted((out / "runs").rglob("metrics.json"))[0]
    metrics.write_text(metrics.read_text() + "\n")  # the file that finished a network is not what the bench read
    done = subprocess.run([*STUDY, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert bench.stat().st_mtime > old


def test_a_study_killed_three_times_ends_with_the_same_results(smoke_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    command = [*STUDY, "--out", str(out), "--arms", ",".join(KILLED_ARMS)]
    moments = random.Random(14).sample(range(3, 12), 3)
    for moment in moments:
        study = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(moment)
        study.send_signal(signal.SIGKILL)
        study.wait()
        deadline = time.time() + 10
        while _children_in(out) and time.time() < deadline:  # each run dies with the study
            time.sleep(0.1)
        assert _children_in(out) == []
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _measured(out, KILLED_ARMS) == _measured(smoke_study, KILLED_ARMS)
    assert all(r[4] == [] for r in _measured(out, ("reduced-width", "fitted", "pruned-scratch")))  # not asked for
    assert not list(out.rglob(".*.tmp"))


def _submitit_controllers(study_dir: Path) -> list[int]:
    """Live submitit local controllers of this study (its submitted jobs)."""
    from archfamily.study.executors import is_local_controller

    folder = (study_dir / "submitit").absolute()
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and is_local_controller(int(p.name), folder)]


def test_submitit_local_killed_three_times_and_a_job_killed_ends_with_the_local_results(smoke_study: Path,
                                                                                         tmp_path: Path) -> None:
    """The orchestrator SIGKILLed three times (its submitted jobs go on and are followed, not submitted again),
    then one job's own process killed (reported, the study goes on, exit 1), then run again: the same numbers
    as the local executor's study, no job run twice at once, none left running."""
    out = tmp_path / "submitted"
    command = [*STUDY, "--out", str(out), "--executor", "submitit-local", "--arms", ",".join(KILLED_ARMS)]
    for moment in (3, 6, 9):
        study = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(moment)
        study.send_signal(signal.SIGKILL)
        study.wait()
    started = time.time()
    study = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = started + 300
    while time.time() < deadline and not any(p.stat().st_mtime > started
                                             for p in (out / "submitit").glob("*_submitted.pkl")):
        time.sleep(0.02)  # its first submission: it has looked for the earlier jobs and follows those still alive
    earlier = set(_children_in(out))  # (a job that ended before it looked is submitted again, not reported)
    victim = None
    while victim is None and time.time() < deadline:  # a job's own `archfamily` process, just started: far from
        fresh = {pid for pid in set(_children_in(out)) - earlier  # writing its results (and past its exec)
                 if b"archfamily" in (Path("/proc") / str(pid) / "cmdline").read_bytes()}
        victim = min(fresh) if fresh else None
        time.sleep(0.02)
    assert victim is not None, "no job process started"
    os.kill(victim, signal.SIGKILL)
    _, err = study.communicate(timeout=600)
    assert study.returncode == 1 and "the command above was killed by SIGKILL (logs/" in err
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _measured(out, KILLED_ARMS) == _measured(smoke_study, KILLED_ARMS)
    assert not any("in use by another archfamily process" in log.read_text() for log in (out / "logs").iterdir())
    assert _submitit_controllers(out) == [] and not list(out.rglob(".*.tmp"))
    records = [json.loads(f.read_text()) for f in (out / "jobs").glob("*.json")]
    assert {r["submission"]["executor"] for r in records if "submission" in r} == {"submitit-local"}


@pytest.mark.parametrize("args, message", [
    (["--executor", "slurm"], "--executor slurm needs SLURM on this machine: sbatch, srun, sacct not on the PATH"),
    (["--partition", "gpu"], "--partition is an option for a submitted job"),
    (["--executor", "slurm", "--sbatch", "time=30"], "set it with its own option (--time)"),
    (["--executor", "slurm", "--qos", "high;rm"], "expected a SLURM name"),
    (["--executor", "submitit-local", "--cpus-per-task", "0"], "0 is not in the range"),
])
def test_a_cluster_without_slurm_or_with_a_bad_option_is_one_line(run_cli, tmp_path: Path, args: list[str],
                                                                   message: str) -> None:
    result = run_cli("study", str(SMOKE), "--out", str(tmp_path / "s"), *args)
    assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not (tmp_path / "s").exists()


def test_dry_run_on_slurm_shows_each_jobs_sbatch_flags(run_cli, tmp_path: Path) -> None:
    result = run_cli("study", str(_plan(tmp_path, GOOD)), "--out", str(tmp_path / "s"), "--dry-run",
                     "--executor", "slurm", "--partition", "gpu", "--gpus-per-node", "2", "--mem-gb", "16",
                     "--sbatch", "constraint=a100")
    assert result.code == 0, result.err
    flags = [line.split() for line in result.out.splitlines() if line.strip().startswith("sbatch ")]
    assert len(flags) == 3  # base, the pruning run, one training
    assert {"--partition=gpu", "--gpus-per-node=2", "--mem=16GB", "--constraint=a100", "--time=240",
            "--job-name=archfamily-prune-fisher"} <= set(flags[1])


def test_several_gpus_run_training_and_pruning_under_torchrun() -> None:
    from archfamily.study.commands import command_argv

    assert command_argv(["train", "--spec", "x"], gpus=4)[1:7] == ["-m", "torch.distributed.run", "--standalone",
                                                                   "--nproc_per_node", "4", "-m"]
    assert command_argv(["measure", "x"], gpus=4)[1:3] == ["-m", "archfamily"]
    assert command_argv(["train"], gpus=1)[1:3] == ["-m", "archfamily"]


def _plan(tmp_path: Path, text: str) -> Path:
    plan = tmp_path / "plan.toml"
    plan.write_text(text)
    return plan


GOOD = """
budgets = ["60k"]
[base]
spec = "wrn-16-1"
[data]
subset = 500
test_subset = 200
[recipe]
epochs = 1
[prune.fisher]
prune_every = 2
channels_per_step = 16
[arms.reduced-width]
rule = "reduced-width"
"""


@pytest.mark.parametrize("edit, message", [
    (lambda t: "learning_rate = 0.1\n" + t, "unknown key 'learning_rate'"),
    (lambda t: t.replace('rule = "reduced-width"', 'rule = "reduced-width"\nseed = [0]'), "unknown key 'seed'"),
    (lambda t: t.replace('"wrn-16-1"', '"wrn-16-3x"'), "wrn-16-3x"),
    (lambda t: t.replace('["60k"]', '["9G"]'), "outside what rule reduced-width reaches"),
    (lambda t: t.replace('rule = "reduced-width"', 'rule = "pruned-tuned"').replace('["60k"]', '["5k"]'),
     "the budget must lie between"),
    (lambda t: t.replace("epochs = 1", 'epochs = "one"'), "'epochs' must be a number"),
    (lambda t: t.replace('rule = "reduced-width"', 'rule = "copycat"\nprune = "l1"'), "not a [prune.NAME]"),
    (lambda t: t.replace("[base]", "[base]\ncheckpoint = \"missing.safetensors\""), "does not exist"),
    (lambda t: t.replace("budgets", "budgetz"), "'budgets' is missing"),
    (lambda t: t + "\nrule = 3\n", "not a TOML file"),
    (lambda t: t.replace("[arms.reduced-width]", '[arms."../escape"]'), "it names folders"),
    (lambda t: t.replace('rule = "reduced-width"', 'rule = "reduced-width"\nseeds = [4294967296]'), "whole numbers from 0 to 2,147,483,647"),
    (lambda t: t.replace("channels_per_step = 16", 'channels_per_step = 16\nuntil_params = "900k"'),
     "'until_params' must be below"),
    (lambda t: t.replace("epochs = 1", "epochs = 1\nema = 1.0"), "'ema' must be in"),
    (lambda t: t.replace('["60k"]', '["1e400"]'), "too large"),
    (lambda t: t.replace("channels_per_step = 16", 'channels_per_step = 16\nmethod = "fisher-cost"\ncost = "latency"'),
     "needs 'on'"),
    (lambda t: t.replace('rule = "reduced-width"', 'rule = "reduced-width"\nlatency_ms = [1.0]'), "needs the plan's [latency]"),
    (lambda t: t.replace('rule = "reduced-width"', 'rule = "pruned-scratch"\nlatency_ms = [1.0]') + "[latency]\n",
     "applies to scaling rules"),
    (lambda t: t.replace('rule = "reduced-width"', 'rule = "reduced-width"\nlatency_ms = [1.0]\nbudgets = ["60k"]')
     + "[latency]\n", "not both"),
    (lambda t: t.replace('rule = "reduced-width"', 'rule = "reduced-width"\nlatency_ms = [0]') + "[latency]\n",
     "positive numbers"),
    (lambda t: t + '[latency]\non = "gpu"\n', "unknown device 'gpu'"),
    (lambda t: t.replace("channels_per_step = 16", 'channels_per_step = 16\nmethod = "fisher-penalty"\n'
                                                   'cost = "latency"\non = "tpu"'), "unknown device 'tpu'"),
    (lambda t: t.replace('"wrn-16-1"', '"timm:convnext_atto"').replace(
        "channels_per_step = 16", 'channels_per_step = 16\nmethod = "fisher-cost"\ncost = "latency"\non = "cpu:1"'),
     "maps stay channels-first; this one permutes them"),  # derive's own check: --dry-run refuses what a job would
    (lambda t: t + '[prune.fisher.finetune]\nlr = "fast"\n', "[finetune]: lr: must be a number"),
    (lambda t: t + '[prune.fisher.finetune]\nepochs = 3\n', "'epochs' cannot be set"),
])
def test_a_bad_plan_is_one_line_before_anything_runs(run_cli, tmp_path: Path, edit, message: str) -> None:
    plan = _plan(tmp_path, edit(GOOD))
    result = run_cli("study", str(plan), "--out", str(tmp_path / "study"))
    assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not (tmp_path / "study").exists()


def test_dry_run_lists_each_run_with_its_estimate_and_commands(run_cli, tmp_path: Path) -> None:
    result = run_cli("study", str(_plan(tmp_path, GOOD)), "--out", str(tmp_path / "study"), "--dry-run")
    assert result.code == 0, result.err
    assert "base " in result.out and "prune-fisher" in result.out and "reduced-width-60k-s0" in result.out
    assert "archfamily scale --family wrn-16-1 --params 60k --rule reduced-width" in result.out
    assert "3 of 3 runs left" in result.out and " min" in result.out
    assert not (tmp_path / "study").exists()


def test_a_pruning_runs_finetune_table_reaches_its_derive_command(run_cli, tmp_path: Path) -> None:
    plan = _plan(tmp_path, GOOD + "[prune.fisher.finetune]\nlr = 0.02\nnesterov = true\n")
    result = run_cli("study", str(plan), "--out", str(tmp_path / "study"), "--dry-run")
    assert result.code == 0, result.err
    assert "--finetune-set lr=0.02 --finetune-set nesterov=true --out runs/prune-fisher" in result.out, result.out


def test_dry_run_of_a_finished_plan_shows_what_each_run_took_not_an_estimate(tmp_path: Path, monkeypatch) -> None:
    import archfamily.study as study
    from archfamily.study.plan import load_plan
    from archfamily.study.queue import write_record

    plan = load_plan(_plan(tmp_path, GOOD))
    out = tmp_path / "study"
    jobs = study.expand(plan, out)
    for job in jobs:  # every run finished; the pruning run's time was never recorded
        (out / job.done_file).parent.mkdir(parents=True, exist_ok=True)
        (out / job.done_file).write_text("{}")
        if job.kind != "derive":
            write_record(out, job, 90.0)
    monkeypatch.setattr(study, "collect", lambda *args: {})  # the results are not what this test reads
    jobs, estimates, source = study.prepare(plan, out, 1)
    assert estimates == {} and source == "nothing left to run"  # no placeholder rate to estimate with
    lines = [ln for ln in study.queue_lines(jobs, estimates, out, 1) if " finished " in ln]
    assert len(lines) == 3 and not any("~" in ln for ln in lines), lines
    assert lines[0].split()[-3:] == ["1.5", "min", "taken"] and lines[1].endswith("(time not recorded)")


def test_results_give_each_rows_mean_and_sd_to_the_errors_4_decimals(tmp_path: Path) -> None:
    from archfamily.specs import base_spec, spec_to_dict
    from archfamily.study.plan import load_plan
    from archfamily.study.queue import expand
    from archfamily.study.results import collect

    plan = load_plan(_plan(tmp_path, GOOD.replace('rule = "reduced-width"', 'rule = "reduced-width"\nseeds = [0, 1]')))
    out = tmp_path / "study"
    jobs = expand(plan, out)
    spec = base_spec("wrn-10-1")
    for job, error in zip([j for j in jobs if j.arm == "reduced-width"], (0.1, 0.2)):
        (out / job.done_file).parent.mkdir(parents=True)
        (out / job.done_file).write_text(json.dumps({"test_error": error, "params": spec.num_params(),
                                                     "macs": spec.num_macs(), "test_images": 10_000,
                                                     "spec": spec_to_dict(spec)}))
    row = collect(plan, out, jobs)["rows"][0]
    assert row["test_errors"] == [0.1, 0.2] and (row["mean"], row["sd"]) == (0.15, 0.0707)  # not 0.15000000000000002


def test_results_name_the_cpu_each_training_recorded(tmp_path: Path) -> None:
    """A study spans sessions and machines: its results count the trainings per CPU their run.json names."""
    from archfamily.specs import base_spec, spec_to_dict
    from archfamily.study.plan import load_plan
    from archfamily.study.queue import expand
    from archfamily.study.results import collect, markdown

    plan = load_plan(_plan(tmp_path, GOOD.replace('rule = "reduced-width"', 'rule = "reduced-width"\nseeds = [0, 1, 2]')))
    out = tmp_path / "study"
    spec = base_spec("wrn-10-1")
    for job, cpu in zip([j for j in expand(plan, out) if j.arm == "reduced-width"], ("CPU A", "CPU B", None)):
        (out / job.done_file).parent.mkdir(parents=True)
        (out / job.done_file).write_text(json.dumps({"test_error": 1.0, "params": spec.num_params(), "test_images": 10,
                                                     "macs": spec.num_macs(), "spec": spec_to_dict(spec)}))
        provenance = {"command": ["archfamily", "train"]} | ({"cpu": cpu} if cpu else {})  # older runs name none
        (out / job.done_file).with_name("run.json").write_text(json.dumps({"config": {}, "provenance": provenance}))
    doc = collect(plan, out, expand(plan, out))
    assert doc["machine"]["cpus"] == {"CPU A": 1, "CPU B": 1, "not recorded": 1}
    assert "h, on CPU A (1 run), CPU B (1 run); 1 run recorded no CPU (from before runs did)." in markdown(doc)


def test_arms_runs_part_of_a_plan_with_the_runs_it_needs(run_cli, tmp_path: Path) -> None:
    from archfamily.study import select_arms
    from archfamily.study.plan import load_plan
    from archfamily.study.queue import expand

    plan = load_plan(_plan(tmp_path, GOOD + '[arms.copycat]\nrule = "copycat"\nprune = "fisher"\n'))
    jobs = expand(plan, tmp_path / "study")
    assert [j.id for j in select_arms(plan, jobs, ["copycat"])] == ["base", "prune-fisher", "copycat-60k-s0"]
    assert [j.id for j in select_arms(plan, jobs, ["reduced-width"])] == ["reduced-width-60k-s0"]
    result = run_cli("study", str(plan.path), "--out", str(tmp_path / "study"), "--arms", "copy-cat", "--dry-run")
    assert result.code == 2 and "no arm 'copy-cat'; its arms: reduced-width, copycat" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_run_started_by_another_plan_is_refused(run_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "study" / "runs" / "base"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"config": {}, "provenance": {
        "command": ["archfamily", "train", "--spec", "wrn-16-1", "--epochs", "3", "--out", "runs/base"]}}))
    result = run_cli("study", str(_plan(tmp_path, GOOD)), "--out", str(tmp_path / "study"), "--dry-run")
    assert result.code == 2 and "was started by another command than this plan's" in result.err


def test_a_run_folder_in_use_is_refused(run_cli, tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from archfamily.training.runs import _lock_run_dir; _lock_run_dir(Path(sys.argv[1])); "
                               "print('locked', flush=True); time.sleep(60)", str(tmp_path / "run")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_cli("derive", "--preset", "smoke", "--out", str(tmp_path / "run"))
        assert result.code == 2 and "is in use by another archfamily process" in result.err
        assert not (tmp_path / "run" / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_scale_takes_a_base_name_for_the_rules_that_need_no_pruning_run(run_cli) -> None:
    result = run_cli("scale", "--family", "wrn-16-2", "--rule", "bottleneck", "--params", "152k", "--json")
    assert result.code == 0, result.err
    assert abs(json.loads(result.out)["params"] - 152_000) <= 1520
    result = run_cli("scale", "--family", "wrn-16-2", "--rule", "copycat", "--params", "152k")
    assert result.code == 2 and "the copycat rule (the default --rule) needs a pruning run's family" in result.err  # not "family not found"
    assert "--family FAMILY.json" in result.err and "archfamily derive" in result.err and "reduced-width" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_plan_keeps_its_name_beside_a_bench(tmp_path: Path) -> None:
    """The name titles results.md; a [bench] table once overwrote it with its last runtime ('eager')."""
    from archfamily.study.plan import load_plan

    plan = load_plan(_plan(tmp_path, 'name = "muon-study"\n' + GOOD + "[bench]\nruntimes = [\"eager\"]\n"))
    assert plan.name == "muon-study"


def test_a_study_folder_may_keep_a_readme_but_nothing_else_of_its_own(tmp_path: Path) -> None:
    """studies/cifar10-cpu/ carries its notes in README.md; `study` must still resume there."""
    from archfamily.errors import UserError
    from archfamily.study import check_study_folder

    (tmp_path / "runs").mkdir()
    (tmp_path / "README.md").write_text("notes")
    check_study_folder(tmp_path)
    (tmp_path / "zoo.sh").write_text("mine")
    with pytest.raises(UserError, match="'zoo.sh', which no study writes"):
        check_study_folder(tmp_path)


def test_whole_number_budgets_reach_the_commands_exactly(tmp_path: Path) -> None:
    from archfamily.study.plan import load_plan
    from archfamily.study.queue import expand

    text = GOOD.replace('["60k"]', "[60123]").replace('rule = "reduced-width"', 'rule = "reduced-width"\n'
                                                       '[arms.tuned]\nrule = "pruned-tuned"')
    jobs = {j.id: j for j in expand(load_plan(_plan(tmp_path, text)), tmp_path / "study")}
    assert "60123" in jobs["prune-fisher"].commands[0][jobs["prune-fisher"].commands[0].index("--save-at") + 1]
    assert jobs["tuned-60123-s0"].commands[0][1] == "runs/prune-fisher/pruned-at-60123.safetensors"
    assert jobs["reduced-width-60123-s0"].commands[0][4] == "60123"  # scale --params


def test_each_budget_is_solved_once_for_the_plan_and_its_queue(tmp_path: Path, monkeypatch) -> None:
    from archfamily.scaling import rules
    from archfamily.study.plan import load_plan
    from archfamily.study.queue import expand

    solved, real = [], rules.solve
    monkeypatch.setattr(rules, "solve", lambda rule, budget, *a: solved.append(budget) or real(rule, budget, *a))
    plan = load_plan(_plan(tmp_path, GOOD.replace('["60k"]', '["60k", "100k"]')))
    jobs = {j.id: j for j in expand(plan, tmp_path / "study")}
    assert sorted(solved) == [60_000, 100_000]  # by the plan's check; the queue trains what it found
    member = plan.members[("reduced-width", 60_000)]
    assert abs(member.num_params() - 60_000) <= 600
    assert jobs["reduced-width-60k-s0"].eval_macs == member.num_macs() * 200 * 3  # its MACs, per test image


def test_a_plan_and_its_pruning_run_stop_at_the_same_floor(tmp_path: Path) -> None:
    from archfamily.errors import UserError
    from archfamily.data.dataset import in_memory
    from archfamily.pruning.derive import DeriveConfig, _validate, pruning_floor
    from archfamily.specs import base_spec
    from archfamily.study.plan import load_plan

    base = base_spec("wrn-16-1").num_params()
    floor = pruning_floor(None, base)
    assert floor == base // 10 and pruning_floor(20_000, base) == 20_000
    tuned = GOOD.replace('rule = "reduced-width"', 'rule = "pruned-tuned"')
    assert load_plan(_plan(tmp_path, tuned.replace('["60k"]', f"[{floor}]"))).floors == {"fisher": floor}
    images = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    cifar_like = in_memory(images, torch.arange(10), images, torch.arange(10), "zeros")
    settings = _validate(DeriveConfig(base="wrn-16-1", save_at=(floor,)), cifar_like)
    assert (settings.spec, settings.floor) == (base_spec("wrn-16-1"), floor)
    with pytest.raises(UserError, match="the budget must lie between"):
        load_plan(_plan(tmp_path, tuned.replace('["60k"]', f"[{floor - 1}]")))
    with pytest.raises(UserError, match="outside the pruning run"):
        _validate(DeriveConfig(base="wrn-16-1", save_at=(floor - 1,)), cifar_like)


def test_a_changed_scaling_setting_is_a_changed_plan(run_cli, tmp_path: Path) -> None:
    from archfamily.study.plan import load_plan
    from archfamily.study.queue import expand, write_record

    study = tmp_path / "study"
    job = next(j for j in expand(load_plan(_plan(tmp_path, GOOD)), study) if j.id == "reduced-width-60k-s0")
    write_record(study, job, 12.0)  # the study started it under this plan
    changed = GOOD.replace('rule = "reduced-width"', 'rule = "reduced-width"\nround_to = 8')
    result = run_cli("study", str(_plan(tmp_path, changed)), "--out", str(study), "--dry-run")
    assert result.code == 2 and "started by another command" in result.err and "--round-to" not in result.err


LATENCY_PLAN = GOOD + """
[arms.rw-ms]
rule = "reduced-width"
latency_ms = [0.5, 2]
seeds = [0, 1]
[latency]
on = "cpu:1"
"""


def test_latency_budgets_choose_each_member_first_and_alone(tmp_path: Path) -> None:
    from archfamily.study.plan import load_plan
    from archfamily.study.queue import expand

    jobs = expand(load_plan(_plan(tmp_path, LATENCY_PLAN)), tmp_path / "study")
    scale = [j for j in jobs if j.kind == "scale"]
    assert [j.id for j in jobs[:2]] == [j.id for j in scale] == ["spec-rw-ms-0.5ms", "spec-rw-ms-2ms"]
    assert all(j.exclusive for j in scale)
    assert scale[0].commands == [["scale", "--family", "wrn-16-1", "--latency-ms", "0.5", "--on", "cpu:1", "--batch",
                                  "1", "--rule", "reduced-width", "--out", "specs/rw-ms-0.5ms.json"]]
    trains = [j for j in jobs if j.arm == "rw-ms"]
    assert {j.id for j in trains} == {f"rw-ms-{b}-s{s}" for b in ("0.5ms", "2ms") for s in (0, 1)}
    onnx = expand(load_plan(_plan(tmp_path, LATENCY_PLAN + 'runtime = "onnxruntime"\n')), tmp_path / "study")
    assert "--runtime" not in [a for j in jobs for c in j.commands for a in c]  # eager's jobs as before runtimes
    assert [j for j in onnx if j.kind == "scale"][0].commands[0][8:12] == ["1", "--runtime", "onnxruntime", "--rule"]
    assert all(j.commands[0][:3] == ["train", "--spec", f"specs/rw-ms-{j.id.split('-')[2]}.json"]
               and j.deps == (f"spec-rw-ms-{j.id.split('-')[2]}",) for j in trains)


@pytest.mark.parametrize("extra, error", [
    ('runtime = "tensorrt"\n', "'runtime' must be one of eager, onnxruntime"),
    ('runtime = "onnxruntime"\n', None),
])
def test_a_plans_latency_runtime_is_one_the_bench_has(tmp_path: Path, extra: str, error) -> None:
    from archfamily.errors import UserError
    from archfamily.study.plan import load_plan

    if error is None:
        assert load_plan(_plan(tmp_path, LATENCY_PLAN + extra)).latency.runtime == "onnxruntime"
    else:
        with pytest.raises(UserError, match=error):
            load_plan(_plan(tmp_path, LATENCY_PLAN + extra))


def test_a_prune_run_predicts_its_latency_cost_in_the_runtime_it_names(tmp_path: Path) -> None:
    from archfamily.errors import UserError
    from archfamily.study.plan import load_plan
    from archfamily.study.queue import expand

    latency = GOOD.replace("[prune.fisher]", '[prune.fisher]\nmethod = "fisher-penalty"\ncost = "latency"\n'
                                             'on = "cpu:1"\nruntime = "onnxruntime"')
    derive = [j for j in expand(load_plan(_plan(tmp_path, latency)), tmp_path / "study") if j.kind == "derive"][0]
    assert derive.commands[0][derive.commands[0].index("--on"):][:4] == ["--on", "cpu:1", "--runtime", "onnxruntime"]
    with pytest.raises(UserError, match="'runtime' says what 'cost' latency is predicted in"):
        load_plan(_plan(tmp_path, GOOD.replace("[prune.fisher]", '[prune.fisher]\nruntime = "onnxruntime"')))


def test_an_exclusive_job_starts_only_on_an_empty_machine_and_holds_it() -> None:
    from archfamily.study.queue import Job
    from archfamily.study.runner import startable

    def job(name: str, exclusive: bool = False, deps: tuple[str, ...] = ()) -> Job:
        return Job(name, "scale" if exclusive else "train", [], f"{name}.json", deps, exclusive=exclusive)

    a, b, x, c = job("a"), job("b"), job("x", exclusive=True), job("c")
    assert startable([x, a, b], [], set(), 2) == [x]  # first in the queue: alone
    assert startable([a, b], [x], set(), 2) == []  # nothing beside it
    assert startable([a, x, c], [], set(), 2) == [x]  # a ready one goes first, before jobs ahead of it
    assert startable([a, x, c], [b], set(), 2) == []  # and waits for the machine to empty, starting nothing meanwhile
    waiting = job("w", exclusive=True, deps=("d",))
    assert startable([waiting, a, b], [], set(), 2) == [a, b]  # not ready yet: it holds nothing back
    assert startable([a, b, c], [job("r")], set(), 2) == [a]  # lanes as usual


def test_a_plan_named_plan_toml_runs_in_its_own_folder(tmp_path: Path) -> None:
    """studies/NAME/plan.toml -> studies/NAME/ (its plan beside its results); studies/NAME.toml -> studies/NAME/."""
    from archfamily.study import check_study_folder, default_folder
    from archfamily.study.plan import load_plan

    (tmp_path / "mine").mkdir()
    plan = load_plan(_plan(tmp_path / "mine", GOOD))
    assert default_folder(plan) == tmp_path / "mine" and plan.name == "mine"
    check_study_folder(tmp_path / "mine")  # the plan itself is no stranger there
    other = tmp_path / "other.toml"
    other.write_text(GOOD)
    assert default_folder(load_plan(other)) == tmp_path / "other" and load_plan(other).name == "other"


def test_study_compare_puts_two_committed_studies_side_by_side(run_cli, tmp_path: Path) -> None:
    new, old = ROOT / "studies" / "cifar10-cpu-fast3", ROOT / "studies" / "cifar10-cpu-bf16"
    result = run_cli("study", "compare", str(new), str(old))
    assert result.code == 0, result.err
    assert "| 304k | copycat | 304,258 | 55.0M | 11.92 ± 0.14% (12.02, 11.82) | 12.93 ± 0.01% (12.92, 12.94) |" in result.out
    assert "| (iii) | copycat vs reduced-width | +0.56 (resolved) | +0.05 (within seeds) | +0.46 (resolved) |" in result.out
    result = run_cli("study", "compare", str(new), str(tmp_path))
    assert result.code == 2 and "has no results.json" in result.err and len(result.err.strip().splitlines()) == 1
