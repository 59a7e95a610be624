"""A user's image-classification dataset as uint8 tensors at the training resolution, decoded once and cached.

Sources, in the order they are recognised:
- `None`: the CIFAR-10 archive vendored in this package (`datasets/cifar10-jpeg.tar.gz`), so a fresh clone
  needs no download;
- a `.tar`/`.tar.gz` of an ImageFolder tree;
- torchvision's `cifar-10-batches-py/` folder (or its parent; `data.cifar`);
- an ImageFolder tree: `train/<class>/*` and a held-out split, `val/` (and optionally `test/`) or `test/`.

Classes are the folder names of `train/`, sorted (torchvision's and timm's order), the same set in every split.
The split figures are measured on during training and pruning is `val/`, else one carved from `train/` by
`val_fraction` (the same images for every run: per class, by a fixed permutation), else `test/` (CIFAR-10's
layout). Where a `val/` split exists, `test/` is kept apart (`final_x`) and measured once at the end.

Images are decoded with Pillow, converted to RGB as timm does, and brought to the input size by timm's own
evaluation transform (`timm.data.create_transform`: the shorter side resized to size / crop_pct, then a centre
crop), so an exported network's cfg reproduces exactly what it was measured on; training images are kept whole
(crop_pct 1). Images already at the input size are kept as they are. Normalisation is the training split's own
per-channel mean and std (over the whole split, whatever the subset), or given (a pretrained base's cfg).

Decoded tensors are cached as safetensors under `ARCHFAMILY_CACHE` (default `~/.cache/archfamily`), keyed by
the source's files (path, size, mtime) and every setting that changes them. A source that cannot be read is
one line naming the file; nothing is cached then.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Optional, Sequence, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from archfamily.data.cifar import DEFAULT_ARCHIVE, find_batches, read_batches
from archfamily.files import cache_dir
from archfamily.data.images import open_image, read_rgb
from archfamily.data.sources import Listing, list_archive, list_folder
from archfamily.errors import SettingError, UserError
from archfamily.files import atomic_save_safetensors, atomic_write_json
from archfamily.progress import progress_bar
from archfamily.seeding import generator

if TYPE_CHECKING:
    from archfamily.data.streaming import FileSplit

MAX_MEMORY_BYTES = 16 * 2**30  # decoded pixels the in-memory path holds; a larger dataset needs a smaller size
SMALL_IMAGES = 128  # images that all share one size up to this side train at it; larger ones at `LARGE_DEFAULT`
LARGE_DEFAULT = 224
DATA_PATHS = ("auto", "memory", "stream")
PROBED_IMAGES = 1000  # images whose size a streamed dataset's default input size is read from
STATS_SAMPLE = 5000  # training images a streamed dataset's statistics are measured on


@dataclass
class ImageData:
    """A dataset's splits as uint8 NCHW images and int64 labels, with the facts every network trained on it
    carries (`facts`).

    Each split's images are uint8 NCHW tensors, or on the streaming path `FileSplit`s of their files (`streams`).
    `test_x`/`test_y` are the held-out split figures are measured on during training and pruning, named by
    `split` (`val`, or `test` where the data has no validation split); `final_x`/`final_y` is `test/` when a
    validation split exists, measured once at the end.
    """

    train_x: "torch.Tensor | FileSplit"
    train_y: torch.Tensor
    test_x: "torch.Tensor | FileSplit"
    test_y: torch.Tensor
    source: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    split: str = "test"
    crop_pct: float = 1.0
    final_x: "Optional[torch.Tensor | FileSplit]" = None
    final_y: Optional[torch.Tensor] = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> int:
        return self.train_x.input_size if self.streams else int(self.train_x.shape[-1])

    @property
    def streams(self) -> bool:
        """Whether its images are read from their files as training goes (`data.streaming`), not held decoded."""
        return not isinstance(self.train_x, torch.Tensor)

    def facts(self) -> dict[str, object]:
        """What a network trained on this data needs to be used (timm's pretrained cfg fields and the split its
        figures are on): written into run.json, family.json, model files and exported configs."""
        return {"num_classes": self.num_classes, "label_names": list(self.classes),
                "input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "crop_pct": self.crop_pct, "split": self.split}


def parse_input_size(text: Optional[str]) -> Optional[int]:
    """`--input-size 64` (or `64x64`); a non-square size is refused, since every network here takes squares."""
    if text is None:
        return None
    parts = str(text).lower().split("x")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts) or len(set(int(p) for p in parts)) != 1:
        raise SettingError("{input_size} must be a side such as 64 or a square such as 64x64, got {text!r}", text=text)
    size = int(parts[0])
    if not 8 <= size <= 1024:
        raise SettingError("{input_size} must be from 8 to 1024 pixels, got {size}", size=size)
    return size


def check_source(source: Path) -> None:
    """One line when `source` is no dataset archfamily reads (a study plan checks its data before any run): not a
    cifar-10-batches-py folder, a .tar/.tar.gz archive, or a folder with train/."""
    if not source.exists():
        raise UserError(f"dataset not found: {source}")
    if find_batches(source) is not None:
        return
    if source.is_file():
        if not source.name.endswith((".tar", ".tar.gz", ".tgz")):
            raise UserError(f"not a dataset: {source} (expected a folder or a .tar/.tar.gz archive)")
    elif not (source / "train").is_dir():
        raise UserError(f"not a dataset folder: {source} (expected train/<class>/ and val/ or test/ subfolders, or "
                        "cifar-10-batches-py/)")


def describe_data(path: Optional[str], input_size: Optional[int], val_fraction: Optional[float],
                  default_size: int = LARGE_DEFAULT) -> tuple[int, int]:
    """(classes, input size) of a dataset as `load_data` will read it, from its listing and its images' headers
    alone: what a study plan needs to size its networks before any run decodes an image."""
    source = Path(path).expanduser() if path else DEFAULT_ARCHIVE
    check_source(source)
    if find_batches(source) is not None:
        return 10, input_size or 32
    if source.is_file():
        try:
            with tarfile.open(source, "r:*") as tar:
                listing = list_archive(tar, source)
                opener = _archive_opener(tar, listing) if input_size is None else None
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise UserError(f"cannot read dataset archive {source}: {str(exc).splitlines()[0][:160]}") from None
    else:
        listing, opener = list_folder(source), (lambda name: name)
    chosen = _choose(listing, None, None, val_fraction)
    prefix = f"{listing.root}: member " if listing.kind == "archive" else ""
    size = input_size or _image_size(opener, chosen.names()[:PROBED_IMAGES], prefix) or default_size
    return len(chosen.classes), size


def load_data(path: Optional[str] = None, subset: Optional[int] = None, test_subset: Optional[int] = None,
              input_size: Optional[int] = None, val_fraction: Optional[float] = None,
              norm: Optional[tuple[Sequence[float], Sequence[float]]] = None, crop_pct: float = 1.0,
              default_size: int = LARGE_DEFAULT, data_path: str = "auto") -> ImageData:
    """Load (from cache when possible) a dataset; `subset`/`test_subset` keep the first n/classes images per class.

    `input_size` None: the images' own size where they all share one of at most `SMALL_IMAGES`, else
    `default_size` (a timm base's pretrained cfg's). `norm` is (mean, std) to normalise with instead of the
    training split's own; `crop_pct` is timm's, for the held-out splits. `data_path`: `memory` decodes every image
    once into memory, `stream` reads a folder's images as training goes (`data.streaming`), `auto` streams a
    folder whose decoded images would pass `MAX_MEMORY_BYTES`.
    """
    if data_path not in DATA_PATHS:
        raise SettingError("{data_path} must be one of {paths}, got {got!r}", paths=", ".join(DATA_PATHS), got=data_path)
    if val_fraction is not None and not 0 < val_fraction < 1:
        raise SettingError("{val_fraction} must be above 0 and below 1, got {f:g}", f=val_fraction)
    source = Path(path).expanduser() if path else DEFAULT_ARCHIVE
    check_source(source)
    label = f"built-in:{DEFAULT_ARCHIVE.name}" if path is None else str(source)
    batches = find_batches(source)
    if batches is not None:
        return _from_batches(batches, label, subset, test_subset, input_size, val_fraction, norm)
    settings = json.dumps([subset, test_subset, input_size, val_fraction, norm and [list(norm[0]), list(norm[1])],
                           crop_pct, default_size])
    listing = None if source.is_file() else list_folder(source)  # listed safely before any file is read
    signature = _signature([source] if listing is None else
                           [Path(name) for items in listing.files.values() for name, _ in items])
    cached = cache_dir() / f"images-{hashlib.sha256(f'{signature}|{settings}'.encode()).hexdigest()[:16]}.safetensors"
    if cached.is_file() and data_path != "stream":
        return _read_cache(cached, label)
    decode = functools.partial(_decode_listing, label=label, stats_key=signature, subset=subset,
                               test_subset=test_subset, input_size=input_size, val_fraction=val_fraction, norm=norm,
                               crop_pct=crop_pct, default_size=default_size)
    chosen = None
    if listing is not None and data_path != "memory":
        chosen = _choose(listing, subset, test_subset, val_fraction)
        size = input_size or _image_size(lambda n: n, [n for n in chosen.names()][:PROBED_IMAGES], "") or default_size
        if data_path == "stream" or not _fits_in_memory(chosen.counts(), size):
            return _streamed(chosen, label, signature, size, norm, crop_pct)
    if data_path == "stream":
        raise SettingError("{data_path} stream reads a folder; extract the archive {path} first", path=source)
    if listing is None:
        try:
            with tarfile.open(source, "r:*") as tar:
                listing = list_archive(tar, source)
                data = decode(listing, _archive_opener(tar, listing))
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:  # gzip's and zlib's errors among them
            raise UserError(f"cannot read dataset archive {source}: {str(exc).splitlines()[0][:160]}") from None
    else:
        data = decode(listing, lambda name: name, chosen=chosen)
    _write_cache(cached, data)
    return data


def _signature(files: list[Path]) -> str:
    """Path, size and mtime of the source's files (an archive, or a folder's images), so any change to them
    misses the cache."""
    return "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def _archive_opener(tar: tarfile.TarFile, listing: Listing) -> Callable[[str], BinaryIO]:
    """Every listed image's bytes, read in one pass in the archive's order (a gzip stream seeks back only by
    reading again from its start)."""
    wanted = {name for items in listing.files.values() for name, _ in items}
    contents: dict[str, bytes] = {}
    for member in tar:
        if member.name in wanted:
            handle = tar.extractfile(member)
            contents[member.name] = handle.read() if handle is not None else b""
    return lambda name: io.BytesIO(contents[name])


def _splits(listing: Listing, val_fraction: Optional[float]) -> tuple[dict[str, list[tuple[str, str]]], str]:
    """The train, held-out and (optional) final splits of a listing, and the held-out split's name."""
    files, where = listing.files, listing.root
    if not files.get("train"):
        raise UserError(f"{where}: no images under train/<class>/")
    if "val" in files and val_fraction is not None:
        raise SettingError("{val_fraction} carves a validation split from train/; {path} has val/ already",
                           path=where)
    if val_fraction is not None:
        train, val = _carve(files["train"], val_fraction)
        return {"train": train, "held": val, **({"final": files["test"]} if "test" in files else {})}, "val"
    if "val" in files:
        return {"train": files["train"], "held": files["val"], **({"final": files["test"]} if "test" in files else {})}, \
            "val"
    if "test" in files:
        return {"train": files["train"], "held": files["test"]}, "test"
    raise UserError(f"{where}: no held-out split: add val/<class>/ (or test/<class>/), or pass --val-fraction")


def _carve(train: list[tuple[str, str]], fraction: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, val): `fraction` of each class's images (at least one, never all) as validation, chosen by a
    permutation seeded per class position, so the same folder always gives the same split."""
    by_class: dict[str, list[tuple[str, str]]] = {}
    for item in train:
        by_class.setdefault(item[1], []).append(item)
    kept, val = [], []
    for i, (name, items) in enumerate(sorted(by_class.items())):
        if len(items) < 2:
            raise UserError(f"class {name!r} has {len(items)} training image; --val-fraction needs at least 2 per class")
        n_val = min(len(items) - 1, max(1, round(fraction * len(items))))
        order = torch.randperm(len(items), generator=generator(0, 5, i)).tolist()
        chosen = set(order[:n_val])
        val += [items[j] for j in range(len(items)) if j in chosen]
        kept += [items[j] for j in range(len(items)) if j not in chosen]
    return kept, val


_FOLDERS = {"train": "train/", "held": "validation", "final": "test/"}  # the splits' roles, as a user knows them


def _check_classes(splits: dict[str, list[tuple[str, str]]], where: Path) -> tuple[str, ...]:
    classes = tuple(sorted({c for _, c in splits["train"]}))
    if len(classes) < 2:
        raise UserError(f"{where}: train/ holds {len(classes)} class; a classifier needs at least 2")
    for split, items in splits.items():
        found = {c for _, c in items}
        if not items:
            raise UserError(f"{where}: the {split} split holds no images")
        if found != set(classes):
            missing, extra = sorted(set(classes) - found), sorted(found - set(classes))
            what = f"lacks {', '.join(missing[:3])}" if missing else f"has classes train/ lacks: {', '.join(extra[:3])}"
            raise UserError(f"{where}: the {_FOLDERS[split]} split {what}")
    return classes


def _take_per_class(labels: Sequence[int], n: Optional[int], num_classes: int) -> list[int]:
    """Indices of the first n // num_classes items of each class, in their original order."""
    if n is None:
        return list(range(len(labels)))
    per_class, seen, keep = n // num_classes, [0] * num_classes, []
    for i, y in enumerate(labels):
        if seen[y] < per_class:
            seen[y] += 1
            keep.append(i)
    return keep


def _check_subsets(subset: Optional[int], test_subset: Optional[int], num_classes: int) -> None:
    for n, what in ((subset, "subset"), (test_subset, "test_subset")):
        if n is not None and n < num_classes:
            raise SettingError("{" + what + "} must be at least {k} (one image per class), got {n}", k=num_classes,
                               n=n)


def _image_size(opener: Callable[[str], Union[str, BinaryIO]], names: list[str], prefix: str) -> Optional[int]:
    """The side every image shares, when they are all one square size of at most `SMALL_IMAGES`; else None."""
    sizes = set()
    for name in names:
        with open_image(opener(name), prefix + name) as img:
            sizes.add(img.size)
        if len(sizes) > 1:
            return None
    (w, h), = sizes
    return w if w == h and w <= SMALL_IMAGES else None


def _decode(opener: Callable[[str], Union[str, BinaryIO]], names: list[str], size: int, crop_pct: float,
            desc: str, prefix: str = "") -> torch.Tensor:
    """One uint8 NCHW tensor of `names` at `size`: as they are where they have that size, else through timm's
    evaluation transform (shorter side to size / crop_pct, centre crop)."""
    from timm.data import create_transform

    transform = create_transform(size, is_training=False, crop_pct=crop_pct, interpolation="bilinear",
                                 use_prefetcher=True)  # no normalisation: uint8 CHW
    images = torch.empty((len(names), 3, size, size), dtype=torch.uint8)
    with progress_bar(total=len(names), desc=desc, unit="img", disable=len(names) < 5000) as bar:
        for i, name in enumerate(names):
            rgb = read_rgb(opener(name), prefix + name)
            if rgb.size == (size, size):
                images[i] = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(size, size, 3) \
                    .permute(2, 0, 1)
            else:
                images[i] = transform(rgb)
            bar.update(1)
    return images


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1], to 4 decimals (the figure's own precision); a channel
    that never varies is divided by 1, not 0."""
    x = images.permute(1, 0, 2, 3).reshape(images.shape[1], -1).double() / 255
    std = tuple(round(float(v), 4) for v in x.std(1, correction=0))
    return tuple(round(float(v), 4) for v in x.mean(1)), tuple(s or 1.0 for s in std)


def _train_stats(key: str, size: int, images: Callable[[], torch.Tensor]) -> tuple[tuple[float, ...], ...]:
    """The whole training split's `channel_stats` at `size`, measured once per source (every subset of it
    normalises alike) and cached beside the decoded images."""
    path = cache_dir() / f"stats-{hashlib.sha256(f'{key}|{size}'.encode()).hexdigest()[:16]}.json"
    try:
        mean, std = json.loads(path.read_text())
        return tuple(mean), tuple(std)
    except (OSError, ValueError, TypeError):
        stats = channel_stats(images())
        atomic_write_json(path, stats)
        return stats


def _fits_in_memory(counts: list[int], size: int) -> bool:
    return sum(counts) * 3 * size * size <= MAX_MEMORY_BYTES


@dataclass(frozen=True)
class _Chosen:
    """The images a run uses: per split role (train, held, final), their names and labels; the classes, the
    held-out split's name and the listing they came from."""

    listing: Listing
    classes: tuple[str, ...]
    held_name: str
    splits: dict[str, tuple[list[str], torch.Tensor]]
    train_all: list[str]  # every training image, whatever the subset: the statistics are the whole split's

    def names(self) -> list[str]:
        return [n for names, _ in self.splits.values() for n in names]

    def counts(self) -> list[int]:
        return [len(names) for names, _ in self.splits.values()]


def _choose(listing: Listing, subset: Optional[int], test_subset: Optional[int],
            val_fraction: Optional[float]) -> _Chosen:
    splits, held_name = _splits(listing, val_fraction)
    classes = _check_classes(splits, listing.root)
    _check_subsets(subset, test_subset, len(classes))
    index = {c: i for i, c in enumerate(classes)}
    chosen = {}
    for split, items in splits.items():
        labels = [index[c] for _, c in items]
        keep = _take_per_class(labels, subset if split == "train" else test_subset, len(classes))
        chosen[split] = ([items[i][0] for i in keep], torch.tensor([labels[i] for i in keep], dtype=torch.int64))
    return _Chosen(listing, classes, held_name, chosen, [n for n, _ in splits["train"]])


def _norm(norm: Optional[tuple[Sequence[float], Sequence[float]]],
          measure: Callable[[], tuple[tuple[float, ...], tuple[float, ...]]]) -> tuple[tuple[float, ...], ...]:
    if norm is None:
        return measure()
    return tuple(float(v) for v in norm[0]), tuple(float(v) for v in norm[1])


def _decode_listing(listing: Listing, opener: Callable[[str], Union[str, BinaryIO]], *, label: str, stats_key: str,
                    subset: Optional[int], test_subset: Optional[int], input_size: Optional[int],
                    val_fraction: Optional[float], norm: Optional[tuple[Sequence[float], Sequence[float]]],
                    crop_pct: float, default_size: int, chosen: Optional[_Chosen] = None) -> ImageData:
    """The in-memory path: every chosen image decoded at the training size (`chosen`: as the caller chose them)."""
    chosen = chosen or _choose(listing, subset, test_subset, val_fraction)
    prefix = f"{listing.root}: member " if listing.kind == "archive" else ""  # errors name the archive too
    size = input_size or _image_size(opener, chosen.names(), prefix) or default_size
    if not _fits_in_memory(chosen.counts(), size):
        total = sum(chosen.counts())
        raise UserError(f"{listing.root}: {total:,} images at {size}x{size} take "
                        f"{3 * size * size * total / 2**30:.0f} GiB decoded, over the in-memory path's "
                        f"{MAX_MEMORY_BYTES / 2**30:.0f} GiB; stream them (--data-path stream, from a folder) or use "
                        "--input-size or --subset")
    tensors = {split: _decode(opener, names, size, 1.0 if split == "train" else crop_pct, f"decode {split}", prefix)
               for split, (names, _) in chosen.splits.items()}
    mean, std = _norm(norm, lambda: _train_stats(stats_key, size, lambda: tensors["train"] if subset is None else
                                                 _decode(opener, chosen.train_all, size, 1.0,
                                                         "decode train (statistics)", prefix)))
    held, final = chosen.splits["held"], chosen.splits.get("final")
    return ImageData(tensors["train"], chosen.splits["train"][1], tensors["held"], held[1], label, chosen.classes,
                     mean, std, chosen.held_name, crop_pct, tensors.get("final"), final[1] if final else None)


def _streamed(chosen: _Chosen, label: str, stats_key: str, size: int,
              norm: Optional[tuple[Sequence[float], Sequence[float]]], crop_pct: float) -> ImageData:
    """The streaming path: the chosen images as `FileSplit`s, normalised with the statistics of an even sample of
    at most `STATS_SAMPLE` training images (decoding a whole split that does not fit in memory is a pass of
    its own)."""
    from archfamily.data.streaming import FileSplit

    step = max(1, len(chosen.train_all) // STATS_SAMPLE)
    mean, std = _norm(norm, lambda: _train_stats(stats_key, size, lambda: _decode(
        lambda n: n, chosen.train_all[::step], size, 1.0, "decode train (statistics)")))
    splits = {role: FileSplit(tuple(names), labels, size, 1.0 if role == "train" else crop_pct)
              for role, (names, labels) in chosen.splits.items()}
    final = splits.get("final")
    return ImageData(splits["train"], splits["train"].labels, splits["held"], splits["held"].labels, label,
                     chosen.classes, mean, std, chosen.held_name, crop_pct, final,
                     final.labels if final is not None else None)


def _from_batches(root: Path, label: str, subset: Optional[int], test_subset: Optional[int],
                  input_size: Optional[int], val_fraction: Optional[float],
                  norm: Optional[tuple[Sequence[float], Sequence[float]]]) -> ImageData:
    """torchvision's CIFAR-10 batch files: 32x32, ten classes, train and test."""
    from archfamily.data.cifar import CLASSES

    if input_size not in (None, 32) or val_fraction is not None:
        raise UserError(f"{root}: cifar-10-batches-py is read at 32x32 with its test split; for --input-size or "
                        "--val-fraction, use the vendored archive or an ImageFolder copy")
    train_x, train_y, test_x, test_y = read_batches(root)
    keep = _take_per_class(train_y.tolist(), subset, 10)
    keep_test = _take_per_class(test_y.tolist(), test_subset, 10)
    _check_subsets(subset, test_subset, 10)
    mean, std = (tuple(norm[0]), tuple(norm[1])) if norm else channel_stats(train_x)
    return ImageData(train_x[keep], train_y[keep], test_x[keep_test], test_y[keep_test], label, CLASSES, mean, std)


_TENSORS = ("train_x", "train_y", "test_x", "test_y", "final_x", "final_y")


def _write_cache(path: Path, data: ImageData) -> None:
    tensors = {k: getattr(data, k) for k in _TENSORS if getattr(data, k) is not None}
    atomic_save_safetensors(tensors, path, {"facts": json.dumps(data.facts())})


def _read_cache(path: Path, label: str) -> ImageData:
    t = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        facts = json.loads((fh.metadata() or {})["facts"])
    return ImageData(t["train_x"], t["train_y"], t["test_x"], t["test_y"], label, tuple(facts["label_names"]),
                     tuple(facts["mean"]), tuple(facts["std"]), facts["split"], facts["crop_pct"],
                     t.get("final_x"), t.get("final_y"))


def in_memory(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
              source: str, classes: Optional[Sequence[str]] = None) -> ImageData:
    """A dataset of tensors already in memory (benchmarks, tests): its classes numbered from the labels unless
    named, and normalised with its own training split's statistics."""
    names = tuple(classes) if classes is not None else tuple(str(i) for i in range(int(train_y.max()) + 1))
    mean, std = channel_stats(train_x)
    return ImageData(train_x, train_y, test_x, test_y, source, names, mean, std)
