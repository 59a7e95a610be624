"""Running one `archfamily` command of a study job: the process it runs in (under torchrun on several GPUs), its
log, and how it ended. Shared by the study's own child processes and by what a submitit job runs."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

DISTRIBUTED_COMMANDS = ("train", "derive")  # the commands that run under torchrun on a job with several GPUs


try:  # loaded here, not in the forked child: loading a library between fork and exec can deadlock
    _LIBC: Optional[ctypes.CDLL] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: be killed when `parent` dies, however it dies."""
    if _LIBC is None or not hasattr(_LIBC, "prctl"):
        return  # not Linux: a killed study may leave its children running
    _LIBC.prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def command_argv(args: list[str], gpus: int = 0) -> list[str]:
    """The process that runs `archfamily ARGS`: under torchrun, one process per GPU, when a training or pruning
    run has several GPUs."""
    if gpus > 1 and args[0] in DISTRIBUTED_COMMANDS:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus),
                "-m", "archfamily", *args]
    return [sys.executable, "-m", "archfamily", *args]


def start_command(args: list[str], study_dir: Path | str, log_path: Path, threads: int,
                  gpus: int = 0) -> subprocess.Popen:
    """`archfamily ARGS` started in the study folder with `threads` threads, its output appended to the job's log
    under a `$ archfamily ...` line; it dies with the process that starts it (so with the study, or with the
    submitit job that runs it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"\n$ archfamily {' '.join(args)}\n")
        log.flush()
        return subprocess.Popen(command_argv(args, gpus), cwd=study_dir, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                                preexec_fn=functools.partial(_die_with_parent, os.getpid()))


def run_job_commands(study_dir: str, commands: list[list[str]], log_path: str, threads: int, gpus: int) -> int:
    """A job's commands one after the other in the study folder, output appended to its log; the first
    failure's exit status, else 0. This is what a submitit job runs (`cluster_job.JobCommands`); each command
    dies with it, so a job that submitit stops (time-out, pre-emption) leaves nothing running."""
    for args in commands:
        code = start_command(args, study_dir, Path(log_path), threads, gpus).wait()
        if code != 0:
            log_failure(Path(log_path), code)
            return code
    return 0


def log_failure(log_path: Path, code: int) -> None:
    """The last line of a failed job's log, which the study reports it by: how its command ended."""
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"ended with exit status {code}"
    with open(log_path, "a") as log:
        log.write(f"archfamily study: the command above {how}\n")
