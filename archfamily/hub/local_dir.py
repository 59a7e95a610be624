"""Reading an `archfamily export` folder before timm does, for `timm.create_model("local-dir:DIR")`.

timm reads a folder's config.json as it finds it: a list or null at the top fails inside timm, deep nesting is a
RecursionError, `model_args` go to the entrypoint unread (`pretrained_cfg_overlay` there is a TypeError, and
`checkpoint_path` makes the load open whatever file it names), and `pretrained_cfg` may point the weights anywhere
(a pickle, a hub id) or be ignored without a word. So once `read_exports_first()` has run (importing `archfamily.zoo`
runs it), a folder archfamily exported (its model.safetensors is an archfamily model file, or its config.json
names an `archfamily_` architecture) is read here, and any other folder by timm as before.

`read_export` checks config.json whole: decoded at the edge as every file archfamily reads (`checks.read_json`:
size, nesting, UTF-8, no NaN), every field one `archfamily export` writes and of its type and range, `architecture`
one of archfamily's timm models, `model_args` the fields of a spec (read by the spec's own check) and the head's
pooling, and `pretrained_cfg` the fields archfamily writes and no others, so no field names weights elsewhere. The
weights are the folder's own model.safetensors, an archfamily model file of the network `model_args` describe.
Each failure is one `ValueError` naming the file and the field.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from safetensors import SafetensorError, safe_open

from archfamily.anycnn.keywords import WEIGHT_KEYWORDS
from archfamily.checks import Fields, read_json, show
from archfamily.errors import UserError
from archfamily.families import family_names, load_lazy_families
from archfamily.hub.timm_models import UNTRAINED, cifar_cfg, model_args, spec_from_model_args
from archfamily.models.checkpoint import MODEL_FORMAT, read_model_spec
from archfamily.specs import MAX_CLASSES, MAX_INPUT_SIZE, MAX_WIDTH, ArchSpec, family_type

CONFIG, WEIGHTS = "config.json", "model.safetensors"
TOP_FIELDS = ("architecture", "num_classes", "num_features", "model_args", "pretrained_cfg")  # what `archfamily
# export` writes (timm's `save_config_for_hf`), and `global_pool` for a network that pools; optionally these:
TOP_OPTIONAL = ("global_pool", "weights", "label_names")
CFG_FIELDS = ("custom_load", "input_size", "fixed_input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std",
              "num_classes", "pool_size", "first_conv", "classifier")  # its pretrained_cfg's, and optionally these:
CFG_OPTIONAL = ("license", "paper_ids", "label_names")
WEIGHT_FIELDS = ("file", "url", "hf_hub_id", "hf_hub_filename", "state_dict", "source")  # where timm finds weights
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos", "random")  # timm's transforms'
CROP_MODES = ("center", "squash", "border")
MAX_TEXT = 256  # characters of a license, a paper id or a class's name


def _is_archfamily_model(path: Path) -> bool:
    """Whether `path` is an archfamily model file (its safetensors header says so; no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get("format") == MODEL_FORMAT
    except (SafetensorError, OSError):
        return False


def is_export(folder: Path) -> bool:
    """Whether `folder` is one `archfamily export` wrote, however damaged its config.json: its model.safetensors
    is an archfamily model file, or its config.json names an archfamily architecture."""
    weights = folder / WEIGHTS
    if weights.is_file() and _is_archfamily_model(weights):
        return True
    try:
        doc = read_json(folder / CONFIG)
    except UserError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("architecture"), str) \
        and doc["architecture"].startswith("archfamily_")


def read_export(folder: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(pretrained cfg, architecture, model_args) of an exported folder, as timm's `load_model_config_from_path`
    returns them, each checked; the cfg's weights are the folder's model.safetensors. A one-line ValueError
    naming the file and the field for anything an export does not hold."""
    try:
        return _read(Path(folder))
    except UserError as exc:
        message = str(exc)
    raise ValueError(message)  # outside the handler: the message, with no UserError behind it


def _read(folder: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    file = folder / CONFIG
    doc = Fields(read_json(file), str(file), TOP_FIELDS)
    _only(doc, TOP_FIELDS + TOP_OPTIONAL)
    load_lazy_families()
    architecture = doc.str("architecture", [f"archfamily_{name}" for name in family_names()])
    family = architecture.removeprefix("archfamily_")
    spec = _spec(doc.obj("model_args"), family, file)
    num_classes = doc.int("num_classes", 0, MAX_CLASSES)
    if num_classes != spec.num_classes:
        doc.fail("num_classes", f"must be model_args' num_classes ({spec.num_classes}), got {num_classes}")
    doc.int("num_features", 0, MAX_WIDTH)
    if "global_pool" in doc.data or _network_pool(spec):
        _pool(doc, spec)
    if "weights" in doc.data:
        doc.str("weights", [UNTRAINED])
    if "label_names" in doc.data:
        _labels(doc, num_classes)
    cfg = _pretrained_cfg(doc.obj("pretrained_cfg", CFG_FIELDS), spec, family)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{weights}: not found (an export's weights are its own model.safetensors)")
    if read_model_spec(weights) != spec:  # the same shapes can be another network (another output_stride)
        raise UserError(f"{file}: model_args describe another network than {weights} holds")
    labels = {"label_names": doc.data["label_names"]} if "label_names" in doc.data else {}  # as timm moves them
    return {**cfg, **labels, "file": str(weights)}, architecture, doc.data["model_args"]


def _only(doc: Fields, allowed: tuple[str, ...]) -> None:
    unknown = [str(k) for k in doc.data if k not in allowed]
    if unknown:
        what = "names weights elsewhere; an export's weights are its own model.safetensors" \
            if unknown[0] in WEIGHT_FIELDS or unknown[0] in WEIGHT_KEYWORDS else \
            f"is not a field archfamily writes here ({', '.join(allowed)})"
        doc.fail(repr(unknown[0])[:60], what)


def _spec(args: Fields, family: str, file: Path) -> ArchSpec:
    """The spec `model_args` describe: its fields, read by the spec's own check, all of them, and the head's
    pooling; no other keyword (none that loads weights)."""
    for key in args.data:
        if key in WEIGHT_KEYWORDS or str(key).startswith("pretrained"):
            args.fail(repr(key)[:60], "loads or fetches weights; an export's weights are its own model.safetensors")
    given = {k: v for k, v in args.data.items() if k != "global_pool"}
    try:
        spec = spec_from_model_args(family, given, "model_args")
    except UserError as exc:
        raise UserError(f"{file}: model_args do not describe an archfamily {family} network ({exc})") from None
    missing = sorted(set(model_args(spec)) - set(given))
    if missing:
        args.fail(repr(missing[0]), "is missing (an export writes every field of its spec)")
    if "global_pool" in args.data or _network_pool(spec) is not None:
        _pool(args, spec)
    return spec


@functools.lru_cache(maxsize=16)
def _network_pool(spec: ArchSpec) -> Optional[str]:
    """The pooling the network of `spec` has, as timm's exporter writes it (None: a network without one)."""
    from timm.models._input import _get_global_pool

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _get_global_pool(family_type(spec.family).model_class()(spec))


def _pool(doc: Fields, spec: ArchSpec) -> None:
    """`global_pool`: the network's own (another pooling would be another network for the same weights)."""
    pool = doc.str("global_pool", optional=True)
    if pool != _network_pool(spec):
        doc.fail("global_pool", f"must be {_network_pool(spec)!r}, the pooling of its network, got {show(pool)}")


def _labels(doc: Fields, num_classes: int) -> None:
    names = doc.list("label_names", num_classes)
    if not all(isinstance(n, str) and len(n) <= MAX_TEXT for n in names):
        doc.fail("label_names", "must hold one class name (text) per class")


def _pretrained_cfg(cfg: Fields, spec: ArchSpec, family: str) -> dict[str, Any]:
    """The fields of `pretrained_cfg` archfamily writes, checked; anything else (a weights file, a URL, a hub id)
    is refused rather than followed or ignored."""
    _only(cfg, CFG_FIELDS + CFG_OPTIONAL)
    expected = {**cifar_cfg(family), **(spec.timm_cfg() if hasattr(spec, "timm_cfg") else {})}
    checks: dict[str, Callable[[str], Any]] = {
        "custom_load": lambda k: cfg.get(k) is False or cfg.fail(k, f"must be false, got {show(cfg.get(k))}"),
        "input_size": lambda k: _input_size(cfg, spec),
        "fixed_input_size": lambda k: isinstance(cfg.get(k), bool) or cfg.fail(k, "must be true or false"),
        "interpolation": lambda k: cfg.str(k, INTERPOLATIONS),
        "crop_pct": lambda k: cfg.number(k, 0.01, 1.0),
        "crop_mode": lambda k: cfg.str(k, CROP_MODES),
        "mean": lambda k: _channels(cfg, k, spec, 0.0, 1.0),
        "std": lambda k: _channels(cfg, k, spec, 1e-6, 1e3),
        "num_classes": lambda k: cfg.int(k, spec.num_classes, spec.num_classes),
        "pool_size": lambda k: cfg.get(k) is None or cfg.ints(k, 2, 1, MAX_INPUT_SIZE),
        "first_conv": lambda k: _layer_names(cfg, k, expected["first_conv"]),
        "classifier": lambda k: cfg.str(k, [expected["classifier"]]),
        "license": lambda k: _text(cfg, k),
        "paper_ids": lambda k: _text(cfg, k),
        "label_names": lambda k: _labels(cfg, spec.num_classes),
    }
    for key in cfg.data:
        checks[key](key)
    if len(cfg.data.get("mean", ())) != len(cfg.data.get("std", ())):
        cfg.fail("std", "must hold as many numbers as mean")
    return dict(cfg.data)


def _layer_names(cfg: Fields, key: str, expected: str) -> None:
    """A layer's name, or timm's list of them where the base's cfg names several (FastViT's two input
    convolutions), the first being the one archfamily's member has."""
    value = cfg.get(key)
    if isinstance(value, list) and value and value[0] == expected and all(isinstance(v, str) for v in value):
        return
    cfg.str(key, [expected])


def _input_size(cfg: Fields, spec: ArchSpec) -> None:
    chans, _, _ = cfg.ints("input_size", 3, 1, MAX_INPUT_SIZE)
    if chans != spec.in_chans:
        cfg.fail("input_size", f"must start with model_args' in_chans ({spec.in_chans}), got {chans}")


def _channels(cfg: Fields, key: str, spec: ArchSpec, lo: float, hi: float) -> None:
    """`mean` or `std`: one number per input channel, or RGB's three whatever the input (as timm's exporter copies
    a cfg's), each from `lo` to `hi`."""
    values = cfg.list(key)
    if len(values) not in (spec.in_chans, 3):
        cfg.fail(key, f"must hold one number per input channel ({spec.in_chans}), got {len(values)}")
    cfg.numbers(key, len(values), lo, hi)


def _text(cfg: Fields, key: str) -> None:
    value = cfg.get(key)
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        cfg.fail(key, f"must be text of at most {MAX_TEXT} characters, got {show(value)}")


def read_exports_first() -> None:
    """Have `timm.create_model("local-dir:DIR")` read a folder archfamily exported through `read_export`; other
    folders are read by timm's own reader, as before. Running it again changes nothing."""
    from timm.models import _factory

    timm_reader = _factory.load_model_config_from_path
    if getattr(timm_reader, "__module__", None) == __name__:
        return

    def load_model_config_from_path(model_path: str | Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
        return read_export(Path(model_path)) if is_export(Path(model_path)) else timm_reader(model_path)

    _factory.load_model_config_from_path = load_model_config_from_path
