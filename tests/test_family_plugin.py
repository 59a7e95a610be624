"""A base family added as a plug-in: one module (`vgg_family.py`) and one registration, then every command that
takes a built-in family takes it too: derive, scale, export, timm's `local-dir:` and the spec files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import vgg_family
from archfamily import families
from archfamily.models import build_model
from archfamily.models.counting import count_params, measure_macs
from archfamily.specs import base_spec, register_family, spec_from_dict, spec_to_dict


@pytest.fixture
def vgg() -> families.FamilyType:
    return register_family(vgg_family.VGG_FAMILY)


def test_a_registered_family_counts_exactly_and_reads_back(vgg: families.FamilyType) -> None:
    spec = base_spec("vgg-7-8")
    assert spec.widths == ((8, 8, 8), (16, 16), (32, 32))
    model = build_model(spec)
    assert spec.num_params() == count_params(model) and spec.num_macs() == measure_macs(model, 32, 3)
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    with pytest.raises(Exception, match="widths must be rows of whole numbers"):
        spec_from_dict({**spec_to_dict(spec), "widths": [[8, -1]]})
    with pytest.raises(Exception, match="out_width must be a whole number"):
        spec_from_dict({**spec_to_dict(spec), "out_width": "wide"})


def test_a_registered_family_derives_scales_and_exports(vgg: families.FamilyType, run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = run_cli("derive", "--preset", "smoke", "--base", "vgg-6-16", "--out", str(run))
    assert done.code == 0, done.err
    family = json.loads((run / "family.json").read_text())
    assert family["base"]["family"] == "vgg"
    member = tmp_path / "member.json"
    done = run_cli("scale", "--family", str(run / "family.json"), "--params", "20k", "--out", str(member))
    assert done.code == 0, done.err
    spec = spec_from_dict(json.loads(member.read_text()))
    assert abs(spec.num_params() - 20_000) < 2_000
    folder = tmp_path / "exported"
    done = run_cli("export", "--spec", str(member), "--out", str(folder))
    assert done.code == 0, done.err
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert type(model).__name__ == "VGG" and model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_an_installed_plugin_is_loaded_by_the_command_and_a_broken_one_is_one_line(monkeypatch, capsys) -> None:
    import importlib.metadata

    from archfamily.cli.plugins import GROUP, load_plugins

    points = [importlib.metadata.EntryPoint("vgg", "vgg_family:register", GROUP),
              importlib.metadata.EntryPoint("broken", "archfamily_no_such_plugin:register", GROUP)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: points if group == GROUP else [])
    assert load_plugins() == ["vgg"] and "vgg" in families.family_names()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["archfamily: warning: plug-in broken (archfamily_no_such_plugin:register) did not load: "
                   "ModuleNotFoundError: No module named 'archfamily_no_such_plugin'"]


@pytest.mark.parametrize("reads", ["base_spec('timm:mobilenetv2_050')",
                                   "spec_from_dict(json.loads(sys.argv[1]))"])
def test_the_timm_family_needs_no_import_of_its_own(reads: str) -> None:
    """A library user reads a timm member's spec file, or names `timm:NAME`, with `archfamily.specs` alone: the
    built-in timm family registers itself on that first lookup."""
    import subprocess
    import sys

    member = json.dumps(spec_to_dict(base_spec("timm:mobilenetv2_050")))
    code = ("import json, sys; from archfamily.specs import base_spec, spec_from_dict; "
            f"print(type({reads}).__name__, 'archfamily.anycnn.family' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, member], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["TimmSpec", "True"]
