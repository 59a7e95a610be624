"""Damaged copies of valid inputs for the fuzz tests (JSON files, model files, TOML plans, numbers): each one is
invalid by construction.

A mutation either changes one field the reader uses (a value of the wrong type, out of
range, NaN, infinity, an integer of 5,000 digits; a required key removed; a fixed-length
list one longer or shorter) or damages the bytes (truncated, a byte flipped, UTF-16,
not UTF-8, nested 100,000 deep). `null` never replaces a value and numbers keep their
kind, so no mutation can turn out valid by chance (e.g. an untested error of null).
`damaged_weights` does the same to a network's tensors (shape, dtype, NaN, another network's), `damaged_toml`
and `toml_with` to a plan, and `BAD_COUNTS`, `BAD_FLOATS`, `BAD_TOML_NUMBERS` are numbers no count takes.
`BAD_MODEL_KWARGS` are timm keywords no timm base may be built with, and `PLANTED_EXPORT` fields an exported
config.json must not hold.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from hypothesis import strategies as st

Path_ = tuple[Any, ...]
WRONG_TYPE = {int: ["12", True, [1], {"a": 1}, 12.7], float: ["0.5", True, [0.5], {"a": 1}],
              str: [5, True, ["x"], {"a": 1}], list: [5, "x", {"a": 1}], dict: [5, "x", [1]], bool: ["yes", 2, [True]],
              type(None): ["x", True, [1], {"a": 1}]}
OUT_OF_RANGE = [-5, -1e9, 10**30, 10**400]  # negative, or a count no network has (or no float can hold)
LITERALS = ["NaN", "Infinity", "-Infinity", "1e400", "9" * 5000]  # spliced into the text where a number stood
MARK = 1.2345678e-7  # a number no valid file holds, replaced by a literal in the text


def _leaves(doc: Any, path: Path_ = ()) -> list[tuple[Path_, Any]]:
    """Every value in `doc` with its path (containers too)."""
    found = [(path, doc)] if path else []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for key, value in items:
        found += _leaves(value, (*path, key))
    return found


def _set(doc: Any, path: Path_, value: Any) -> Any:
    copy = json.loads(json.dumps(doc))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


_DELETE = object()


@st.composite
def damaged(draw: Callable, doc: Any, used: Callable[[Path_], bool],
            required: Callable[[Path_], bool] = lambda p: True,
            fixed_length: Callable[[Path_], bool] = lambda p: False) -> tuple[str, bytes]:
    """(what was done, the damaged file's bytes) for a valid JSON document `doc`.

    `used(path)`: the reader uses this value; `required(path)`: removing this key makes the file invalid;
    `fixed_length(path)`: this list must keep its length.
    """
    text = json.dumps(doc)
    kind = draw(st.sampled_from(["type", "range", "literal", "delete", "length", "bytes"]))
    leaves = [(p, v) for p, v in _leaves(doc) if used(p)]
    if kind == "delete":
        leaves = [(p, v) for p, v in leaves if isinstance(p[-1], str) and required(p)]
    elif kind == "length":
        leaves = [(p, v) for p, v in leaves if isinstance(v, list) and v and fixed_length(p)]
    elif kind in ("range", "literal"):
        leaves = [(p, v) for p, v in leaves if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if kind == "bytes" or not leaves:
        how = draw(st.sampled_from(["truncate", "flip", "utf16", "latin1", "deep"]))
        raw = text.encode()
        if how == "truncate":
            return how, raw[:draw(st.integers(0, len(raw) - 1))]
        if how == "flip":
            at = draw(st.integers(0, len(raw) - 1))
            return how, raw[:at] + bytes([raw[at] ^ 0x80]) + raw[at + 1:]
        if how == "utf16":
            return how, text.encode("utf-16")
        if how == "latin1":
            return how, b"\xff\xfe" + raw
        return how, b"[" * 100_000 + b"]" * 100_000
    path, value = draw(st.sampled_from(leaves))
    where = "/".join(map(str, path))
    if kind == "type":
        new = draw(st.sampled_from(WRONG_TYPE[type(value)]))
        return f"{where}: {value!r:.20} -> {new!r}", json.dumps(_set(doc, path, new)).encode()
    if kind == "range":
        new = draw(st.sampled_from(OUT_OF_RANGE))
        return f"{where}: {value!r:.20} -> {new!r}", json.dumps(_set(doc, path, new)).encode()
    if kind == "literal":
        literal = draw(st.sampled_from(LITERALS))
        return f"{where}: -> {literal[:12]}", json.dumps(_set(doc, path, MARK)).replace(repr(MARK), literal).encode()
    if kind == "delete":
        return f"{where}: removed", json.dumps(_set(doc, path, _DELETE)).encode()
    longer = draw(st.booleans())
    new = value + value[-1:] if longer else value[:-1]
    return f"{where}: {len(value)} -> {len(new)} items", json.dumps(_set(doc, path, new)).encode()


def under(*prefixes: Sequence[Any]) -> Callable[[Path_], bool]:
    """A `used` predicate: paths that start with one of `prefixes`."""
    return lambda path: any(tuple(path[:len(p)]) == tuple(p) for p in prefixes)


WEIGHT_DTYPES = ["int32", "int64", "int8", "bool", "uint8"]  # not floating point: never a network's weights
NON_FINITE = [float("nan"), float("inf"), float("-inf")]


@st.composite
def damaged_weights(draw: Callable, state: dict[str, Any], other: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(what was done, tensors) for a network's valid `state_dict()`: one tensor of another shape (one dimension
    one longer, or transposed with the same element count), of an integer or bool dtype, holding NaN or infinity
    (one value or all), removed, one tensor too many, or `other` (another network's tensors) whole.
    Every result is invalid for the network `state` belongs to."""
    import torch

    kind = draw(st.sampled_from(["shape", "transpose", "dtype", "nonfinite", "delete", "extra", "other"]))
    floats = [k for k, v in state.items() if v.is_floating_point() and v.numel() > 0]
    tensors = dict(state)
    if kind == "other":
        return "another network's tensors", dict(other)
    if kind == "extra":
        return "an extra tensor", {**tensors, "extra.weight": torch.zeros(3)}
    if kind == "transpose":
        name = draw(st.sampled_from([k for k in floats if state[k].dim() >= 2 and state[k].shape[0] != state[k].shape[1]]))
        tensors[name] = state[name].transpose(0, 1).contiguous()
        return f"{name}: transposed", tensors
    name = draw(st.sampled_from(floats))
    if kind == "shape":
        dim = draw(st.integers(0, state[name].dim() - 1))
        shape = list(state[name].shape)
        shape[dim] += 1
        tensors[name] = torch.zeros(shape)
        return f"{name}: dimension {dim} one longer", tensors
    if kind == "dtype":
        dtype = draw(st.sampled_from(WEIGHT_DTYPES))
        tensors[name] = state[name].to(getattr(torch, dtype))
        return f"{name}: {dtype}", tensors
    if kind == "nonfinite":
        value = draw(st.sampled_from(NON_FINITE))
        tensors[name] = state[name].clone()
        if draw(st.booleans()):
            tensors[name].fill_(value)
        else:
            tensors[name].view(-1)[draw(st.integers(0, state[name].numel() - 1))] = value
        return f"{name}: holds {value}", tensors
    del tensors[name]
    return f"{name}: removed", tensors


# numbers as a user types them: each outside any count's range, or not a whole number in ASCII digits
BAD_COUNTS = ["0", "-1", "2147483648", "99999999999999999999", "\u00b2", "\u0663", "1e3", "1.5", "nan", "", " ",
              "0x10", "1_0"]  # '\u00b2'.isdigit() is true and int() fails; int() takes '\u0663' and '1_0'
BAD_FLOATS = ["nan", "inf", "-inf", "-1", "0", "1e400", "abc"]
BAD_TOML_NUMBERS = ["-1", "0", "1000000000000", "99999999999999999999", "1" + "0" * 400, "1.5", '"12"', "nan",
                    "inf", "true", "[1]"]  # as TOML values: out of range, too large for a float, the wrong kind


def toml_with(text: str, table: str, key: str, value: str) -> str:
    """A TOML document with `key = value` set in `[table]` (the table added at the end if it is missing)."""
    header = f"[{table}]"
    if header not in text:
        return f"{text}\n{header}\n{key} = {value}\n"
    before, _, after = text.partition(header + "\n")
    lines = [ln for ln in after.split("\n") if not ln.startswith(f"{key} =")]
    return f"{before}{header}\n{key} = {value}\n" + "\n".join(lines)


@st.composite
def damaged_toml(draw: Callable, text: str, table_line: str, a_list: str) -> tuple[str, bytes]:
    """(what was done, bytes) for a valid TOML document whose every key is needed: an integer of 5,000 digits in
    place of `a_list`, 100,000 levels of nesting, cut short (at least two characters off: no closing quote or
    bracket survives), not UTF-8, or an unknown key under `table_line`."""
    how = draw(st.sampled_from(["5000 digits", "deep", "truncated", "not UTF-8", "unknown key"]))
    raw = {"5000 digits": lambda: text.replace(a_list, "[" + "9" * 5000 + "]").encode(),
           "deep": lambda: text.encode() + b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
           "truncated": lambda: text.encode()[:draw(st.integers(1, len(text) - 2))],
           "not UTF-8": lambda: b"\xff\xfe" + text.encode(),
           "unknown key": lambda: text.replace(table_line, f"{table_line}\nlearning_rate = 0.1").encode()}[how]()
    return f"text: {how}", raw


# (timm model, `--model-kwargs` text): a keyword out of its range or of the wrong kind (an expression, a number too
# large), a layer timm does not know, one that loads or fetches weights or that archfamily sets, one the model does
# not take, or widths beyond 10^9 parameters
BAD_MODEL_KWARGS = [("test_resnet", kw) for kw in (
    "output_stride=0", "output_stride=4", "output_stride=99999999999", "output_stride=1+1", "output_stride=16.5",
    "output_stride=True", "output_stride=-16", "act_layer=nope", "act_layer=1", "act_layer=__import__('os')",
    "norm_layer=nope", "aa_layer=nope", "stem_width=100000", "base_width=100000", "cardinality=0", "drop_rate=2",
    "drop_rate=nan", "drop_rate=1e400", "drop_path_rate=-1", "zero_init_last=2", "channels=1", "block_args=5",
    "pretrained=True", "pretrained_cfg='x'", "pretrained_cfg_overlay={}", "checkpoint_path=/etc/passwd",
    "features_only=True", "cache_dir=/tmp", "device='meta'", "dtype='float16'", "num_classes=5", "in_chans=1",
    "global_pool=max", "bogus=1", "__class__=1", "layers=(1,1,1,1)", "9" * 5000 + "=1",
)] + [("resnet50", "base_width=60000"), ("resnet50", "base_width=100000"),
      ("test_efficientnet", "depth_multiplier=100"), ("test_efficientnet", "act_layer=nope"),
      ("test_efficientnet", "channel_multiplier=1000"), ("test_efficientnet", "output_stride=0")]

# (path in an exported config.json, value): what the reads and tracebacks came from
PLANTED_EXPORT = [
    (("model_args", "pretrained_cfg_overlay"), {"file": "/etc/passwd"}),
    (("model_args", "checkpoint_path"), "/etc/passwd"), (("model_args", "checkpoint_path"), "evil.pkl"), (("model_args", "pretrained"), True),
    (("model_args", "features_only"), True), (("architecture",), "resnet18"), (("architecture",), "archfamily_nope"),
    (("pretrained_cfg", "file"), "evil.pkl"), (("pretrained_cfg", "hf_hub_id"), "timm/resnet18.a1_in1k"),
    (("pretrained_cfg", "url"), "https://example.com/w.pth"), (("pretrained_cfg", "state_dict"), {}),
    (("pretrained_cfg", "custom_load"), True), (("pretrained_cfg", "first_conv"), "nope"),
    (("model_args", "model_kwargs", "act_layer"), "nope"), (("model_args", "model_kwargs", "output_stride"), 0),
    (("model_args", "global_pool"), "catavgmax"), (("global_pool",), "max"), (("num_classes",), 5),
    (("label_names",), ["a"]), (("pretrained_cfg", "label_names"), [1] * 10), (("test_input_size",), [3, 64, 64]),
]
