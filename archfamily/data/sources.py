"""Where a dataset's images are: every image file of an ImageFolder tree or a tar archive of one, by split and class.

A source is listed before anything is decoded, and only what is safely an image of the dataset is listed:
- in a folder, regular files only (a FIFO or a device named `x.jpg` would block or never end); symlinks are
  followed only while they stay inside the dataset's root, and a folder reached twice (a symlink loop) is an
  error, so a link to `/` can never walk the whole filesystem;
- in an archive, file members only; a member with an absolute name, a `..` part, or of a link type refuses the
  whole archive (a crafted archive must not make archfamily read outside of it);
- at most `MAX_FILES` files, so a wrong folder is refused in one line instead of listed for an hour.
Files whose suffix is not an image's (torchvision's `IMG_EXTENSIONS`) and hidden files are skipped, as
torchvision's `ImageFolder` skips them.
"""
from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from torchvision.datasets.folder import IMG_EXTENSIONS

from archfamily.errors import UserError

MAX_FILES = 5_000_000  # files a dataset may hold; ImageNet-21k has 14M, but that is not a dataset for a 2-core CPU
MAX_DEPTH = 16  # folders below the root
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Listing:
    """Every image of a source: `files[split]` is (name, class name) pairs sorted by class then name, where a
    name is a path (a folder) or a member name (an archive)."""

    kind: str  # folder or archive
    root: Path
    files: dict[str, list[tuple[str, str]]]


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMG_EXTENSIONS)


def _place(files: dict[str, list[tuple[str, str]]], parts: tuple[str, ...], name: str) -> None:
    """File `name` (whose path relative to the root is `parts`) under its split and class, if it is in one: any
    image below `split/class/`, as torchvision's `ImageFolder` finds them."""
    if len(parts) >= 3 and parts[0] in SPLITS and _is_image(parts[-1]):
        files.setdefault(parts[0], []).append((name, parts[1]))


def _walk(root: Path) -> Iterator[tuple[tuple[str, ...], Path]]:
    """(parts relative to `root`, path) of every regular file below `root`, `MAX_DEPTH` folders deep at most."""
    real_root = root.resolve()
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, parts = stack.pop()
        info = folder.stat()
        if (info.st_dev, info.st_ino) in seen:
            raise UserError(f"{folder}: a symlink loop (this folder is reached twice)")
        seen.add((info.st_dev, info.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise UserError(f"{folder}: cannot list it ({exc.strerror or exc})") from None
        for entry in entries:
            if not parts and entry.name not in SPLITS:  # only the splits' folders are the dataset's
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise UserError(f"{path}: a broken symlink or a symlink loop") from None
                if not target.is_relative_to(real_root):
                    raise UserError(f"{path}: a symlink out of the dataset's folder ({target})")
            try:
                info = path.stat()
            except OSError as exc:
                raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
            if stat.S_ISDIR(info.st_mode):
                if len(parts) >= MAX_DEPTH:
                    raise UserError(f"{path}: folders nest over {MAX_DEPTH} deep; is it the dataset's folder?")
                stack.append((path, (*parts, entry.name)))
            elif stat.S_ISREG(info.st_mode):
                yield (*parts, entry.name), path
            elif len(parts) >= 2 and _is_image(entry.name):
                raise UserError(f"{path}: not a regular file (a FIFO, socket or device), so not an image")


def list_folder(root: Path) -> Listing:
    files: dict[str, list[tuple[str, str]]] = {}
    for count, (parts, path) in enumerate(_walk(root), 1):
        if count > MAX_FILES:
            raise UserError(f"{root}: holds more than {MAX_FILES:,} files; is it the dataset's folder?")
        _place(files, parts, str(path))
    return Listing("folder", root, {k: sorted(v, key=lambda f: (f[1], f[0])) for k, v in files.items()})


def _checked_member(member: tarfile.TarInfo, archive: Path) -> bool:
    """Whether `member` is a file to list; raises for one that could reach outside the archive."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise UserError(f"{archive}: member {member.name!r:.80} has an absolute name or a '..' part; "
                        "archfamily reads only archives whose members stay inside them")
    if member.issym() or member.islnk():
        raise UserError(f"{archive}: member {member.name!r:.80} is a link; archfamily reads only archives of "
                        "plain files and folders")
    if not (member.isfile() or member.isdir()):
        raise UserError(f"{archive}: member {member.name!r:.80} is not a file or a folder")
    return member.isfile()


def list_archive(tar: tarfile.TarFile, archive: Path) -> Listing:
    """The images of an open archive whose members are `[top/]split/class/file`."""
    files: dict[str, list[tuple[str, str]]] = {}
    for count, member in enumerate(tar, 1):
        if count > MAX_FILES:
            raise UserError(f"{archive}: holds more than {MAX_FILES:,} members; is it the dataset's archive?")
        if _checked_member(member, archive):
            parts = PurePosixPath(member.name).parts
            _place(files, parts[-3:], member.name)
    return Listing("archive", archive, {k: sorted(v, key=lambda f: (f[1], f[0])) for k, v in files.items()})
