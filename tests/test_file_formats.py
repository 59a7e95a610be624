"""Every file archfamily reads, damaged on purpose: one line and exit code 2, never a traceback, never accepted.

Each test mutates one valid file (tests/mutations.py: every mutation is invalid by
construction) and runs the command that reads it. `ARCHFAMILY_FUZZ_EXAMPLES` sets the
examples per format (default 12, derandomized, so CI runs the same ones every time).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from archfamily.models.checkpoint import save_model
from archfamily.errors import UserError
from archfamily.models import build_model
from archfamily.specs import WideResNetSpec, spec_to_dict
from families import write_family
from mutations import damaged, under

FIXTURES = Path(__file__).parent / "fixtures"
FUZZ = settings(max_examples=int(os.environ.get("ARCHFAMILY_FUZZ_EXAMPLES", "12")), derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
SPEC = WideResNetSpec.from_depth_width(10, 1).with_prunable_widths([7, 0, 40])
RATIO_LISTS = ("widths", "block_ratios", "stage_ratios", "blocks")
DEFAULTED = ("stem_width", "num_classes", "in_chans", "compression", "stem", "mid2_widths")  # a spec may leave out
INFORMATIONAL = ("r2", "rms_log", "points")  # fit quality figures, shown to people and used for nothing


def _refused(result: Any, what: str) -> None:
    """Exit 2 with one `archfamily: error:` line (a traceback would have failed the test already)."""
    assert result.code == 2, f"accepted a damaged file ({what}): {result.out[-300:]}"
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archfamily: error: "), (what, result.err)


def _fixed_length(path: tuple) -> bool:
    return path[0] == "base" or (isinstance(path[-1], str) and path[-1] in RATIO_LISTS)


@pytest.fixture(scope="module")
def family_doc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return json.loads(write_family(tmp_path_factory.mktemp("family"), "wrn-10-1", k=4).read_text())


def _family_field_used(path: tuple) -> bool:
    return (under(["format"], ["version"], ["base"], ["base_name"], ["method"], ["trajectory"], ["rules"])(path)
            and path[-1] not in INFORMATIONAL and "test_error" not in path[:1])


@FUZZ
@given(data=__import__("hypothesis").strategies.data())
def test_family_json(run_cli, family_doc: dict, tmp_path: Path, data) -> None:
    what, raw = data.draw(damaged(family_doc, _family_field_used, lambda p: p[:2] != ("rules", "fitted"),
                                  _fixed_length))
    path = tmp_path / "family.json"
    path.write_bytes(raw)
    _refused(run_cli("scale", "--family", str(path), "--params", "40k"), what)
    _refused(run_cli("export", "--family", str(path), "--params", "40k", "--out", str(tmp_path / "member")), what)
    _refused(run_cli("bench", "--family", str(path), "--params", "40k", "--quick", "--out", str(tmp_path / "b")), what)
    assert not (tmp_path / "member").exists() and not (tmp_path / "b").exists()


def _finished_run(folder: Path) -> Path:
    """A finished smoke derive run: what `derive --resume` reads before it knows it has nothing to do."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "run-smoke.json", folder / "run.json")
    shutil.copy(FIXTURES / "family-v1.json", folder / "family.json")
    shutil.copy(FIXTURES / "trajectory-v1.jsonl", folder / "trajectory.jsonl")
    return folder


def test_the_finished_run_fixture_resumes(run_cli, tmp_path: Path) -> None:
    result = run_cli("derive", "--preset", "smoke", "--device", "cpu", "--resume", "--out", str(_finished_run(tmp_path)))
    assert result.code == 0 and "pruned in 13 steps" in result.out, result.err


RUN = json.loads((FIXTURES / "run-smoke.json").read_text())


@FUZZ
@given(data=__import__("hypothesis").strategies.data())
def test_run_json(run_cli, tmp_path: Path, data) -> None:
    # a setting left out equals it unset (runs from before it existed resume), so only set ones may go
    set_keys = lambda p: p[:1] == ("config",) and (len(p) != 2 or RUN["config"][p[1]] not in (None, [], False))
    what, raw = data.draw(damaged(RUN, under(["config"]), set_keys, lambda p: False))
    folder = _finished_run(tmp_path / "run")
    (folder / "run.json").write_bytes(raw)
    before = sorted((p.name, p.read_bytes()) for p in folder.iterdir())
    _refused(run_cli("derive", "--preset", "smoke", "--device", "cpu", "--resume", "--out", str(folder)), what)
    assert sorted((p.name, p.read_bytes()) for p in folder.iterdir()) == before  # the run folder as it was


@FUZZ
@given(data=__import__("hypothesis").strategies.data())
def test_trajectory_line(run_cli, tmp_path: Path, data) -> None:
    lines = (FIXTURES / "trajectory-v1.jsonl").read_text().splitlines()
    what, raw = data.draw(damaged(json.loads(lines[3]), lambda p: p[0] != "spec" or len(p) > 1,
                                  lambda p: p[-1] not in DEFAULTED, lambda p: p[0] == "spec"))
    folder = _finished_run(tmp_path / "run")
    (folder / "trajectory.jsonl").write_bytes("\n".join(lines[:3]).encode() + b"\n" + raw + b"\n")
    _refused(run_cli("derive", "--preset", "smoke", "--device", "cpu", "--resume", "--out", str(folder)), what)


@FUZZ
@given(data=__import__("hypothesis").strategies.data())
def test_spec_json_and_model_file_metadata(run_cli, tmp_path: Path, monkeypatch, data) -> None:
    what, raw = data.draw(damaged(spec_to_dict(SPEC), lambda p: True, lambda p: p[-1] not in DEFAULTED,
                                  lambda p: p in (("stage_widths",), ("inner_widths",))))
    spec_file = tmp_path / "spec.json"
    spec_file.write_bytes(raw)
    _refused(run_cli("export", "--spec", str(spec_file), "--out", str(tmp_path / "a")), what)
    _refused(run_cli("train", "--spec", str(spec_file), "--epochs", "0.01", "--subset", "100", "--test-subset", "100",
                     "--out", str(tmp_path / "t")), what)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return  # safetensors metadata is UTF-8 by format
    model_file = tmp_path / "model.safetensors"
    save_model(model_file, build_model(SPEC))
    _rewrite_metadata(model_file, "spec", text)
    _refused(run_cli("export", "--spec", str(model_file), "--out", str(tmp_path / "b")), what)
    monkeypatch.setenv("ARCHFAMILY_ZOO", str(tmp_path / "zoo"))
    _refused(run_cli("zoo", "add", str(model_file), "--name", "fuzzed", "--test-subset", "100"), what)
    assert not any((tmp_path / d).exists() for d in ("a", "b", "t", "zoo"))


def _rewrite_metadata(path: Path, key: str, value: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    save_file(load_file(str(path)), str(path), metadata={**meta, key: value})


@FUZZ
@given(data=__import__("hypothesis").strategies.data())
def test_zoo_manifest(run_cli, tmp_path: Path, monkeypatch, data) -> None:
    entry = json.loads((Path(__file__).parent.parent / "zoo" / "manifest.json").read_text())["entries"][0]
    manifest = {"format": "archfamily.zoo", "version": 1, "entries": [entry]}
    used = under(["format"], ["version"], ["entries"])
    what, raw = data.draw(damaged(manifest, lambda p: used(p) and "source" not in p[2:3] and "recipe" not in p[2:3]
                                  and "added" not in p[2:3] and "data" not in p[2:3],
                                  lambda p: p[:1] != ("entries",) or len(p) == 3 and p[2] not in ("recipe", "added", "data"),
                                  lambda p: "model_args" in p))
    (tmp_path / "manifest.json").write_bytes(raw)
    monkeypatch.setenv("ARCHFAMILY_ZOO", str(tmp_path))
    _refused(run_cli("zoo", "list"), what)


@pytest.mark.parametrize("method, cost, on, recorded", [
    ("fisher", "params", None, {"cost": None, "cost_on": None}),
    ("fisher-cost", "macs", None, {"cost": "macs", "cost_on": None}),
    ("fisher-penalty", "latency", "cpu:1", {"cost": "latency", "cost_on": "cpu:1"}),
    ("fisher-cost", "latency", "cuda", {"cost": "latency", "cost_on": "cuda"}),
])
def test_a_family_records_what_its_pruning_weighed_channels_against(method: str, cost: str, on: str | None,
                                                                     recorded: dict) -> None:
    from archfamily.pruning.derive import DeriveConfig
    from archfamily.pruning.family_file import _cost_fields

    assert _cost_fields(DeriveConfig("wrn-10-1", method=method, cost=cost, cost_on=on).to_dict()) == recorded


def test_a_trajectory_line_keeps_the_penalty_beta_and_checks_it() -> None:
    from archfamily.pruning.derive import _checked_entry, trajectory_entry

    base = SPEC
    assert "beta" not in _checked_entry(trajectory_entry(base, 0, 0, 50.0), "line", base)
    assert _checked_entry(trajectory_entry(base, 3, 75, None, 0.25), "line", base)["beta"] == 0.25
    with pytest.raises(UserError, match="line: beta must be a finite number from 0"):
        _checked_entry(trajectory_entry(base, 3, 75, None, -1.0), "line", base)
