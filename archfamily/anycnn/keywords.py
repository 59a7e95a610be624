"""Checking a timm base's own `create_model` keywords (`--model-kwargs`, a spec's `model_kwargs`) before timm builds
anything with them.

timm's constructors take what they are given and fail deep inside, or not at all: `output_stride=0` is an
IndexError in a ResNet and a silently different network in a MobileNet, an activation timm does not know is a
KeyError from its resolver, and `base_width=100000` on a ResNet-50 asks for 360 GB. So every keyword is checked
here first, and each failure is one line naming the model and the keyword:

- it is a keyword the model's constructor takes by name (its signature, and those of the functions its timm
  entrypoint builds it through), not one that loads or fetches weights, nor one archfamily sets itself;
- its value is of its default's kind (a whole number, a number, true/false, text) and in range: `output_stride`
  8, 16 or 32; a rate (`drop_rate`...) from 0 to below 1; a depth multiplier above 0 and at most
  `MAX_DEPTH_MULTIPLIER`; any other number (a width, a multiplier, a size) from 0 to `MAX_WIDTH`;
- a layer named by text (`act_layer`, `norm_layer`, `se_layer`...) is one timm's own resolvers know;
- the network they describe is built on the meta device, where nothing is allocated, and has at most
  `MAX_PARAMS` parameters.
"""
from __future__ import annotations

import functools
import inspect
import math
import warnings
from typing import Any, Callable, Iterable

from archfamily.errors import UserError
from archfamily.specs import MAX_PARAMS, MAX_WIDTH

# keywords that load or fetch weights, or say where and how timm builds: refused wherever they appear
WEIGHT_KEYWORDS = frozenset({
    "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict", "pretrained_model_args",
    "checkpoint_path", "cache_dir", "features_only", "feature_cfg", "feature_cls", "out_indices", "output_fmt",
    "kwargs_filter", "scriptable", "exportable", "no_jit", "device", "dtype",
})
ARCHFAMILY_KEYWORDS = frozenset({"num_classes", "in_chans", "global_pool", "spec"})  # archfamily sets these itself
OUTPUT_STRIDES = (8, 16, 32)  # what timm's dilated CNNs support
MAX_DEPTH_MULTIPLIER = 8.0  # a deeper network is thousands of blocks: slow to build even on the meta device
MAX_NAME = 64  # characters of a keyword's name, and of a value given as text
MAX_WHOLE = 10**6  # a whole number in a spec's model_kwargs (before the model's own ranges apply)


def _layer_resolver(key: str) -> Callable[[str], Any] | None:
    """timm's resolver for a layer given by name under `key`, or None when timm has none for it."""
    from timm import layers

    if key.endswith("norm_act_layer"):
        return layers.get_norm_act_layer
    if key.endswith("act_layer"):
        return layers.get_act_layer
    if key.endswith("norm_layer"):
        return layers.get_norm_layer
    if key.endswith(("attn_layer", "se_layer")):
        return layers.get_attn
    if key.endswith("aa_layer"):
        return lambda name: layers.create_aa(name, channels=8)
    return None


def check_plain(key: Any, value: Any) -> None:
    """What a spec file can hold as one timm keyword, whatever the model: a short name, not one archfamily sets or
    one that loads weights, and a plain value (null, true/false, a finite number, short text). Raises ValueError."""
    if not isinstance(key, str) or not key.isidentifier() or len(key) > MAX_NAME:
        raise ValueError("model_kwargs must map timm's keyword names to values")
    if key in WEIGHT_KEYWORDS or key.startswith("pretrained"):
        raise ValueError(f"model_kwargs cannot set {key}: it is timm's way to load or fetch weights or to place "
                         "the network, which archfamily does itself (its weights are its model files)")
    if key in ARCHFAMILY_KEYWORDS:
        raise ValueError(f"model_kwargs cannot set {key}: archfamily sets it")
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"model_kwargs {key}: a number, true/false, null or text, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value) or \
            isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WHOLE:
        raise ValueError(f"model_kwargs {key}: {value!r:.40} is out of any keyword's range")
    if isinstance(value, str) and len(value) > MAX_NAME:
        raise ValueError(f"model_kwargs {key}: text of {len(value):,} characters is no timm keyword's value")


def _functions(fn: Callable, seen: set[int], depth: int = 3) -> Iterable[Callable]:
    """`fn` and the functions of its own module it calls (a timm entrypoint's `_create_resnet`,
    `_gen_mobilenet_v2`), which take keywords of their own."""
    if id(fn) in seen or depth == 0:
        return
    seen.add(id(fn))
    yield fn
    try:
        called = inspect.getclosurevars(fn).globals.values()
    except (TypeError, ValueError):
        return
    for other in called:
        if inspect.isfunction(other) and other.__module__ == fn.__module__:
            yield from _functions(other, seen, depth - 1)


@functools.lru_cache(maxsize=64)
def _parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keywords timm's `name` takes by name, with their defaults: its class's constructor and its entrypoint's
    builders. A parameter without a default is one the entrypoint sets (a ResNet's `layers`)."""
    import timm
    import torch
    from timm.models import model_entrypoint

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_class = type(timm.create_model(name, pretrained=False))
    found: dict[str, inspect.Parameter] = {}
    for fn in [model_class.__init__, *_functions(model_entrypoint(name), set())]:
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty \
                    and p.name not in ("self", "variant"):
                found.setdefault(p.name, p)
    return found


def _check_value(name: str, key: str, value: Any, default: Any) -> None:
    """One keyword's value against its default's kind and its range; a `UserError` naming both."""
    def fail(what: str) -> None:
        raise UserError(f"timm's {name}: {key} {what}, got {value!r:.40}")

    if value is None:  # timm's create_model drops keywords set to None: the default stands
        return
    resolver = _layer_resolver(key)
    if resolver is not None:
        if not isinstance(value, str):
            fail("takes a layer's name, as timm names them")
        import torch

        try:
            with torch.device("meta"):
                resolved = resolver(value)
        except Exception:  # timm's resolvers raise KeyError, AssertionError, ValueError...
            resolved = None
        if resolved is None and value:
            fail("must be a layer timm knows")
        return
    if key == "output_stride":
        if type(value) is not int or value not in OUTPUT_STRIDES:
            fail(f"must be one of {', '.join(map(str, OUTPUT_STRIDES))}")
        return
    if isinstance(default, bool):
        if type(value) is not bool:
            fail("must be true or false")
        return
    if isinstance(default, str):
        if not isinstance(value, str):
            fail("must be text")
        return
    if default is None and isinstance(value, (bool, str)):  # the constructor says what it takes in its place
        return
    if default is not None and not isinstance(default, (int, float)):
        fail(f"takes a {type(default).__name__}, which no keyword's value can give")
    if isinstance(value, (bool, str)) or isinstance(default, int) and type(value) is not int:
        fail("must be a whole number" if isinstance(default, int) else "must be a number")
    if key.endswith("_rate"):
        if not 0 <= value < 1:
            fail("must be a rate from 0 to below 1")
    elif "depth" in key:
        if not 0 < value <= MAX_DEPTH_MULTIPLIER:
            fail(f"must be above 0 and at most {MAX_DEPTH_MULTIPLIER:g}")
    elif not 0 <= value <= MAX_WIDTH:
        fail(f"must be from 0 to {MAX_WIDTH:,}")


@functools.lru_cache(maxsize=64)
def check_model_kwargs(name: str, model_kwargs: tuple[tuple[str, Any], ...], num_classes: int = 10,
                       in_chans: int = 3) -> None:
    """A one-line `UserError` for any keyword timm's `name` does not take, any value out of its kind or range, any
    layer timm does not know, or a network that does not build or is larger than `MAX_PARAMS` (built on the
    meta device: nothing is allocated)."""
    import timm
    import torch

    taken = _parameters(name)
    for key, value in model_kwargs:
        check_plain(key, value)
        if key not in taken:
            raise UserError(f"timm's {name} takes no keyword {key!r} (it takes "
                            f"{', '.join(sorted(k for k in taken if k not in WEIGHT_KEYWORDS | ARCHFAMILY_KEYWORDS))})")
        _check_value(name, key, value, taken[key].default)
    given = ", ".join(f"{k}={v!r:.40}" for k, v in model_kwargs)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                                 **dict(model_kwargs))
    except Exception as exc:  # whatever timm's constructor raises on keywords it cannot build with
        raise UserError(f"timm's {name} cannot be built with {given} "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no message'})") \
            from None
    params = sum(p.numel() for p in model.parameters())
    if params > MAX_PARAMS:
        raise UserError(f"timm's {name} with {given} has {params:,} parameters; archfamily builds networks of up to "
                        f"{MAX_PARAMS:,}")
