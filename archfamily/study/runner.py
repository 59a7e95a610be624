"""Run a study's queue: up to N archfamily commands at once, one progress bar, nothing lost to a kill.

Each job's commands run as child processes in the study folder (their output in `logs/<job>.log`), with
`--resume` always on, so a study killed at any moment and started again skips what is finished and continues
what is partial: a train run loses at most the epoch it was in, a derive run the prunes since its last
checkpoint. Children die with the study (Linux `PR_SET_PDEATHSIG`), so a killed study leaves no orphan writing
into a run folder that its restart also writes into.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tqdm import tqdm

from archfamily.checks import Fields, read_json
from archfamily.errors import UserError
from archfamily.limits import MAX_SECONDS
from archfamily.specs import ArchSpec
from archfamily.study.queue import Job, read_record, write_record

POLL_SECONDS = 0.5
RECORD_SECONDS = 30.0  # how often a running job's seconds are written down (a SIGKILL loses at most this)


try:  # loaded here, not in the forked child: loading a library between fork and exec can deadlock
    _LIBC: Optional[ctypes.CDLL] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: be killed when the study process (`parent`) dies, however it dies."""
    if _LIBC is None or not hasattr(_LIBC, "prctl"):
        return  # not Linux: a killed study may leave its children running
    _LIBC.prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the study died before prctl took effect
        os._exit(1)


def is_finished(study_dir: Path, job: Job) -> bool:
    return (study_dir / job.done_file).is_file()


def is_partial(study_dir: Path, job: Job) -> bool:
    return job.run_dir is not None and (study_dir / job.run_dir / "run.json").is_file() and not is_finished(study_dir, job)


def bench_is_current(study_dir: Path, jobs: list[Job], bench: Job) -> bool:
    """The bench's results were made by this command and are newer than every network it reads."""
    results = study_dir / "bench" / "results.json"
    record = read_record(study_dir, bench)
    if not results.is_file() or record is None or record["commands"] != bench.commands:
        return False
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
        m = Fields(read_json(metrics_file), str(metrics_file))
        return m.number("seconds", 0, MAX_SECONDS) if "seconds" in m.data else 0.0
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
    process: subprocess.Popen
    log: object
    command: int
    started: float
    estimate: float
    before: float = 0.0  # seconds earlier study invocations ran this job


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

    def __init__(self, study_dir: Path, parallel: int, threads: int) -> None:
        self.study_dir, self.parallel, self.threads = study_dir, parallel, threads
        self.failed: dict[str, str] = {}

    def _start(self, job: Job, command: int, estimate: float, previous: Optional[_Running] = None) -> _Running:
        """Start command `command` of `job`; `previous` is the job's running entry for its earlier command."""
        args = job.commands[command]
        log_path = self.study_dir / "logs" / f"{job.id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a")
        log.write(f"\n$ archfamily {' '.join(args)}\n")
        log.flush()
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        process = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=self.study_dir, env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=functools.partial(_die_with_parent, os.getpid()))
        if previous is not None:
            return _Running(job, process, log, command, previous.started, estimate, previous.before)
        record = read_record(self.study_dir, job)
        running = _Running(job, process, log, command, time.time(), estimate, record["seconds"] if record else 0.0)
        self._record(running, running.started)
        return running

    def _record(self, r: "_Running", now: float) -> None:
        """The job's commands and the seconds it has run, over every study invocation that ran it."""
        write_record(self.study_dir, r.job, r.before + now - r.started)

    def _last_line(self, job: Job) -> str:
        lines = (self.study_dir / "logs" / f"{job.id}.log").read_text(errors="replace").replace("\r", "\n").splitlines()
        return next((ln.strip() for ln in reversed(lines) if ln.strip()), "")

    def run(self, jobs: list[Job], estimates: dict[str, float], bar: tqdm,
            on_finished: Callable[[Job], None]) -> None:
        """Run `jobs` (in their order) to the end; `on_finished` after each one that succeeds."""
        pending = [j for j in jobs if not is_finished(self.study_dir, j)]
        done = {j.id for j in jobs if is_finished(self.study_dir, j)}
        running: list[_Running] = []
        credited = bar.n  # what earlier calls (the runs before the bench) have already filled
        recorded = time.time()
        try:
            while pending or running:
                for r in list(running):
                    code = r.process.poll()
                    if code is None:
                        continue
                    r.log.close()
                    running.remove(r)
                    if code == 0 and r.command + 1 < len(r.job.commands):
                        running.append(self._start(r.job, r.command + 1, r.estimate, r))
                        continue
                    self._record(r, time.time())
                    credited += r.estimate
                    if code == 0:
                        done.add(r.job.id)
                        on_finished(r.job)
                    else:
                        self.failed[r.job.id] = f"exit {code}: {self._last_line(r.job)} (logs/{r.job.id}.log)"
                        bar.write(f"failed: {r.job.id}: {self.failed[r.job.id]}")
                for job in list(pending):
                    if any(d in self.failed for d in job.deps):
                        pending.remove(job)
                        self.failed[job.id] = "skipped: a run it needs failed"
                        credited += estimates[job.id]
                for job in startable(pending, [r.job for r in running], done, self.parallel):
                    pending.remove(job)
                    running.append(self._start(job, 0, estimates[job.id]))
                if not running and pending and not any(all(d in done for d in j.deps) for j in pending):
                    for job in pending:  # cannot happen with a queue from `expand`; never spin on it
                        self.failed[job.id] = "skipped: it needs a run that is not in the queue"
                    pending.clear()
                now = time.time()
                if now - recorded > RECORD_SECONDS:
                    for r in running:
                        self._record(r, now)
                    recorded = now
                bar.n = min(bar.total, credited + sum(min(now - r.started, 0.95 * r.estimate) for r in running))
                bar.set_postfix_str(f"{len(done)}/{len(done) + len(pending) + len(running)} runs; running "
                                    + (", ".join(r.job.id for r in running) or "-"), refresh=False)
                bar.update(0)  # redraws at most every mininterval (30 s into a log)
                if running:
                    time.sleep(POLL_SECONDS)
        finally:
            self._stop(running)

    def _stop(self, running: list[_Running]) -> None:
        """Interrupted (Ctrl-C, or an error of the study's own): ask every run to stop as Ctrl-C does (each saves
        nothing more and leaves its last checkpoint), give them a while together, then kill what is left."""
        for r in running:
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGINT)
        deadline = time.time() + 30
        for r in running:
            try:
                r.process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait()
            r.log.close()
            self._record(r, time.time())


def check_jobs(jobs: list[Job]) -> None:
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"two runs of the plan would share the folder runs/{duplicate}; rename an arm")
