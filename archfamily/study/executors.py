"""Where a study's jobs run: child processes of the study (`local`), or submitit jobs (`slurm`, `submitit-local`).

The study process stays the orchestrator whatever the executor: it decides what starts, follows each job to its
end and writes the results. An executor only starts a job's commands and says when they have ended. A job has
succeeded when the file its last command writes is there (its `done_file`), so nothing is read back from a
job but the files archfamily's own commands write (submitit's result pickles are never opened).

- `local`: each command a child process that dies with the study (`PR_SET_PDEATHSIG`), as before.
- `slurm`: one `sbatch` job per study job through submitit. Cluster jobs outlive the study process: each one's
  SLURM id is in its record (`jobs/<id>.json`), and a study started again follows the jobs still queued or
  running instead of submitting them twice; those that ended unfinished (pre-empted, timed out, failed) are
  submitted again and continue from their checkpoints (every command has `--resume`).
- `submitit-local`: submitit's local executor, the same submission path on this machine (what the tests run).
  Its jobs outlive the study process too, and are followed again by their process ids.

Jobs that measure latency (`exclusive`: a latency budget's member choice) always run through `local`, on the
machine that runs `archfamily study`, with nothing else of the study running there.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from archfamily.errors import SettingError, UserError
from archfamily.study.commands import log_failure, start_command
from archfamily.study.queue import SUBMITTED_ON, Job

EXECUTORS = ("local", *SUBMITTED_ON)
JOB_VARIABLE = "ARCHFAMILY_STUDY_JOB"  # the study job a submitit-local controller runs, in its environment


class Launched(Protocol):
    """A started job: `poll()` is None while it runs, then 0 (it finished) or another exit status."""

    submission: Optional[dict[str, str]]  # how a later study process finds it again; None: it dies with this one

    def poll(self) -> Optional[int]: ...

    def is_running(self) -> bool: ...  # running now (not queued): the seconds it is charged

    def stop(self) -> None: ...  # asked to stop by an interrupted study

    def wait_stopped(self, timeout: float) -> None: ...


class LocalJob:
    """A job's commands as child processes of the study, one after the other."""

    submission = None

    def __init__(self, study_dir: Path, job: Job, threads: int, log_path: Path) -> None:
        self.study_dir, self.job, self.threads, self.log_path = study_dir, job, threads, log_path
        self.command = -1
        self._start_next()

    def _start_next(self) -> None:
        self.command += 1
        self.process = start_command(self.job.commands[self.command], self.study_dir, self.log_path, self.threads)

    def poll(self) -> Optional[int]:
        code = self.process.poll()
        if code == 0 and self.command + 1 < len(self.job.commands):
            self._start_next()
            return None
        if code:
            log_failure(self.log_path, code)
        return code

    def is_running(self) -> bool:
        return True

    def stop(self) -> None:
        """As Ctrl-C does: the run saves nothing more and keeps its last checkpoint."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def wait_stopped(self, timeout: float) -> None:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class SubmittedJob:
    """A job submitted through submitit: ended when submitit says so; succeeded when its done file is there."""

    def __init__(self, study_dir: Path, job: Job, handle: Any, executor: str) -> None:
        self.study_dir, self.job, self.handle = study_dir, job, handle
        self.submission = {"executor": executor, "job_id": str(handle.job_id)}

    def _ended(self) -> bool:
        return self.handle.done()

    def poll(self) -> Optional[int]:
        if not self._ended():
            return None
        return 0 if (self.study_dir / self.job.done_file).is_file() else 1

    def is_running(self) -> bool:
        return self.handle.state not in ("PENDING", "REQUEUED", "CONFIGURING")

    def stop(self) -> None:
        """Nothing: a cluster job outlives the study, and the study started again follows it."""

    def wait_stopped(self, timeout: float) -> None:
        """Nothing to wait for (see `stop`)."""


class FollowedLocalJob(SubmittedJob):
    """A `submitit-local` job a previous study process started: followed by its controller's process id."""

    def __init__(self, study_dir: Path, job: Job, pid: int, folder: Path) -> None:
        self.study_dir, self.job, self.pid, self.folder = study_dir, job, pid, folder
        self.submission = {"executor": "submitit-local", "job_id": str(pid)}

    def _ended(self) -> bool:
        return not is_local_controller(self.pid, self.folder)

    def is_running(self) -> bool:
        return True


def _controllers_of(job_id: str) -> list[int]:
    """Processes whose environment names study job `job_id` (`JOB_VARIABLE`, set when it was submitted)."""
    found, marker = [], f"{JOB_VARIABLE}={job_id}".encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def is_local_controller(pid: int, folder: Path) -> bool:
    """`pid` is a live submitit local controller of the jobs in `folder` (not a reused process id, not a zombie)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return b"submitit.local._local" in cmdline and str(folder).encode() in cmdline and state != "Z"


_SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:+-]+")
_SBATCH_KEY = re.compile(r"[a-z][a-z0-9_-]*")
_SET_BY_OPTIONS = {"partition": "partition", "time": "time", "cpus_per_task": "cpus_per_task",
                   "gpus_per_node": "gpus_per_node", "mem": "mem_gb", "account": "account", "qos": "qos"}
_SET_BY_THE_STUDY = {"job_name": " (each job is named after its run)", "ntasks_per_node": ""}


@dataclass(frozen=True)
class ClusterOptions:
    """What each submitted job asks for, in SLURM's own words (submitit passes them to `sbatch`)."""

    partition: Optional[str] = None
    time: int = 240  # minutes
    cpus_per_task: int = 4
    gpus_per_node: int = 0
    mem_gb: Optional[float] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    additional: dict[str, str] = field(default_factory=dict)  # further #SBATCH KEY=VALUE

    def __post_init__(self) -> None:
        """Refuse what would break the sbatch file submitit writes (a newline, a key that is not a flag)."""
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None and not _SBATCH_VALUE.fullmatch(value):
                raise SettingError("{" + name + "} {value!r}: expected a SLURM name (letters, digits, - _ . ,)",
                                   value=value)
        for key, value in self.additional.items():
            if not _SBATCH_KEY.fullmatch(key) or "\n" in value or "\r" in value:
                raise SettingError("{sbatch} {key}={value!r}: expected an sbatch option name and a one-line value",
                                   key=key, value=value)
            name = key.replace("-", "_")
            if name in _SET_BY_OPTIONS:
                raise SettingError("{sbatch} {key}: set it with its own option ({" + _SET_BY_OPTIONS[name] + "})",
                                   key=key)
            if name in _SET_BY_THE_STUDY:
                raise SettingError("{sbatch} {key}: the study sets it{why}", key=key, why=_SET_BY_THE_STUDY[name])

    def slurm_parameters(self, job: Job) -> dict[str, Any]:
        """The parameters of submitit's SLURM executor for `job` (names as `sbatch` spells them)."""
        params: dict[str, Any] = {"job_name": f"archfamily-{job.id}", "time": self.time,
                                  "cpus_per_task": self.cpus_per_task, "ntasks_per_node": 1}
        for key, value in (("partition", self.partition), ("account", self.account), ("qos", self.qos),
                           ("gpus_per_node", self.gpus_per_node or None),
                           ("mem", None if self.mem_gb is None else f"{self.mem_gb:g}GB")):
            if value is not None:
                params[key] = value
        if self.additional:
            params["additional_parameters"] = dict(self.additional)
        return params

    def local_parameters(self) -> dict[str, Any]:
        return {"timeout_min": self.time, "gpus_per_node": self.gpus_per_node, "tasks_per_node": 1}


def sbatch_flags(options: ClusterOptions, job: Job, folder: Path) -> str:
    """The `#SBATCH` flags submitit would write for `job`, as one `sbatch` line (from submitit's own sbatch
    writer, so `--dry-run` shows what a real submission gets)."""
    from submitit.slurm.slurm import _make_sbatch_string

    text = _make_sbatch_string(command="archfamily", folder=folder, **options.slurm_parameters(job))
    return " ".join(["sbatch", *(line.split(None, 1)[1] for line in text.splitlines() if line.startswith("#SBATCH "))])


def require_submitit(executor: str, commands: bool = True) -> None:
    """One line naming what is missing for a submitit executor: the package, or (`commands`) SLURM's own."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SettingError("{executor} {name} needs submitit: pip install 'archfamily[cluster]'",
                           name=executor) from None
    if executor == "slurm" and commands:
        missing = [c for c in ("sbatch", "srun", "sacct") if shutil.which(c) is None]
        if missing:
            raise SettingError("{executor} slurm needs SLURM on this machine: {missing} not on the PATH",
                               missing=", ".join(missing))


class Executor:
    """Starts the study's jobs on `kind` and finds again the submitted jobs a previous study process left."""

    def __init__(self, kind: str, study_dir: Path, threads: int, options: ClusterOptions = ClusterOptions()) -> None:
        if kind not in EXECUTORS:
            raise UserError(f"unknown executor {kind!r}; one of {', '.join(EXECUTORS)}")
        if kind != "local":
            require_submitit(kind)
        self.kind, self.study_dir, self.threads, self.options = kind, study_dir, threads, options
        self.folder = (study_dir / "submitit").absolute()  # submitit's files (the pickled call, its stdout and
        # stderr), absolute as submitit spells it in a local controller's command line

    def log_path(self, job: Job) -> Path:
        return self.study_dir / "logs" / f"{job.id}.log"

    def start(self, job: Job) -> Launched:
        if self.kind == "local" or job.exclusive:  # a latency measurement runs here, alone (see the module doc)
            return LocalJob(self.study_dir, job, self.threads, self.log_path(job))
        import submitit

        from archfamily.study.cluster_job import JobCommands

        if self.kind == "slurm":
            executor: Any = submitit.SlurmExecutor(folder=self.folder)
            executor.update_parameters(**self.options.slurm_parameters(job))
        else:
            executor = submitit.LocalExecutor(folder=self.folder)
            executor.update_parameters(**self.options.local_parameters())
        os.environ[JOB_VARIABLE] = job.id  # in a local controller's environment: found again by `follow`
        try:
            handle = executor.submit(JobCommands(), str(self.study_dir.resolve()), job.commands,
                                     str(self.log_path(job).resolve()), self.threads, self.options.gpus_per_node)
        except (subprocess.CalledProcessError, OSError) as exc:  # sbatch refused it (a partition it does not know...)
            why = getattr(exc, "stderr", None) or getattr(exc, "output", None) or str(exc)
            why = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
            raise UserError(f"submitting run {job.id} failed: {why.strip().splitlines()[-1][:200] if why.strip() else exc}") \
                from None
        finally:
            os.environ.pop(JOB_VARIABLE, None)
        return SubmittedJob(self.study_dir, job, handle, self.kind)

    def follow(self, job: Job, submission: Optional[dict[str, str]]) -> Optional[Launched]:
        """The job a previous study process submitted (its record's `submission`), if it is still queued or
        running on this executor; None: submit it (again)."""
        if self.kind == "submitit-local":  # by its record, else (killed before it was recorded) by its environment
            recorded = [int(submission["job_id"])] if submission and submission["executor"] == self.kind else []
            pid = next((p for p in recorded + _controllers_of(job.id) if is_local_controller(p, self.folder)), None)
            return None if pid is None else FollowedLocalJob(self.study_dir, job, pid, self.folder)
        if submission is None or submission["executor"] != self.kind or self.kind == "local":
            return None
        job_id = submission["job_id"]
        import submitit

        handle = submitit.SlurmJob(folder=self.folder, job_id=job_id)
        return None if handle.done() else SubmittedJob(self.study_dir, job, handle, self.kind)
