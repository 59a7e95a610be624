"""Run a study's queue: up to N jobs at once, one progress bar, nothing lost to a kill.

Each job's commands run in the study folder (their output in `logs/<job>.log`) on an executor (`executors.py`:
child processes here, or submitit jobs), with `--resume` always on, so a study killed at any moment and started
again skips what is finished and continues what is partial: a train run loses at most the epoch it was in, a
derive run the prunes since its last checkpoint. Child processes die with the study (so a killed study leaves
no orphan writing into a run folder that its restart also writes into); submitted jobs outlive it, and its
restart follows them from their records instead of submitting them twice.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from archfamily.checks import Fields, read_json
from archfamily.errors import UserError
from archfamily.files import atomic_write_json
from archfamily.specs import ArchSpec
from archfamily.study.executors import Executor, Launched
from archfamily.study.queue import Job, read_record, write_record
from archfamily.training.metrics_file import read_metrics

POLL_SECONDS = 0.5
RECORD_SECONDS = 30.0  # how often a running job's seconds are written down (a SIGKILL loses at most this)


def is_finished(study_dir: Path, job: Job) -> bool:
    return (study_dir / job.done_file).is_file()


def is_partial(study_dir: Path, job: Job) -> bool:
    return job.run_dir is not None and (study_dir / job.run_dir / "run.json").is_file() and not is_finished(study_dir, job)


BENCH_INPUTS = "bench/inputs.json"  # what the bench's results were made from: a digest of the networks' records


def bench_inputs_digest(study_dir: Path, jobs: list[Job]) -> str:
    """sha256 over every finished job's id and the bytes of the file that finished it (metrics.json,
    family.json): it changes when a network is added, retrained or re-measured, and not when a clone resets
    file times."""
    digest = hashlib.sha256()
    for job in sorted((j for j in jobs if is_finished(study_dir, j)), key=lambda j: j.id):
        digest.update(job.id.encode() + b"\0" + (study_dir / job.done_file).read_bytes() + b"\0")
    return digest.hexdigest()


def record_bench_inputs(study_dir: Path, jobs: list[Job]) -> None:
    """After a bench has run: what it read, so `bench_is_current` can tell later whether it still holds."""
    atomic_write_json(study_dir / BENCH_INPUTS, {"networks_sha256": bench_inputs_digest(study_dir, jobs)})


def bench_is_current(study_dir: Path, jobs: list[Job], bench: Job) -> bool:
    """The bench's results were made by this command from the networks the study has now.

    A bench from before `BENCH_INPUTS` was kept is judged by file times: newer than every network it reads."""
    results = study_dir / "bench" / "results.json"
    record = read_record(study_dir, bench)
    if not results.is_file() or record is None or record["commands"] != bench.commands:
        return False
    inputs = study_dir / BENCH_INPUTS
    if inputs.is_file():
        recorded = Fields(read_json(inputs), str(inputs), ("networks_sha256",)).str("networks_sha256")
        return recorded == bench_inputs_digest(study_dir, jobs)
    newest = max(((study_dir / j.done_file).stat().st_mtime for j in jobs if is_finished(study_dir, j)), default=0.0)
    return results.stat().st_mtime >= newest


def job_seconds(study_dir: Path, job: Job) -> float:
    """How long a finished job ran, over all the study invocations that ran it (its record), else the last
    process's own figure (`metrics.json`'s seconds, for runs from before the study kept records)."""
    record = read_record(study_dir, job)
    if record is not None and record["seconds"] > 0:
        return record["seconds"]
    metrics_file = study_dir / job.done_file
    if job.kind == "train" and metrics_file.is_file():
        return read_metrics(metrics_file).seconds or 0.0
    return 0.0


def training_rate(study_dir: Path, jobs: list[Job], probe: Callable[[], float]) -> tuple[float, str]:
    """MACs per second one job trains at, from this study's finished trainings if any, else a short probe."""
    cost = seconds = 0.0
    for job in jobs:
        took = job_seconds(study_dir, job) if job.kind == "train" and is_finished(study_dir, job) else 0.0
        if took > 0:
            cost, seconds = cost + job.train_macs + job.eval_macs, seconds + took
    if seconds > 0:
        return cost / seconds, "this study's finished trainings"
    return probe(), "a training-step probe on this machine"


def probe_rate(spec: ArchSpec, threads: int, seconds: float = 1.5) -> float:
    """MACs per second of training steps (forward + backward, SGD) of `spec` at batch 64 on `threads` CPU threads."""
    import torch

    from archfamily.models import build_model

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model(spec).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(64, spec.in_chans, spec.input_size, spec.input_size).to(memory_format=torch.channels_last)
        y = torch.randint(0, spec.num_classes, (64,))

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        step()
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step()
            steps += 1
        return 3.0 * spec.num_macs() * 64 * steps / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)


def estimate_seconds(job: Job, rate: float) -> float:
    return (job.train_macs + job.eval_macs) / rate + job.extra_seconds + 5.0  # + starting a process, loading data


@dataclass
class _Running:
    job: Job
    launched: Launched
    estimate: float
    before: float  # seconds earlier study invocations ran this job
    started: float = 0.0  # when this invocation first saw it running; 0 while it waits in a cluster's queue

    def seconds(self, now: float) -> float:
        return self.before + (now - self.started if self.started else 0.0)


def startable(pending: list[Job], running: list[Job], done: set[str], parallel: int) -> list[Job]:
    """The pending jobs to start now, in queue order: those whose needs are done, while lanes are free.

    An exclusive job (one that measures latency) runs on an empty machine and holds it. A ready one goes before
    every other job: nothing new starts until the running jobs have ended and it has run, so a lane waits for
    at most the running jobs, not for a long job that would otherwise have started beside them.
    """
    if any(j.exclusive for j in running):
        return []
    ready = [j for j in pending if all(d in done for d in j.deps)]
    exclusive = next((j for j in ready if j.exclusive), None)
    if exclusive is not None:
        return [] if running else [exclusive]
    return ready[:max(0, parallel - len(running))]


class Runner:
    """Start what is ready, in queue order, up to `parallel` at once; a failed job fails what needs it."""

    def __init__(self, study_dir: Path, parallel: int, executor: Executor) -> None:
        self.study_dir, self.parallel, self.executor = study_dir, parallel, executor
        self.failed: dict[str, str] = {}

    def _running(self, job: Job, launched: Launched, estimate: float) -> _Running:
        record = read_record(self.study_dir, job)
        running = _Running(job, launched, estimate, record["seconds"] if record else 0.0)
        self._record(running, time.time())
        return running

    def _record(self, r: _Running, now: float) -> None:
        """The job's commands, the seconds it has run over every study invocation that ran it, and where it
        was submitted."""
        if not r.started and r.launched.is_running():
            r.started = now
        write_record(self.study_dir, r.job, r.seconds(now), r.launched.submission)

    def _last_lines(self, job: Job, count: int = 2) -> str:
        """A failed job's last log lines: its command's own last words, then how it ended."""
        log = self.executor.log_path(job)
        lines = log.read_text(errors="replace").replace("\r", "\n").splitlines() if log.is_file() else []
        return " / ".join([ln.strip() for ln in lines if ln.strip()][-count:]) or "no output"

    def _followed(self, pending: list[Job], estimates: dict[str, float]) -> list[_Running]:
        """The pending jobs a previous study process submitted that are still queued or running: followed,
        not submitted again."""
        followed = []
        for job in list(pending):
            record = read_record(self.study_dir, job)
            launched = self.executor.follow(job, record["submission"] if record else None)
            if launched is not None:
                pending.remove(job)
                followed.append(self._running(job, launched, estimates[job.id]))
        return followed

    def run(self, jobs: list[Job], estimates: dict[str, float], bar: tqdm,
            on_finished: Callable[[Job], None]) -> None:
        """Run `jobs` (in their order) to the end; `on_finished` after each one that succeeds."""
        pending = [j for j in jobs if not is_finished(self.study_dir, j)]
        done = {j.id for j in jobs if is_finished(self.study_dir, j)}
        running = self._followed(pending, estimates)
        credited = bar.n  # what earlier calls (the runs before the bench) have already filled
        recorded = time.time()
        try:
            while pending or running:
                for r in list(running):
                    code = r.launched.poll()
                    if code is None:
                        continue
                    running.remove(r)
                    self._record(r, time.time())
                    credited += r.estimate
                    if code == 0:
                        done.add(r.job.id)
                        on_finished(r.job)
                    else:
                        log = self.executor.log_path(r.job).relative_to(self.study_dir)
                        self.failed[r.job.id] = f"{self._last_lines(r.job)} ({log})"
                        bar.write(f"failed: {r.job.id}: {self.failed[r.job.id]}")
                for job in list(pending):
                    if any(d in self.failed for d in job.deps):
                        pending.remove(job)
                        self.failed[job.id] = "skipped: a run it needs failed"
                        credited += estimates[job.id]
                for job in startable(pending, [r.job for r in running], done, self.parallel):
                    pending.remove(job)
                    running.append(self._running(job, self.executor.start(job), estimates[job.id]))
                if not running and pending and not any(all(d in done for d in j.deps) for j in pending):
                    for job in pending:  # cannot happen with a queue from `expand`; never spin on it
                        self.failed[job.id] = "skipped: it needs a run that is not in the queue"
                    pending.clear()
                now = time.time()
                if now - recorded > RECORD_SECONDS:
                    for r in running:
                        self._record(r, now)
                    recorded = now
                bar.n = min(bar.total, credited + sum(min(r.seconds(now) - r.before, 0.95 * r.estimate)
                                                      for r in running))
                bar.set_postfix_str(f"{len(done)}/{len(done) + len(pending) + len(running)} runs; running "
                                    + (", ".join(r.job.id for r in running) or "-"), refresh=False)
                bar.update(0)  # redraws at most every mininterval (30 s into a log)
                if running:
                    time.sleep(POLL_SECONDS)
        finally:
            self._stop(running)

    def _stop(self, running: list[_Running]) -> None:
        """Interrupted (Ctrl-C, or an error of the study's own): ask every child run to stop as Ctrl-C does (each
        saves nothing more and leaves its last checkpoint), give them a while together, then kill what is left.
        Submitted jobs go on; the study started again follows them."""
        for r in running:
            r.launched.stop()
        deadline = time.time() + 30
        for r in running:
            r.launched.wait_stopped(max(0.1, deadline - time.time()))
            self._record(r, time.time())


def check_jobs(jobs: list[Job]) -> None:
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"two runs of the plan would share the folder runs/{duplicate}; rename an arm")
