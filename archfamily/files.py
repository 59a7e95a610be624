"""Atomic file writes: a killed process leaves either the old file or the new one, never half of one; and
`cache_dir`, where archfamily caches what it measured or decoded (`$ARCHFAMILY_CACHE`)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from archfamily.errors import UserError

if TYPE_CHECKING:
    import torch


def cache_dir() -> Path:
    return Path(os.environ.get("ARCHFAMILY_CACHE", Path.home() / ".cache" / "archfamily"))


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Run `write(tmp)` on a temporary path beside `path`, then move it into place. A place that cannot be
    written (no permission, a file where a folder should be, a full disk) is the user's to fix: a one-line
    error naming it."""
    path = Path(path)
    tmp: Optional[str] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"{path}: cannot write it ({exc.strerror or exc})") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def atomic_save_safetensors(tensors: dict[str, "torch.Tensor"], path: Path,
                            metadata: Optional[dict[str, str]] = None) -> None:
    """`safetensors.torch.save_file`, atomically; tensors are made contiguous CPU copies first."""
    from safetensors.torch import save_file  # imported here so JSON-only callers never load torch

    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=metadata))


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete what writes killed mid-way left behind in `folder` (and below it): `atomic_write`'s temporaries.

    Call it only where no write can be under way, e.g. when a run resumes; returns what it removed.
    """
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def sha256_of(path: Path) -> str:
    """A file's sha256, hex: what run.json and a model's pretrained cfg record to know the file again."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
