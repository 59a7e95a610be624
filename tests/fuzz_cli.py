"""Hostile inputs to the real CLI: model files, study plans, study folders, the zoo, numeric options, a timm base's
keywords (`--model-kwargs`, a spec file's), exported folders (`zoo add` loads one as timm's `local-dir:` does) and
the family.json of a timm base.

    python tests/fuzz_cli.py --count 300 [--seed 0] [--timeout 60] [--exec]

Each input is drawn from a mutation family (tests/mutations.py), written into a fresh folder, and every command
that reads it is run as its own process (forked from this one after `archfamily.cli.main` is imported, or with `--exec` a
new interpreter: `python -m archfamily`). An input passes when each command exits 2 with one
`archfamily: error:` line on stderr and the folder is byte for byte as it was (nothing written, nothing
deleted); a traceback, any other exit code, a timeout or a changed folder is counted against it. Prints the
counts per family and the failures; exits 1 when there is any. `tests/test_hostile_inputs.py` runs a few
derandomised inputs of each family in CI.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path[:0] = [str(ROOT), str(TESTS)]

from hypothesis import strategies as st  # noqa: E402

from mutations import (BAD_COUNTS, BAD_FLOATS, BAD_MODEL_KWARGS, BAD_TOML_NUMBERS, PLANTED_EXPORT,  # noqa: E402
                       damaged, damaged_toml, damaged_weights, toml_with, under)

NOISE = ("cpp_extension.py", "No CUDA runtime")  # torch's own start-up warning on machines without a GPU runtime
BASE = "wrn-10-1"
PLAN = """budgets = ["60k"]
[base]
spec = "wrn-16-1"
[data]
subset = 500
test_subset = 200
[recipe]
epochs = 1
[prune.fisher]
prune_every = 2
channels_per_step = 16
[arms.reduced-width]
rule = "reduced-width"
"""
DERIVE = ["derive", "--preset", "smoke", "--base", BASE, "--device", "cpu", "--subset", "100", "--test-subset", "100",
          "--epochs", "0.1", "-k", "64", "--until-params", "40k"]  # the fixtures' derive run: seconds
RESUME = [*DERIVE, "--resume", "--out", "{d}/run"]
TIMM_BASE, TIMM_KWARGS = "test_resnet", {"output_stride": 16}  # timm's own test ResNet: traced in under a second
PICKLE = b"\x80\x04K\x01."  # pickle.dumps(1): what a field could point timm at (fixtures/evil.pkl)


@dataclass
class Case:
    """One hostile input: files to write (path -> bytes, or None for a folder), the commands that read it (argv
    after `archfamily`; `{d}` is the case folder), environment variables, and files the input names that no
    command may open (none of them names these)."""

    family: str
    what: str
    files: dict[str, Optional[bytes]]
    commands: list[list[str]]
    env: dict[str, str] = field(default_factory=dict)
    not_read: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- fixtures, made once per fuzz run


def fixtures(folder: Path, run: Callable[[list[str], Path, dict[str, str]], tuple[int, str]]) -> dict[str, Any]:
    """The valid files every family damages: a model file of the base, a family, a finished study folder, a zoo
    with one entry. Returned as bytes (and the state dict of the base, for the weights family)."""
    import torch

    from archfamily.anycnn.spec import with_model_kwargs
    from archfamily.models.checkpoint import save_model
    from archfamily.models import build_model
    from archfamily.specs import base_spec, spec_to_dict
    from families import write_family, write_timm_family

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    spec = base_spec(BASE)
    model = build_model(spec)
    save_model(folder / "base.safetensors", model, {"test_error": "50.0", "seed": "0", "test_images": "100"})
    other = build_model(base_spec("wrn-10-2"))
    save_model(folder / "other.safetensors", other, {"test_error": "50.0"})
    (folder / "spec.json").write_text(json.dumps(spec_to_dict(spec)))
    write_family(folder / "family", BASE, k=4)
    code, err = run(["zoo", "add", str(folder / "base.safetensors"), "--name", "fz", "--test-subset", "100"], folder,
                    {"ARCHFAMILY_ZOO": str(folder / "zoo")})
    assert code == 0, err
    study = fake_finished_study(folder / "study")
    code, err = run([*DERIVE, "--out", str(folder / "run")], folder, {})
    assert code == 0, err
    run_files = {p.relative_to(folder / "run").as_posix(): p.read_bytes() for p in (folder / "run").rglob("*")
                 if p.is_file() and p.name not in ("family.json", "trajectory.jsonl")}  # interrupted after the base
    timm_spec = with_model_kwargs(base_spec(f"timm:{TIMM_BASE}"), TIMM_KWARGS)
    (folder / "timm-spec.json").write_text(json.dumps(spec_to_dict(timm_spec)))
    save_model(folder / "timm.safetensors", timm_spec.build(), {"test_error": "50.0"})
    exports = {}
    for name, spec_file, weights in (("timm", "timm-spec.json", "timm.safetensors"), ("wrn", "spec.json",
                                                                                      "base.safetensors")):
        code, err = run(["export", "--spec", str(folder / spec_file), "--weights", str(folder / weights), "--out",
                         str(folder / f"export-{name}")], folder, {})
        assert code == 0, err
        exports[name] = {p.name: p.read_bytes() for p in (folder / f"export-{name}").iterdir()}
    write_timm_family(folder / "timm-family", f"timm:{TIMM_BASE}", TIMM_KWARGS)
    (folder / "evil.pkl").write_bytes(PICKLE)
    return {
        "folder": folder, "state": {k: v.clone() for k, v in model.state_dict().items()},
        "other": dict(other.state_dict()), "meta": _metadata(folder / "base.safetensors"),
        "model": (folder / "base.safetensors").read_bytes(), "other_model": (folder / "other.safetensors").read_bytes(),
        "spec": (folder / "spec.json").read_bytes(), "family": (folder / "family" / "family.json").read_bytes(),
        "zoo": {p.relative_to(folder / "zoo").as_posix(): p.read_bytes() for p in (folder / "zoo").rglob("*")
                if p.is_file()},
        "study": study, "run": run_files, "timm_spec": (folder / "timm-spec.json").read_bytes(), "exports": exports,
        "timm_family": (folder / "timm-family" / "family.json").read_bytes(),
    }


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata())


def fake_finished_study(folder: Path) -> dict[str, bytes]:
    """PLAN's study folder as a finished study leaves it, without training anything: a record per job, each
    training's metrics.json with the figures of its spec, the pruning run's family.json."""
    from archfamily.study.plan import load_plan
    from archfamily.study.queue import expand, write_record
    from archfamily.specs import base_spec, spec_from_dict, spec_to_dict
    from archfamily.scaling.rules import base_rule, solve

    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / "plan.toml").write_text(PLAN)
    plan = load_plan(folder.parent / "plan.toml")
    for job in expand(plan, folder):
        write_record(folder, job, 12.5)
        done = folder / job.done_file
        done.parent.mkdir(parents=True, exist_ok=True)
        if job.kind == "derive":
            done.write_text("{}")
            continue
        spec = base_spec(plan.base) if job.arm is None else \
            solve(base_rule(plan.arms[job.arm].kind, plan.base_spec), int(job.budget), "params").member.spec
        spec = spec_from_dict(spec_to_dict(spec), "spec")
        spec_arg = job.commands[-1][job.commands[-1].index("--spec") + 1]
        if spec_arg.endswith(".json"):  # the member its scale command chose
            (folder / spec_arg).parent.mkdir(parents=True, exist_ok=True)
            (folder / spec_arg).write_text(json.dumps(spec_to_dict(spec)))
        done.write_text(json.dumps({"test_error": 42.0, "test_images": 200, "params": spec.num_params(),
                                    "macs": spec.num_macs(), "seed": job.seed or 0, "spec": spec_to_dict(spec),
                                    "seconds": 12.5}))
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- the families


def _safetensors(tensors: dict[str, Any], meta: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)


def _weights_commands(draw: Callable, file: str, in_plan: str, valid_file: bool) -> tuple[list[list[str]], str]:
    """(the commands that read a model file, one of them per input; a plan whose base is that file, as `in_plan`
    names it). A `valid_file` (another network's, whole) is damage only where the base's network is expected."""
    plan = PLAN.replace('spec = "wrn-16-1"', f'spec = "{BASE}"\ncheckpoint = "{in_plan}"')
    commands = [
        [["export", "--spec", "{d}/spec.json", "--weights", file, "--out", "{d}/out"]],
        [["derive", "--preset", "smoke", "--base", BASE, "--checkpoint", file, "--device", "cpu", "--subset", "100",
          "--test-subset", "100", "--out", "{d}/out"]],
        [["zoo", "add", file, "--name", "fuzzed", "--test-subset", "100"]],
        [["measure", file, "--out", "{d}/out", "--test-subset", "100"]],
        [["bench", "--family", "{d}/family.json", "--params", "40k", "--quick", "--trained", f"a={file}",
          "--out", "{d}/out"]],
        [["study", "{d}/plan.toml", "--dry-run", "--out", "{d}/out"], ["study", "{d}/plan.toml", "--out", "{d}/out"]],
        [RESUME],  # a derive run interrupted after its base, the base swapped for this file
    ]
    return draw(st.sampled_from([c for c in commands if not valid_file or c[0][0] in ("export", "derive", "study")])), \
        plan


@st.composite
def weights_cases(draw: Callable, fx: dict[str, Any]) -> Case:
    """A model file whose tensors are not its spec's network's (shape, dtype, NaN or infinity, missing, extra,
    another network's), whose metadata figures are garbage, or that is no model file at all."""
    kind = draw(st.sampled_from(["tensors", "tensors", "metadata", "file"]))
    name = "{d}/bad.safetensors"
    files: dict[str, Optional[bytes]] = {"spec.json": fx["spec"], "family.json": fx["family"]}
    if kind == "tensors":
        what, tensors = draw(damaged_weights(fx["state"], fx["other"]))
        files["bad.safetensors"] = _safetensors(tensors, fx["meta"])
    elif kind == "metadata":
        key, value = draw(st.sampled_from([("test_error", v) for v in ("abc", "nan", "inf", "-1", "101", "", "1e400")]
                                          + [("seed", v) for v in ("\u00b2", "-1", "1e3", "x", "9" * 30)]
                                          + [("test_images", v) for v in ("\u0663", "-5", "1.5")]))
        what = f"metadata {key} = {value!r}"
        files["bad.safetensors"] = _safetensors(fx["state"], {**fx["meta"], key: value})
    else:
        how = draw(st.sampled_from(["truncated", "another network's file", "empty", "a folder", "/etc/passwd",
                                    "not safetensors"]))
        what = f"file: {how}"
        raw = fx["model"]
        if how == "truncated":
            files["bad.safetensors"] = raw[:draw(st.integers(0, len(raw) - 1))]
        elif how == "another network's file":
            files["bad.safetensors"] = fx["other_model"]
        elif how == "empty":
            files["bad.safetensors"] = b""
        elif how == "a folder":
            files["bad.safetensors"] = None
        elif how == "/etc/passwd":
            name = "/etc/passwd"
        else:
            files["bad.safetensors"] = b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"
    commands, plan = _weights_commands(draw, name, "/etc/passwd" if name == "/etc/passwd" else "bad.safetensors",
                                       what == "file: another network's file")
    if commands == [RESUME]:
        files.update({f"run/{k}": v for k, v in fx["run"].items()})
        files["run/base.safetensors"] = files.get("bad.safetensors", Path("/etc/passwd").read_bytes())
    files["plan.toml"] = plan.encode()
    return Case("weights", what, files, commands, {"ARCHFAMILY_ZOO": "{d}/zoo"})


NUMERIC_OPTIONS: list[tuple[list[str], str, list[str]]] = [  # (command up to the option, option, bad values)
    (["bench", "--family", "{d}/family.json", "--params", "40k", "--quick", "--out", "{d}/out"], "--threads",
     BAD_COUNTS + ["1,1", ","]),
    (["bench", "--family", "{d}/family.json", "--params", "40k", "--quick", "--out", "{d}/out"], "--batch",
     BAD_COUNTS + ["4097"]),
    (["bench", "--family", "{d}/family.json", "--params", "40k", "--quick", "--out", "{d}/out"], "--rounds",
     BAD_COUNTS + ["1000000000000"]),
    (["scale", "--family", "{d}/family.json", "--latency-ms", "3"], "--batch", BAD_COUNTS),
    (["scale", "--family", "{d}/family.json", "--latency-ms", "3"], "--round-to", BAD_COUNTS + ["1000000"]),
    (["scale", "--family", "{d}/family.json", "--params", "40k"], "--round-to", BAD_COUNTS + ["257"]),
    (["scale", "--family", "{d}/family.json", "--latency-ms", "3"], "--on",
     [f"cpu:{v}" for v in BAD_COUNTS] + ["gpu", "cuda:0", "cpu:1:2"]),
    (["scale", "--family", "{d}/family.json"], "--latency-ms", BAD_FLOATS + ["1e9"]),
    (["scale", "--family", "{d}/family.json", "--params", "40k"], "--at", BAD_FLOATS + ["1.5"]),
    (["derive", "--preset", "smoke", "--method", "fisher-penalty", "--cost", "latency", "--device", "cpu",
      "--out", "{d}/out"], "--on", [f"cpu:{v}" for v in BAD_COUNTS]),
    (["study", "{d}/plan.toml", "--dry-run", "--out", "{d}/out"], "--threads", BAD_COUNTS),
    (["study", "{d}/plan.toml", "--dry-run", "--out", "{d}/out"], "-j", BAD_COUNTS + ["99999999999999999999999"]),
    (["study", "{d}/plan.toml", "--dry-run", "--out", "{d}/out"], "--arms", [",", " , ", "nope"]),
    (["train", "--spec", BASE, "--device", "cpu", "--out", "{d}/out"], "--epochs", BAD_FLOATS + ["100001"]),
    (["train", "--spec", BASE, "--device", "cpu", "--out", "{d}/out"], "--batch-size", BAD_COUNTS + ["50001"]),
    (["train", "--spec", BASE, "--device", "cpu", "--out", "{d}/out"], "--subset", BAD_COUNTS + ["9", "50001"]),
    (["train", "--spec", BASE, "--device", "cpu", "--out", "{d}/out"], "--seed",
     [v for v in BAD_COUNTS if v != "0"] + ["2147483648"]),
    (["export", "--family", "{d}/family.json", "--params", "40k", "--out", "{d}/out"], "--round-to", BAD_COUNTS),
    (["export", "--family", "{d}/family.json", "--out", "{d}/out"], "--params", BAD_COUNTS[1:] + ["1e400", "9G"]),
    (["derive", "--preset", "smoke", "--device", "cpu", "--out", "{d}/out"], "--until-params",
     ["", "0", "-1", "1e400", "nan", "\u0663k"]),
    (["derive", "--preset", "smoke", "--device", "cpu", "--out", "{d}/out"], "--save-at", ["", ",", "0", "1e400"]),
]


@st.composite
def number_cases(draw: Callable, fx: dict[str, Any]) -> Case:
    """A count or figure outside its documented range (or not a number at all) on the command line."""
    command, option, values = draw(st.sampled_from(NUMERIC_OPTIONS))
    value = draw(st.sampled_from(values))
    return Case("numbers", f"{command[0]} {option} {value!r}", {"family.json": fx["family"], "plan.toml": PLAN.encode()},
                [[*command, option, value]])


PLAN_KEYS: list[tuple[str, str, list[str]]] = [  # (table, key, bad TOML values)
    ("recipe", "batch_size", BAD_TOML_NUMBERS), ("recipe", "epochs", BAD_TOML_NUMBERS[:4] + ['"1"', "nan", "inf"]),
    ("data", "subset", BAD_TOML_NUMBERS + ["5", "50001"]), ("data", "test_subset", BAD_TOML_NUMBERS + ["10001"]),
    ("arms.reduced-width", "round_to", BAD_TOML_NUMBERS + ["1000000000", "257"]),
    ("arms.reduced-width", "seeds", ["[-1]", "[4294967296]", "[1.5]", "[]", '["0"]', "[0, 0]"]),
    ("prune.fisher", "prune_every", BAD_TOML_NUMBERS), ("prune.fisher", "channels_per_step", BAD_TOML_NUMBERS),
    ("prune.fisher", "seed", ["-1", "4294967296", "1.5"]),
    ("latency", "on", ['"cpu:99999999999999999999"', '"cpu:\u00b2"', '"cpu:0"', '"gpu"', '"cpu:"', "1"]),
    ("latency", "batch", BAD_TOML_NUMBERS + ["4097"]),
    ("bench", "threads", ["[0]", "[99999999999999999999]", "[1000]", "[]", '["1"]']),
    ("bench", "batches", ["[0]", "[100000]", "[1.5]"]), ("bench", "rounds", BAD_TOML_NUMBERS + ["101"]),
    ("data", "path", ['"../../../../../../etc"', '"/etc/passwd"', '"."', '"nowhere"', '"\\u0000"']),
    ("base", "checkpoint", ['"/etc/passwd"', '"."', '"truncated.safetensors"', '"other.safetensors"',
                            '"nan.safetensors"', '"nowhere.safetensors"']),
]


@st.composite
def plan_cases(draw: Callable, fx: dict[str, Any]) -> Case:
    """A plan with one key out of its range or of the wrong kind, a path that is not what it must be, or text
    that is not a plan (5,000 digits, 100,000 levels of nesting, truncated); read by `--dry-run` and by a real
    run, both of which must refuse it before the first job."""
    files: dict[str, Optional[bytes]] = {}
    if draw(st.booleans()):
        table, key, values = draw(st.sampled_from(PLAN_KEYS))
        value = draw(st.sampled_from(values))
        text, what = toml_with(PLAN, table, key, value), f"[{table}] {key} = {value[:30]}"
        if key == "checkpoint":
            text = text.replace('spec = "wrn-16-1"', f'spec = "{BASE}"')
            files["truncated.safetensors"] = fx["model"][:1000]
            files["other.safetensors"] = fx["other_model"]
            state = {k: v.clone() for k, v in fx["state"].items()}
            next(v for v in state.values() if v.is_floating_point()).fill_(float("nan"))
            files["nan.safetensors"] = _safetensors(state, fx["meta"])
        raw = text.encode()
    else:
        what, raw = draw(damaged_toml(PLAN, "[recipe]", '["60k"]'))
    files["plan.toml"] = raw
    return Case("plans", what, files, [["study", "{d}/plan.toml", "--dry-run", "--out", "{d}/out"],
                                       ["study", "{d}/plan.toml", "--out", "{d}/out"]])


@st.composite
def study_cases(draw: Callable, fx: dict[str, Any]) -> Case:
    """A finished study folder with one record or result damaged, a folder where a file should be (or the
    reverse), or something no study writes in it; `study` must refuse before it deletes, re-runs or writes."""
    files = {f"study/{k}": v for k, v in fx["study"].items()}
    files["plan.toml"] = PLAN.encode()
    records = sorted(k for k in files if "/jobs/" in k)
    metrics = sorted(k for k in files if k.endswith("metrics.json"))
    kind = draw(st.sampled_from(["record", "metrics", "metrics", "layout"]))
    if kind == "record":
        path = draw(st.sampled_from(records))
        doc = json.loads(files[path])
        if draw(st.booleans()):
            seconds = draw(st.sampled_from([1e308, 1e12, -1.0, "12", True, None]))
            files[path] = json.dumps({**doc, "seconds": seconds}).encode()
            what = f"{path}: seconds {seconds!r}"
        else:
            what, files[path] = draw(damaged(doc, lambda p: True))
            what = f"{path}: {what}"
    elif kind == "metrics":
        path = draw(st.sampled_from(metrics))
        doc = json.loads(files[path])
        how = draw(st.sampled_from(["figure", "another run's", "damaged"]))
        if how == "another run's":
            files[path] = files[next(m for m in metrics if m != path)]
            what = f"{path}: another run's metrics"
        elif how == "figure":
            key = draw(st.sampled_from(["params", "macs"]))
            files[path] = json.dumps({**doc, key: draw(st.sampled_from([1, doc[key] + 1, doc[key] * 2]))}).encode()
            what = f"{path}: {key} not its spec's"
        else:
            used = under(["test_error"], ["params"], ["macs"], ["test_images"], ["spec"], ["seconds"])
            what, files[path] = draw(damaged(doc, lambda p: used(p) and p[-1] not in ("stem_width", "in_chans",
                                                                                      "num_classes", "compression",
                                                                                      "stem", "mid2_widths"),
                                             lambda p: p[:1] != ("seconds",) and p[-1] not in
                                             ("stem_width", "in_chans", "num_classes", "compression", "stem",
                                              "mid2_widths"),
                                             lambda p: p[:1] == ("spec",)))
            what = f"{path}: {what}"
    else:
        how = draw(st.sampled_from(["jobs is a file", "runs is a file", "a stranger file", "bench results damaged"]))
        what = how
        if how in ("jobs is a file", "runs is a file"):
            folder = "study/" + how.split()[0]
            files = {k: v for k, v in files.items() if not k.startswith(folder + "/")}
            files[folder] = b"not a folder"
        elif how == "a stranger file":
            files["study/notes.txt"] = b"mine"
        else:
            files["study/bench/results.json"] = b'{"rows": [{"device": "cpu"}]}'
    return Case("study folders", what, files, [["study", "{d}/plan.toml", "--out", "{d}/study"],
                                               ["study", "{d}/plan.toml", "--dry-run", "--out", "{d}/study"]])


@st.composite
def zoo_cases(draw: Callable, fx: dict[str, Any]) -> Case:
    """A zoo whose manifest lists a name twice or is damaged, or whose entry's weights are a folder: list, eval
    and remove must refuse without touching the manifest or the weights."""
    files: dict[str, Optional[bytes]] = {f"zoo/{k}": v for k, v in fx["zoo"].items()}
    manifest = json.loads(fx["zoo"]["manifest.json"])
    entry = manifest["entries"][0]
    kind = draw(st.sampled_from(["twice", "weights folder", "damaged"]))
    if kind == "twice":
        second = {**entry, "tag": draw(st.sampled_from([entry["tag"], "other"]))}
        files["zoo/manifest.json"] = json.dumps({**manifest, "entries": [entry, second]}).encode()
        what = "an entry listed twice"
    elif kind == "weights folder":
        files[f"zoo/{entry['file']}"] = None
        what = "the weights are a folder"
    else:
        used = under(["format"], ["version"], ["entries"])
        what, files["zoo/manifest.json"] = draw(damaged(
            manifest, lambda p: used(p) and not set(p[2:3]) & {"source", "recipe", "added", "data"},
            lambda p: p[:1] != ("entries",) or len(p) == 3 and p[2] not in ("recipe", "added", "data"),
            lambda p: "model_args" in p))
    command = draw(st.sampled_from([["zoo", "remove", entry["name"]], ["zoo", "list"],
                                    ["zoo", "eval", entry["name"], "--test-subset", "100"]]))
    if kind == "weights folder" and command[1] != "remove":
        command = ["zoo", "remove", entry["name"]]
    return Case("zoo", what, files, [command], {"ARCHFAMILY_ZOO": "{d}/zoo"})


def _unnamed(fx: dict[str, Any]) -> list[str]:
    """The files a keyword or a field of these inputs points at, which no command named: none may open them."""
    return ["/etc/passwd", str(fx["folder"] / "evil.pkl")]


def _keyword_value(text: str) -> Any:
    """A `--model-kwargs` value as a spec file holds it: what the command line reads the text as."""
    from archfamily.anycnn.spec import parse_model_kwargs

    return parse_model_kwargs({"k": text})["k"]


@st.composite
def keyword_cases(draw: Callable, fx: dict[str, Any]) -> Case:
    """A timm base's create_model keyword no base may be built with (`BAD_MODEL_KWARGS`), on the command line or in
    a spec file's model_kwargs; train, derive and export must refuse it before building or writing anything."""
    model, text = draw(st.sampled_from(BAD_MODEL_KWARGS))
    key, _, value = text.partition("=")
    if draw(st.booleans()):
        command = draw(st.sampled_from([["train", "--spec", f"timm:{model}", "--device", "cpu", "--out", "{d}/out"],
                                        ["derive", "--preset", "smoke", "--base", f"timm:{model}", "--device", "cpu",
                                         "--out", "{d}/out"]]))
        return Case("timm keywords", f"timm:{model} --model-kwargs {text[:40]}", {},
                    [[*command, "--model-kwargs", text]], not_read=_unnamed(fx))
    spec = json.loads(fx["timm_spec"]) if model == TIMM_BASE else \
        {"family": "timm", "base": model, "widths": [1], "num_classes": 10}  # refused before its widths are read
    spec["model_kwargs"] = {key: _keyword_value(value)}
    command = draw(st.sampled_from([["train", "--spec", "{d}/spec.json", "--device", "cpu", "--out", "{d}/out"],
                                    ["export", "--spec", "{d}/spec.json", "--out", "{d}/out"]]))
    return Case("timm keywords", f"spec.json timm:{model} model_kwargs {text[:40]}",
                {"spec.json": json.dumps(spec).encode()}, [command], not_read=_unnamed(fx))


def _planted(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> bytes:
    """`doc` with `value` set at `path` (the objects on the way made where missing)."""
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent.setdefault(key, {})
    parent[path[-1]] = value
    return json.dumps(doc).encode()


@st.composite
def export_cases(draw: Callable, fx: dict[str, Any]) -> Case:
    """An `archfamily export` folder (of a timm base's member with its own keywords, or of a WRN) whose config.json
    is damaged (any field, the bytes), holds what timm would follow or choke on (`PLANTED_EXPORT`), or whose files
    are missing or not its own (without a config.json it is a model folder, which `zoo add` takes); `zoo add`
    loads it as timm's `local-dir:` does and must refuse it, reading nothing the folder does not hold."""
    which = draw(st.sampled_from(["timm", "wrn"]))
    files: dict[str, Optional[bytes]] = {f"export/{k}": v for k, v in fx["exports"][which].items()}
    config = json.loads(fx["exports"][which]["config.json"])
    kind = draw(st.sampled_from(["damaged", "damaged", "planted", "files"]))
    if kind == "damaged":
        informational = {("pretrained_cfg", "license"), ("pretrained_cfg", "paper_ids")}
        what, files["export/config.json"] = draw(damaged(config, lambda p: True,
                                                         lambda p: tuple(p[:2]) not in informational,
                                                         lambda p: True))
    elif kind == "planted":
        path, value = draw(st.sampled_from(PLANTED_EXPORT))
        value = str(fx["folder"] / "evil.pkl") if value == "evil.pkl" else value
        what = f"{'/'.join(path)} = {json.dumps(value)[:40]}"
        files["export/config.json"] = _planted(config, path, value)
    else:
        what = draw(st.sampled_from(["config.json a folder", "no model.safetensors",
                                     "a pickle for model.safetensors", "another network's model.safetensors",
                                     "model.safetensors truncated"]))
        weights = files["export/model.safetensors"]
        if what == "config.json a folder":
            files["export/config.json"] = None
        elif what in ("no model.safetensors", "a pickle for model.safetensors"):
            del files["export/model.safetensors"]
            if what == "a pickle for model.safetensors":
                files["export/pytorch_model.bin"] = PICKLE
        elif what == "another network's model.safetensors":
            files["export/model.safetensors"] = fx["other_model"]
        else:
            files["export/model.safetensors"] = weights[:draw(st.integers(0, len(weights) - 1))]
    return Case("exported folders", f"{which}: {what}", files,
                [["zoo", "add", "{d}/export", "--name", "fuzzed", "--test-subset", "100"]],
                {"ARCHFAMILY_ZOO": "{d}/zoo"}, _unnamed(fx))


@st.composite
def timm_family_cases(draw: Callable, fx: dict[str, Any]) -> Case:
    """The family.json of a timm base (its own keywords among the base's fields) whose `groups` is no pruning
    policy, whose base's model_kwargs hold a keyword no base may be built with, or whose base is damaged (a width,
    the base's name, its keywords); scale and export must refuse it."""
    doc = json.loads(fx["timm_family"])
    kind = draw(st.sampled_from(["groups", "keywords", "damaged"]))
    if kind == "groups":
        value = draw(st.sampled_from(["bogus", "", "ALL", 5, None, ["all"], True]))
        what, raw = f"groups {json.dumps(value)}", json.dumps({**doc, "groups": value}).encode()
    elif kind == "keywords":
        model, text = draw(st.sampled_from([m for m in BAD_MODEL_KWARGS if m[0] == TIMM_BASE]))
        key, _, value = text.partition("=")
        what = f"base model_kwargs {text[:40]}"
        raw = _planted(doc, ("base", "model_kwargs"), {key: _keyword_value(value)})
    else:
        what, raw = draw(damaged(doc, under(["base"]),
                                 lambda p: tuple(p[:2]) in (("base", "base"), ("base", "widths"),
                                                            ("base", "model_kwargs")),
                                 lambda p: True))
    command = draw(st.sampled_from([["scale", "--family", "{d}/family.json", "--params", "250k"],
                                    ["export", "--family", "{d}/family.json", "--params", "250k", "--out",
                                     "{d}/out"]]))
    return Case("timm families", what, {"family.json": raw}, [command], not_read=_unnamed(fx))


def _png(side: int, shade: int, mode: str = "RGB") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, (side, side), shade).save(out, format="PNG")
    return out.getvalue()


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, raw in members:
            info.size = len(raw) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(raw) if info.isfile() else None)
    return out.getvalue()


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


DATA_DAMAGE = ("a 0-byte image", "text posing as an image", "a truncated image", "a decompression bomb",
               "one class", "classes that differ between splits", "an empty held-out split", "no train split",
               "an archive member with ..", "an absolute archive member", "an archive symlink to /etc/passwd",
               "an archive hard link", "bytes that are no archive")


@st.composite
def data_cases(draw: Callable, fx: dict[str, Any]) -> Case:
    """A user's ImageFolder tree or tar archive (two classes of 16-pixel PNGs, train/ and val/) damaged one way
    (`DATA_DAMAGE`): `train` must refuse it naming the file, before writing anything or caching anything."""
    tree: dict[str, Optional[bytes]] = {f"data/{split}/{cls}/{i}.png": _png(16, 40 * i + (100 if cls == "b" else 0))
                                        for split, n in (("train", 2), ("val", 1)) for cls in "ab" for i in range(n)}
    what = draw(st.sampled_from(DATA_DAMAGE))
    source = "{d}/data"
    if what == "a 0-byte image":
        tree["data/train/a/0.png"] = b""
    elif what == "text posing as an image":
        tree["data/val/b/x.jpg"] = b"not an image at all"
    elif what == "a truncated image":
        tree["data/train/b/1.png"] = tree["data/train/b/1.png"][:draw(st.integers(8, 45))]  # into its pixels
    elif what == "a decompression bomb":
        tree["data/train/a/bomb.png"] = _png(8000, 0, "1")  # 64M pixels in a few kB
    elif what == "one class":
        tree = {k: v for k, v in tree.items() if "/b/" not in k}
    elif what == "classes that differ between splits":
        tree["data/val/c/0.png"] = tree.pop("data/val/b/0.png")
    elif what == "an empty held-out split":
        tree = {**{k: v for k, v in tree.items() if "/val/" not in k}, "data/val": None}
    elif what == "no train split":
        tree = {k: v for k, v in tree.items() if "/train/" not in k}
    else:
        members = [(tarfile.TarInfo(k[len("data/"):]), v) for k, v in tree.items() if v is not None]
        bad = {"an archive member with ..": (tarfile.TarInfo("../../x/train/a/9.png"), members[0][1]),
               "an absolute archive member": (tarfile.TarInfo("/tmp/train/a/9.png"), members[0][1]),
               "an archive symlink to /etc/passwd": _link("train/a/9.png", "/etc/passwd", tarfile.SYMTYPE),
               "an archive hard link": _link("train/a/9.png", "/etc/passwd", tarfile.LNKTYPE)}.get(what)
        raw = _tar(members + [bad]) if bad else draw(st.binary(min_size=0, max_size=64))
        tree, source = {"data.tar": raw}, "{d}/data.tar"
    return Case("data", what, tree, [["train", "--spec", BASE, "--data", source, "--input-size", "16", "--epochs",
                                      "0.1", "--device", "cpu", "--out", "{d}/out"]],
                {"ARCHFAMILY_CACHE": "{d}/cache"}, _unnamed(fx))


FAMILIES = {"weights": weights_cases, "numbers": number_cases, "plans": plan_cases, "study folders": study_cases,
            "zoo": zoo_cases, "timm keywords": keyword_cases, "exported folders": export_cases,
            "timm families": timm_family_cases, "data": data_cases}


# ---------------------------------------------------------------- running one input


def write_case(case: Case, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, raw in case.files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(raw)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`, with a hash of each file's bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def refused(code: int, err: str) -> Optional[str]:
    """None when a command refused as it must (exit 2, one `archfamily: error:` line); else what it did."""
    lines = [ln for ln in err.strip().splitlines() if not any(n in ln for n in NOISE)]
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if code == 124:
        return "hang"
    if code == 0:
        return "accepted"
    if code != 2:
        return f"exit {code}"
    if len(lines) != 1 or not lines[0].startswith("archfamily: error: "):
        return "not one line"
    return None


def fork_runner(timeout: float) -> Callable[[list[str], Path, dict[str, str]], tuple[int, str]]:
    """Run `archfamily ARGS` as a child forked from this process (torch and the CLI already imported)."""
    import archfamily.cli.main  # noqa: F401  imported before the fork, so each child starts at once

    def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
        err_path = cwd.parent / f".{cwd.name}.stderr"
        pid = os.fork()
        if pid == 0:  # the child: the CLI as its console script runs it
            code = 1
            try:
                os.chdir(cwd)
                os.environ.update(env)
                fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 2)
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                sys.argv = ["archfamily", *args]
                try:
                    archfamily.cli.main.main(args)
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                except BaseException:
                    import traceback

                    traceback.print_exc()
                    code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        deadline = time.time() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.time() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                code = 124
                break
            time.sleep(0.02)
        err = err_path.read_text(errors="replace")
        err_path.unlink()
        return code, err

    return run


def exec_runner(timeout: float) -> Callable[[list[str], Path, dict[str, str]], tuple[int, str]]:
    """Run `python -m archfamily ARGS` in a new interpreter, as a user's shell would."""

    def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
        try:
            done = subprocess.run([sys.executable, "-m", "archfamily", *args], cwd=cwd, capture_output=True, text=True,
                                  timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
        except subprocess.TimeoutExpired:
            return 124, ""
        return done.returncode, done.stderr

    return run


AUDITED: list[Callable[..., None]] = []  # the audit hook, once installed
WATCHED: set[str] = set()  # what the input being checked names that no command may open (`Case.not_read`)
OPENED = "fuzz: opened "  # how a command says it opened one, on its stderr


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Python's audit hook: a line on stderr when the command opens a watched file (as `open` and `torch.load` do;
    safetensors opens files outside Python, and reads only model files)."""
    if event == "open" and WATCHED and isinstance(args[0], (str, bytes, os.PathLike)) \
            and os.path.realpath(os.fsdecode(args[0])) in WATCHED:
        sys.stderr.write(f"{OPENED}{os.fsdecode(args[0])}\n")


def check_case(case: Case, folder: Path, run: Callable[[list[str], Path, dict[str, str]], tuple[int, str]]) \
        -> list[tuple[str, str]]:
    """What went wrong with one input, as (kind, details): empty when every command refused it cleanly, opened
    none of the files it must not read, and left the folder as it was."""
    if case.not_read and _audit not in AUDITED:
        sys.addaudithook(_audit)  # once per process: a hook cannot be removed
        AUDITED.append(_audit)
    write_case(case, folder)
    before = snapshot(folder)
    env = {k: v.replace("{d}", str(folder)) for k, v in case.env.items()}
    problems = []
    for command in case.commands:
        args = [a.replace("{d}", str(folder)) for a in command]
        WATCHED.update(os.path.realpath(p) for p in case.not_read)
        try:
            code, err = run(args, folder, env)
        finally:
            WATCHED.clear()
        opened = [ln for ln in err.splitlines() if ln.startswith(OPENED)]
        if opened:
            problems.append(("read a file it was not given", f"archfamily {' '.join(args)[:160]}: {opened[0]}"))
            err = "\n".join(ln for ln in err.splitlines() if not ln.startswith(OPENED))
        outcome = refused(code, err)
        if outcome is not None:
            problems.append((outcome, f"archfamily {' '.join(args)[:160]}: {err.strip()[-300:]}"))
        if snapshot(folder) != before:
            changed = sorted(set(snapshot(folder).items()) ^ set(before.items()))
            problems.append(("changed the folder", f"{changed[0][0]}: archfamily {' '.join(args)[:160]}"))
            break
    return problems


def draw_cases(fx: dict[str, Any], count: int, seed: int) -> list[Case]:
    """`count` inputs spread over the families, drawn with hypothesis from `seed` (the same seed, the same inputs)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as with_seed

    cases: list[Case] = []
    per_family = -(-count // len(FAMILIES))
    for i, strategy in enumerate(FAMILIES.values()):
        drawn: list[Case] = []

        @with_seed(seed * 100 + i)  # a seed per family: the same inputs every time
        @settings(max_examples=per_family, database=None, deadline=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.generate])
        @given(strategy(fx))
        def collect(case: Case) -> None:
            drawn.append(case)

        collect()
        cases += drawn[:per_family]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="inputs, spread over the families")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a command counts as a hang")
    parser.add_argument("--exec", dest="exec_", action="store_true", help="a new interpreter per command")
    parser.add_argument("--work", default=None, help="folder for the inputs [a temporary one]")
    args = parser.parse_args()
    import tempfile

    import torch

    torch.set_num_threads(1)  # one thread in this process, so forking it is safe
    work = Path(args.work or tempfile.mkdtemp(prefix="archfamily-fuzz-"))
    os.environ.setdefault("ARCHFAMILY_CACHE", str(work / "cache"))
    run = exec_runner(args.timeout) if args.exec_ else fork_runner(args.timeout)
    fx = fixtures(work / "fixtures", run)
    cases = draw_cases(fx, args.count, args.seed)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    started = time.time()
    for i, case in enumerate(cases):
        problems = check_case(case, work / f"case-{i:04d}", run)
        counts[case.family]["inputs"] += 1
        counts[case.family]["commands"] += len(case.commands)
        counts[case.family]["refused cleanly"] += not problems
        for kind, _ in problems:
            counts[case.family][kind] += 1
        failures += [f"[{case.family}] {case.what}: {kind}: {details}" for kind, details in problems]
        print(f"{i + 1}/{len(cases)} {case.family}: {case.what[:70]}: "
              f"{'ok' if not problems else ': '.join(problems[0])[:300]}", flush=True)
    total = collections.Counter()
    for c in counts.values():
        total.update(c)
    print(f"\n{len(cases)} inputs, {total['commands']} commands in {time.time() - started:.0f} s")
    for family, c in sorted(counts.items()):
        print(f"  {family:<14} {dict(c)}")
    print(f"tracebacks {total['traceback']}, accepted {total['accepted']}, hangs {total['hang']}, "
          f"other exits {sum(v for k, v in total.items() if k.startswith('exit'))}, "
          f"not one line {total['not one line']}, folder changed {total['changed the folder']}, "
          f"files read it was not given {total['read a file it was not given']}")
    for f in failures:
        print(f"FAIL {f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
