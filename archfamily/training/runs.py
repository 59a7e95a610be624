"""Run folders: one run per `--out`, and a resumed run must have the settings it started with."""
from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from archfamily import __version__
from archfamily.training.distributed import DistContext, init_distributed, shutdown_distributed
from archfamily.checks import Fields, read_json
from archfamily.errors import SettingError, UserError
from archfamily.files import atomic_write_json, remove_temporaries
from archfamily.training.precision import cpu_has_bf16, cpu_model, resolve_precision


# Settings added later whose value then was this: a run.json without them ran with it.
_EARLIER_DEFAULTS = {"precision": "fp32", "data_path": "auto"}


def _setting(config: dict[str, Any], key: str) -> Any:
    """A setting as compared on resume: unset (None, empty, a flag left off, or the value every run had before
    the setting existed) equals absent, so a run.json written before a setting existed still resumes under the
    version that added it."""
    value = config.get(key)
    return None if value is False or value in ([], {}, "") or value == _EARLIER_DEFAULTS.get(key, ()) else value


def recorded_setting(out: Path, key: str) -> Any:
    """The value run.json in `out` records for setting `key` (its earlier default if the file predates it);
    None when there is no run there. A damaged run.json is left for `start_run` to refuse."""
    run_file = out / "run.json"
    if not run_file.is_file():
        return None
    try:
        config = Fields(read_json(run_file), str(run_file), ("config",)).obj("config").data
    except UserError:
        return None
    return config.get(key, _EARLIER_DEFAULTS.get(key)) if isinstance(config, dict) else None


def run_precision(requested: str, device: torch.device, out: Path, resume: bool) -> str:
    """The precision a run in `out` trains in: `requested` resolved on `device`, `auto` keeping what a resumed
    run recorded (what run.json then holds)."""
    return resolve_precision(requested, device, recorded_setting(out, "precision") if resume else None)


def _check_run_dir(out: Path, config: dict[str, Any], resume: bool) -> None:
    """Refuse to mix runs in one folder; write nothing. `config` is as run.json reads back."""
    run_file = out / "run.json"
    if out.exists() and not out.is_dir():
        raise SettingError("{out} {path} exists and is not a folder", path=out)
    if run_file.is_file():
        previous = Fields(read_json(run_file), str(run_file), ("config",)).obj("config").data
        if not resume:
            raise SettingError("{out} {path} already holds a run; pass {resume} to continue it, or choose another "
                               "{out}", path=out)
        changed = sorted(k for k in set(config) | set(previous) if _setting(previous, k) != _setting(config, k))
        if changed:
            raise SettingError("{out} {path} holds a run with other settings ({changed}); cannot resume it", path=out,
                               changed=", ".join(changed))
    elif out.is_dir() and any(p.name != ".lock" for p in out.iterdir()):
        raise SettingError("{out} {path} is not empty and holds no archfamily run; choose another {out}", path=out)


_LOCKS: dict[Path, int] = {}  # run folder -> open lock file; the kernel drops a lock when its process dies


def _lock_run_dir(out: Path) -> None:
    """Hold `out/.lock` while this process writes the run, so two processes never write one run folder (a study
    restarted while a run it started is still going, a command typed twice). Within one process the lock is
    taken once and kept until `finish_run`, so an interrupted run can be resumed in the same process."""
    out.mkdir(parents=True, exist_ok=True)
    key = out.resolve()
    if key in _LOCKS:
        return
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SettingError("{out} {path} is in use by another archfamily process; wait for it or stop it",
                           path=out) from None
    _LOCKS[key] = fd


def _unlock_run_dir(out: Path) -> None:
    fd = _LOCKS.pop(out.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the file releases the lock


def provenance(command: list[str], device: torch.device, world_size: int) -> dict[str, Any]:
    return {
        "archfamily": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "command": command, "device": str(device), "world_size": world_size, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "cpu": cpu_model(), "cpu_bf16": cpu_has_bf16(),  # the figures' machine
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def start_run(out: Path, config: dict[str, Any], resume: bool, device: torch.device,
              command: list[str]) -> tuple[DistContext, dict[str, Any]]:
    """Join DDP if launched so, check --out on every rank, then record the settings once (rank 0).

    A resumed run keeps the provenance of its start.
    """
    config = json.loads(json.dumps(config))  # as run.json reads back: tuples become lists
    dist_ctx = init_distributed(device)
    _check_run_dir(out, config, resume)
    if dist_ctx.is_main:
        _lock_run_dir(out)
        _check_run_dir(out, config, resume)  # again, now that no other process can be writing it
    if dist_ctx.enabled:
        torch.distributed.barrier()  # every rank checks --out before rank 0 writes to it
    prov = provenance(command, device, dist_ctx.world)
    if dist_ctx.is_main and (out / "run.json").is_file():  # resuming: what a killed write left is of no use
        remove_temporaries(out)
    if dist_ctx.is_main and not (out / "run.json").is_file():
        atomic_write_json(out / "run.json", {"config": config, "provenance": prov})
    return dist_ctx, prov


def finish_run(out: Path, dist_ctx: DistContext) -> None:
    """The run is complete: its resumable checkpoints are no longer needed, nor is the process group."""
    if dist_ctx.is_main:
        shutil.rmtree(out / ".checkpoints", ignore_errors=True)
        _unlock_run_dir(out)
    shutdown_distributed(dist_ctx)
