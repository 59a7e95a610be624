"""Any timm CNN through the whole command line: `derive --base timm:NAME` -> `scale` below and above the base ->
`export` -> `timm.create_model("local-dir:DIR", pretrained=True)`, on CIFAR-10's 32x32 images and a hundred of
them (the settings are the smallest that exercise every step: one training step, a few prunes)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import timm
import torch

from archfamily.models.checkpoint import load_model
from archfamily.specs import base_spec

NETWORKS = ["resnet18", "resnet50", "mobilenetv2_050", "mobilenetv3_small_050", "efficientnet_b0", "regnetx_002",
            "convnext_atto", "densenet121"]


def _derive(run_cli, name: str, out: Path, *extra: str) -> int:
    base = base_spec(f"timm:{name}").num_params()
    done = run_cli("derive", "--preset", "smoke", "--base", f"timm:{name}", "--subset", "100", "--test-subset", "100",
                   "--prune-every", "1", "-k", "32", "--eval-every", "100", "--until-params", str(base * 99 // 100),
                   "--out", str(out), *extra)
    assert done.code == 0, done.err
    return base


@pytest.mark.parametrize("name", NETWORKS)
def test_a_timm_cnn_derives_scales_exports_and_loads_through_timm(name: str, run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    base = _derive(run_cli, name, run)
    family = json.loads((run / "family.json").read_text())
    assert family["base"] == {**family["base"], "family": "timm", "base": name} and len(family["trajectory"]) > 1
    for budget in (base // 2, base * 3 // 2):
        done = run_cli("scale", "--family", str(run), "--params", str(budget), "--json")
        assert done.code == 0, done.err
        member = json.loads(done.out)
        assert member["within_1pct"] and abs(member["params"] - budget) <= budget // 100, member
    folder = tmp_path / "exported"
    done = run_cli("export", "--family", str(run), "--params", str(base // 2), "--out", str(folder))
    assert done.code == 0, done.err
    spec, saved, _ = load_model(folder / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exported without --weights: timm is told it is a random network
        loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), saved.eval()(x))
    assert sum(p.numel() for p in loaded.parameters()) == spec.num_params()


def test_inner_groups_only_leave_the_residual_streams_whole(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _derive(run_cli, "resnet18", run, "--groups", "inner")
    family = json.loads((run / "family.json").read_text())
    from archfamily.anycnn.spec import channel_groups

    streams = [i for i, g in enumerate(channel_groups("resnet18")) if not g.inner]
    last = family["trajectory"][-1]["widths"]
    assert streams and all(last[i] == family["base"]["widths"][i] for i in streams)
    assert sum(last) < sum(family["base"]["widths"])


@pytest.mark.parametrize("args, message", [
    (["--base", "timm:no_such_model"], "timm has no model 'no_such_model'"),
    (["--base", "timm:edgenext_xx_small"], "edgenext_xx_small: archfamily prunes CNNs; this model has self-attention"),
    (["--base", "timm:convnext_atto", "--method", "fisher-cost", "--cost", "latency", "--on", "cpu"],
     "maps stay channels-first; this one permutes them"),
    (["--base", "wrn-16-1", "--groups", "all"], "--groups all is for a timm base"),
])
def test_a_base_archfamily_cannot_prune_is_one_line(args: list[str], message: str, run_cli, tmp_path: Path) -> None:
    done = run_cli("derive", "--preset", "smoke", *args, "--out", str(tmp_path / "run"))
    assert done.code == 2 and message in done.err and len(done.err.strip().splitlines()) == 1, done.err
    assert not (tmp_path / "run").exists()


def test_an_interrupted_timm_run_resumes_to_the_same_trajectory(run_cli, tmp_path: Path, monkeypatch) -> None:
    """The masks are not model tensors: a checkpoint keeps each group's closed channels and a resumed run
    closes them again, so it goes on exactly as a run that was never stopped."""
    from archfamily.pruning.run import PruneRun

    settings = ("--eval-every", "2", "-k", "4")  # the last -k counts: a few prunes
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _derive(run_cli, "mobilenetv3_small_050", whole, *settings)
    real_prune = PruneRun.prune

    def prune_then_die(self):
        if self.num_prunes == 3:  # after the checkpoint at prune 2
            raise KeyboardInterrupt
        return real_prune(self)

    monkeypatch.setattr(PruneRun, "prune", prune_then_die)
    base = base_spec("timm:mobilenetv3_small_050").num_params()
    args = ("derive", "--preset", "smoke", "--base", "timm:mobilenetv3_small_050", "--subset", "100",
            "--test-subset", "100", "--prune-every", "1", "-k", "32", "--until-params", str(base * 99 // 100),
            *settings, "--out", str(cut))  # as `_derive` runs it
    assert run_cli(*args).code == 130
    monkeypatch.setattr(PruneRun, "prune", real_prune)
    assert run_cli(*args, "--resume").code == 0
    assert (cut / "trajectory.jsonl").read_bytes() == (whole / "trajectory.jsonl").read_bytes()


def test_a_timm_checkpoint_is_the_base(run_cli, tmp_path: Path) -> None:
    """`--checkpoint` takes the plain state dict of the timm model (no archfamily metadata), checked tensor by
    tensor; a checkpoint of another network is one line."""
    from safetensors.torch import save_file

    from archfamily.anycnn.spec import TimmSpec

    model = TimmSpec.of_base("regnetx_002").build()
    save_file(model.state_dict(), str(tmp_path / "mine.safetensors"))
    _derive(run_cli, "regnetx_002", tmp_path / "run", "--checkpoint", str(tmp_path / "mine.safetensors"))
    _, base, _ = load_model(tmp_path / "run" / "base.safetensors")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in base.state_dict().items())
    done = run_cli("derive", "--preset", "smoke", "--base", "timm:resnet18", "--checkpoint",
                   str(tmp_path / "mine.safetensors"), "--out", str(tmp_path / "other"))
    assert done.code == 2 and len(done.err.strip().splitlines()) == 1, done.err


def test_a_timm_base_s_own_keywords_build_every_member_and_export(run_cli, tmp_path: Path) -> None:
    """`--model-kwargs output_stride=16` is part of the base: the trajectory, a scaled member, an export's
    model_args and the network timm rebuilds from it all have it (a 2x2 final map at 32x32 instead of 1x1)."""
    from archfamily.anycnn.spec import TimmSpec

    run = tmp_path / "run"
    base = _derive(run_cli, "mobilenetv2_050", run, "--model-kwargs", "output_stride=16")
    family = json.loads((run / "family.json").read_text())
    assert family["base"]["model_kwargs"] == {"output_stride": 16}
    done = run_cli("scale", "--family", str(run), "--params", str(base // 2), "--json")
    assert done.code == 0, done.err
    member = json.loads(done.out)
    assert member["spec"]["model_kwargs"] == {"output_stride": 16}, member
    folder = tmp_path / "exported"
    assert run_cli("export", "--family", str(run), "--params", str(base // 2), "--out", str(folder)).code == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["model_args"]["model_kwargs"] == {"output_stride": 16} and "output_stride" not in config["model_args"]
    spec, saved, _ = load_model(folder / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert loaded.feature_info[-1]["reduction"] == 16 and loaded.pretrained_cfg["pool_size"] == (2, 2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), saved.eval()(x))
    plain = TimmSpec("mobilenetv2_050", spec.widths)  # the same widths at timm's own stride of 32
    assert plain.num_params() == spec.num_params() and spec.num_macs() > plain.num_macs()


@pytest.mark.parametrize("spec, kwargs, message", [
    ("wrn-16-1", "output_stride=16", "model kwargs are timm's create_model keywords, for a timm:NAME network"),
    ("timm:mobilenetv2_050", "no_such_keyword=1", "timm's mobilenetv2_050 takes no keyword 'no_such_keyword'"),
    ("timm:mobilenetv2_050", "num_classes=5", "model_kwargs cannot set num_classes: archfamily sets it"),
])
def test_model_kwargs_a_network_cannot_take_are_one_line(spec: str, kwargs: str, message: str, run_cli,
                                                         tmp_path: Path) -> None:
    done = run_cli("train", "--spec", spec, "--model-kwargs", kwargs, "--out", str(tmp_path / "run"))
    assert done.code == 2 and message in done.err and len(done.err.strip().splitlines()) == 1, done.err
    assert not (tmp_path / "run").exists()


def test_model_kwargs_values_read_as_timm_reads_them() -> None:
    from archfamily.anycnn.spec import parse_model_kwargs

    assert parse_model_kwargs({"output_stride": "16", "drop_rate": "0.2", "fix_stem": "True", "act_layer": "relu",
                               "se_layer": "None"}) == {"output_stride": 16, "drop_rate": 0.2, "fix_stem": True,
                                                        "act_layer": "relu", "se_layer": None}


def test_fisher_weighed_by_a_channel_s_macs_prunes_a_timm_base(run_cli, tmp_path: Path) -> None:
    """fisher-penalty on a timm base: the trajectory records the beta each prune weighed MACs with, and the
    channels it closes first are the expensive ones (it reaches the budget in fewer prunes than plain Fisher)."""
    runs = {}
    for method in ("fisher", "fisher-penalty"):
        _derive(run_cli, "mobilenetv3_small_050", tmp_path / method, "--method", method, "--cost", "macs", "-k", "4")
        runs[method] = [json.loads(line) for line in (tmp_path / method / "trajectory.jsonl").read_text().splitlines()]
    assert all(p["beta"] > 0 for p in runs["fisher-penalty"][1:]) and "beta" not in runs["fisher"][-1]
    assert runs["fisher-penalty"][1]["macs"] < runs["fisher"][1]["macs"]


def test_a_timm_family_s_masked_pruned_network_is_its_compressed_one_at_full_size(run_cli, tmp_path: Path) -> None:
    """What `bench` times as "pruned (masked)" for a timm base: the base at full size with the channels pruning
    closed zeroed by the group masks, which computes what the compressed network computes."""
    from dataclasses import replace

    from archfamily.anycnn.compress import remove_channels
    from archfamily.anycnn.spec import TimmSpec
    from archfamily.pruning.run import masked_network

    torch.manual_seed(0)
    base = TimmSpec.of_base("mobilenetv2_050")
    pruned = replace(base, widths=tuple(w - (w // 4 if g.inner else 0) for w, g in zip(base.widths, base.groups)))
    masked = masked_network(base, pruned).eval()
    small = base.build()
    small.load_state_dict(masked.state_dict())
    closed = {i: list(range(w, w0)) for i, (w, w0) in enumerate(zip(pruned.widths, base.widths)) if w < w0}
    small = remove_channels(small, base.groups, closed, 32).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(masked(x), small(x), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in small.parameters()) == pruned.num_params()


def test_a_spec_file_s_model_kwargs_are_checked() -> None:
    """A spec file's model_kwargs hold timm keywords with plain values; anything else is one UserError."""
    from archfamily.errors import UserError
    from archfamily.specs import spec_from_dict, spec_to_dict

    spec = spec_to_dict(base_spec("timm:mobilenetv2_050"))
    assert "model_kwargs" not in spec  # files written before the field are unchanged
    assert spec_from_dict({**spec, "model_kwargs": {"output_stride": 16}}).model_kwargs == (("output_stride", 16),)
    for bad, message in (({"output_stride": [16]}, "model_kwargs output_stride: a number"),
                         ({"in_chans": 1}, "model_kwargs cannot set in_chans"), ("output_stride=16", "model_kwargs must map")):
        with pytest.raises(UserError, match=message):
            spec_from_dict({**spec, "model_kwargs": bad})


def test_scale_on_a_timm_family_counts_from_the_table_without_torch(tmp_path: Path) -> None:
    """Once its base's count table is measured (here by writing the family), `scale` on a timm family reads the
    table and counts every trajectory point and member from it: a new process answers without importing torch or
    timm, and the member's counts are those PyTorch counts on the rebuilt network."""
    import os
    import subprocess
    import sys

    from families import write_timm_family

    from archfamily.specs import spec_from_dict

    family = write_timm_family(tmp_path / "family", model_kwargs={"output_stride": 16})
    script = ("import sys; from archfamily.cli.main import main\n"
              "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
              "print('imported', sorted({'torch', 'timm'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", script, "scale", "--family", str(family), "--params", "150k",
                           "--json"], capture_output=True, text=True, env=os.environ, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    answer, imported = done.stdout.rsplit("imported", 1)
    assert imported.strip() == "[]"
    member = json.loads(answer)
    spec = spec_from_dict(member["spec"])
    assert member["params"] == sum(p.numel() for p in spec.build().parameters())
