"""What a submitit job runs: one study job's commands, requeued by submitit when it is pre-empted or its time
limit comes (a separate module: it needs submitit, an optional extra, and submitit pickles it by reference)."""
from __future__ import annotations

import submitit

from archfamily.study.commands import run_job_commands


class JobCommands(submitit.helpers.Checkpointable):
    """A study job on a cluster. Checkpointable: on SLURM's pre-emption or time-out signal submitit submits this
    same call again (up to its `max_num_timeout`), and since every command has `--resume` it continues from the
    run's last checkpoint."""

    def __call__(self, study_dir: str, commands: list[list[str]], log_path: str, threads: int, gpus: int) -> int:
        return run_job_commands(study_dir, commands, log_path, threads, gpus)
