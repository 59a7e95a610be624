"""timm integration, after timm's own tests/test_models.py: every family and every zoo entry."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import archfamily.zoo as zoo
from archfamily.specs import DenseNetBCSpec, ResNetSpec, WideResNetSpec, base_spec, spec_to_dict
from archfamily.models.checkpoint import read_model_metadata
from archfamily.hub.timm_models import model_args
from archfamily.zoo.manifest import read_manifest

# one small member of each family, as timm model args
FAMILY_MEMBERS = {
    "archfamily_wrn": model_args(WideResNetSpec.from_depth_width(10, 1).with_prunable_widths([7, 0, 40])),
    "archfamily_densenet_bc": model_args(DenseNetBCSpec.from_depth_growth(16, 6).with_prunable_widths([24, 0, 9, 24, 5, 0])),
    "archfamily_resnet": model_args(ResNetSpec("basic", (8, 16, 24, 32), ((4, 0), (8, 3), (5, 12), (32, 0)))),
}


def _timm_member() -> dict:
    """A member of a timm CNN's family (timm's mobilenetv2_035 at output stride 16, its inner groups a quarter
    narrower), as `export` writes its model_args: the `archfamily_timm` architecture under timm's model tests."""
    from dataclasses import replace

    from archfamily.anycnn.spec import TimmSpec

    base = TimmSpec.of_base("mobilenetv2_035", model_kwargs={"output_stride": 16})
    widths = tuple(w - (w // 4 if g.inner else 0) for w, g in zip(base.widths, base.groups))
    return model_args(replace(base, widths=widths))


ZOO = [e["name"] for e in read_manifest(zoo.ZOO_DIR)]
# Re-measured on all 10,000 test images in the suite: the cheapest entry, which checks the path from the file
# through timm to the figure. Every entry's weights are checked against their sha256 by the tests above, and
# `archfamily zoo eval NAME` re-measures any entry (the README says when all of them last were).
REMEASURED = [min(read_manifest(zoo.ZOO_DIR), key=lambda e: e["macs"])["name"]]
MODELS = [*FAMILY_MEMBERS.items(), ("archfamily_timm", _timm_member()), *((name, {}) for name in ZOO)]
IDS = [name for name, _ in MODELS]
x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_registry_lists_families_and_zoo() -> None:
    assert set(FAMILY_MEMBERS) <= set(timm.list_models("archfamily*"))
    assert set(ZOO) <= set(timm.list_models("archfamily*"))
    assert {f"{name}.c10" for name in ZOO} == set(timm.list_pretrained("archfamily*"))
    assert not [m for m in timm.list_models("archfamily*") if not m.startswith("archfamily_")]


def test_generic_entrypoints_default_to_the_paper_bases() -> None:
    for name, base in (("archfamily_wrn", "wrn-40-2"), ("archfamily_densenet_bc", "densenet-bc-100")):
        model = timm.create_model(name)
        assert sum(p.numel() for p in model.parameters()) == base_spec(base).num_params()


@pytest.mark.parametrize("name, args", MODELS, ids=IDS)
def test_model_forward(name: str, args: dict) -> None:
    model = timm.create_model(name, **args).eval()
    out = model(x)
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name, args", MODELS, ids=IDS)
def test_model_backward(name: str, args: dict) -> None:
    model = timm.create_model(name, **{**args, "num_classes": 42})
    out = model(x)
    out.mean().backward()
    assert out.shape == (2, 42)
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name, args", MODELS, ids=IDS)
def test_model_default_cfgs(name: str, args: dict) -> None:
    model = timm.create_model(name, **args).eval()
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and len(cfg["mean"]) == 3 and len(cfg["std"]) == 3
    assert cfg["paper_ids"] == "arXiv:1810.04622" and cfg["license"]
    modules = dict(model.named_modules())
    assert isinstance(modules[cfg["first_conv"]], torch.nn.Conv2d) and modules[cfg["first_conv"]].in_channels == 3
    classifier = modules[cfg["classifier"]]
    assert classifier is model.get_classifier() and classifier.out_features == model.num_classes
    features = model.forward_features(x)
    assert features.ndim == 4 and features.shape[1] == model.num_features
    assert tuple(features.shape[-2:]) == tuple(cfg["pool_size"])
    assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)
    model.reset_classifier(0)
    assert model.num_classes == 0 and model(x).shape == (2, model.num_features)
    model.reset_classifier(0, "")  # no pooling: the output is the feature map
    assert model(x).shape == features.shape
    unpooled = timm.create_model(name, **{**args, "num_classes": 0, "global_pool": ""}).eval()
    assert unpooled(x).shape == features.shape


@pytest.mark.parametrize("name, args", MODELS, ids=IDS)
def test_model_features_only(name: str, args: dict) -> None:
    model = timm.create_model(name, **args).eval()
    features = timm.create_model(name, features_only=True, **args).eval()
    outs = features(x)
    assert [o.shape[1] for o in outs] == features.feature_info.channels()
    assert [32 // o.shape[-1] for o in outs] == features.feature_info.reduction()
    assert features.feature_info.channels() == [f["num_chs"] for f in model.feature_info]


@pytest.mark.parametrize("name, args", MODELS, ids=IDS)
def test_model_torchscript(name: str, args: dict) -> None:
    model = timm.create_model(name, **args).eval()
    torch.testing.assert_close(torch.jit.script(model)(x), model(x))
    traced = torch.fx.symbolic_trace(model)  # what timm's FX tests do, then TorchScript of the traced graph
    torch.testing.assert_close(torch.jit.script(traced)(x), model(x))


@pytest.mark.parametrize("name", FAMILY_MEMBERS)
def test_forward_intermediates_as_timm_resnet(name: str) -> None:
    model = timm.create_model(name, **FAMILY_MEMBERS[name]).eval()
    final, maps = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
    assert [32 // m.shape[-1] for m in maps] == [f["reduction"] for f in model.feature_info]
    early = model.forward_intermediates(x, indices=[0, 1], stop_early=True, intermediates_only=True)
    assert len(early) == 2 and all(torch.equal(a, b) for a, b in zip(early, maps))
    getter = timm.create_model(name, features_only=True, feature_cls="getter", **FAMILY_MEMBERS[name]).eval()
    getter.model.load_state_dict(model.state_dict(), strict=False)  # the getter wraps the model
    assert all(torch.equal(a, b) for a, b in zip(getter(x), maps))
    kept = model.prune_intermediate_layers(indices=2)
    assert kept == [len(maps) - 2, len(maps) - 1]
    assert all(torch.equal(a, b) for a, b in zip(model.forward_intermediates(x, intermediates_only=True), maps))


@pytest.mark.parametrize("name", FAMILY_MEMBERS)
def test_grad_checkpointing_gives_the_same_gradients_and_keeps_fewer_activations(name: str) -> None:
    def backward(checkpointing: bool) -> tuple[dict, int]:
        torch.manual_seed(0)
        model = timm.create_model(name, **FAMILY_MEMBERS[name]).train()
        model.set_grad_checkpointing(checkpointing)
        kept = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t.numel()) or t, lambda t: t):
            loss = model(x).logsumexp(1).mean()
        loss.backward()
        return {n: p.grad for n, p in model.named_parameters()}, sum(kept)

    plain, plain_kept = backward(False)
    checkpointed, checkpointed_kept = backward(True)
    assert plain.keys() == checkpointed.keys()
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-5, atol=1e-6)
    assert checkpointed_kept < 0.6 * plain_kept  # the stages' activations are recomputed, not kept


@pytest.mark.parametrize("name", FAMILY_MEMBERS)
def test_drop_path_is_stochastic_depth_in_training_only(name: str) -> None:
    plain = timm.create_model(name, **FAMILY_MEMBERS[name]).eval()
    dropped = timm.create_model(name, drop_path_rate=0.5, **FAMILY_MEMBERS[name])
    dropped.load_state_dict(plain.state_dict())
    torch.testing.assert_close(dropped.eval()(x), plain(x))  # identity at test time
    dropped.train()
    torch.manual_seed(0)
    first = dropped(x)
    assert not torch.equal(first, dropped(x))  # a fresh draw of dropped branches per pass
    rates = [m.drop_prob for m in dropped.modules() if type(m).__name__ == "DropPath"]
    assert rates == sorted(rates) and max(rates) == 0.5
    with pytest.raises(ValueError, match="drop_path_rate"):
        timm.create_model(name, drop_path_rate=1.5, **FAMILY_MEMBERS[name])


@pytest.mark.parametrize("name", FAMILY_MEMBERS)
def test_group_matcher_puts_every_parameter_in_a_layer_group(name: str) -> None:
    from timm.models import group_parameters
    from timm.optim import param_groups_layer_decay

    model = timm.create_model(name, **FAMILY_MEMBERS[name])
    grouped = group_parameters(model, model.group_matcher())
    assert sorted(n for names in grouped.values() for n in names) == sorted(n for n, _ in model.named_parameters())
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert len(grouped) >= len(coarse) >= len(model.feature_info)  # the stem, then each stage (or each block)
    assert param_groups_layer_decay(model, layer_decay=0.7)  # timm's layer-wise decay, without a fallback
    assert model.get_classifier(name_only=True) == "fc"


@pytest.mark.parametrize("name", ZOO)
def test_zoo_pretrained_loads_the_zoo_file(name: str) -> None:
    model = timm.create_model(name, pretrained=True).eval()
    weights = load_file(model.pretrained_cfg["file"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key


@pytest.mark.parametrize("name", ZOO)
def test_zoo_pretrained_adapts_classes_and_channels(name: str) -> None:
    base = timm.create_model(name, pretrained=True).eval()
    five = timm.create_model(name, pretrained=True, num_classes=5).eval()
    assert five(x).shape == (2, 5)
    assert torch.equal(five.forward_features(x), base.forward_features(x))  # the backbone kept its weights
    grey = timm.create_model(name, pretrained=True, in_chans=1).eval()
    stem = grey.pretrained_cfg["first_conv"] + ".weight"
    torch.testing.assert_close(grey.state_dict()[stem], base.state_dict()[stem].sum(1, keepdim=True))
    assert grey(torch.randn(2, 1, 32, 32)).shape == (2, base.num_classes)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_pretrained_features_only(name: str) -> None:
    """Every feature map of the trained network is the one its forward_intermediates gives (a timm base's member
    has its base's stages, not archfamily's stem)."""
    features = timm.create_model(name, pretrained=True, features_only=True).eval()
    base = timm.create_model(name, pretrained=True).eval()
    maps = features(x)
    for got, want in zip(maps, base.forward_intermediates(x, indices=len(maps), intermediates_only=True), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_manifest_figures_match_the_networks() -> None:
    for entry in read_manifest(zoo.ZOO_DIR):
        model = timm.create_model(entry["name"])
        assert entry["params"] == sum(p.numel() for p in model.parameters())
        assert entry["macs"] == model.spec.num_macs()
        assert 0 < entry["test_error"] < 100 and entry["test_images"] > 0 and entry["recipe"]
        assert entry["sha256"] and (zoo.ZOO_DIR / entry["file"]).is_file()


def test_missing_and_damaged_weights_name_the_file(tmp_path: Path) -> None:
    name = "archfamily_wrn"
    args = FAMILY_MEMBERS[name]
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "missing.safetensors")),
                          **args)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(RuntimeError, match="broken.safetensors"):
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(broken)), **args)


def test_export_round_trip_is_bit_identical(run_cli, tmp_path: Path) -> None:
    name = ZOO[0] if ZOO else None
    spec_file, out = tmp_path / "spec.json", tmp_path / "export"
    if name:
        model = timm.create_model(name, pretrained=True).eval()
        weights = Path(model.pretrained_cfg["file"])
    else:
        model = timm.create_model("archfamily_wrn", **FAMILY_MEMBERS["archfamily_wrn"]).eval()
        weights = None
    spec_file.write_text(json.dumps(spec_to_dict(model.spec)))
    args = ["export", "--spec", str(spec_file), "--out", str(out)] + (["--weights", str(weights)] if weights else [])
    result = run_cli(*args)
    assert result.code == 0, result.err
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == f"archfamily_{model.spec.family}" and config["num_classes"] == model.num_classes
    assert config["model_args"]["stage_widths"] == list(model.spec.stage_widths)
    again = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    if weights:
        assert torch.equal(again(x), model(x))
    assert again.spec == model.spec


def test_export_family_member_and_bad_config(run_cli, tmp_path: Path) -> None:
    from families import write_family

    family = write_family(tmp_path / "family")
    out = tmp_path / "member"
    result = run_cli("export", "--family", str(family), "--params", "200k", "--out", str(out))
    assert result.code == 0, result.err
    with pytest.warns(UserWarning, match="untrained weights"):  # exported without --weights
        model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert abs(sum(p.numel() for p in model.parameters()) - 200_000) <= 2_000
    config = json.loads((out / "config.json").read_text())
    assert config["weights"] == "untrained" and read_model_metadata(out / "model.safetensors")["weights"] == "untrained"
    config["model_args"]["inner_widths"] = [[1, 2, 3]]  # one stage where the network has three
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_args do not describe an archfamily wrn network"):
        timm.create_model(f"local-dir:{bad}", pretrained=True)
    config["model_args"]["inner_widths"] = [[1, 1], [1, 1], [1, 1]]  # a valid network, but not these weights
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_args describe another network than .*model.safetensors holds"):
        timm.create_model(f"local-dir:{bad}", pretrained=True)
    again = run_cli("export", "--family", str(family), "--params", "200k", "--out", str(out))
    assert again.code == 2 and "not an empty folder" in again.err


def test_onnx_export_matches_pytorch_in_onnx_runtime_on_test_images(run_cli, tmp_path: Path) -> None:
    import onnxruntime

    from archfamily.data.batches import normalize
    from archfamily.data.dataset import load_data

    name = next(n for n in ZOO if "fast" in n)
    spec_file, out = tmp_path / "spec.json", tmp_path / "export"
    model = timm.create_model(name, pretrained=True).eval()
    spec_file.write_text(json.dumps(spec_to_dict(model.spec)))
    result = run_cli("export", "--spec", str(spec_file), "--weights", model.pretrained_cfg["file"], "--onnx",
                     "--out", str(out))
    assert result.code == 0 and "model.onnx" in result.out, result.err
    data = load_data(subset=10, test_subset=50)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 50):  # the batch dimension is dynamic
        images = normalize(data.test_x[:batch], model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
        with torch.no_grad():
            expected = model(images).numpy()
        got = session.run(None, {"images": images.numpy()})[0]
        assert got.shape == expected.shape and abs(got - expected).max() < 1e-4


def test_onnx_export_without_onnx_installed_is_one_line(run_cli, tmp_path: Path, monkeypatch) -> None:
    import archfamily.hub.export

    real = archfamily.hub.export.importlib.util.find_spec
    monkeypatch.setattr(archfamily.hub.export.importlib.util, "find_spec", lambda n: None if n == "onnx" else real(n))
    result = run_cli("export", "--spec", "wrn-10-1", "--onnx", "--out", str(tmp_path / "o"))
    assert result.code == 2 and 'pip install -e ".[onnx]"' in result.err and not (tmp_path / "o").exists()
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (("zoo", "eval", "archfamily_nope"), "no zoo entry named"),
    (("zoo", "add", "{tmp}/missing.safetensors", "--name", "x"), "checkpoint not found"),
    (("zoo", "add", "{tmp}/missing.safetensors", "--name", "Bad-Name"), "lowercase"),
    (("export", "--out", "{tmp}/o"), "give --spec FILE"),
])
def test_zoo_and_export_bad_input(run_cli, tmp_path: Path, args, message: str) -> None:
    result = run_cli(*(a.format(tmp=tmp_path) for a in args))
    assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1


def test_zoo_list_is_sorted_by_name_as_timm_sorts_and_its_columns_line_up(run_cli, monkeypatch) -> None:
    import archfamily.zoo.manifest

    def entry(name: str, params: int, rule: str = "") -> dict:
        return {"name": name, "tag": "c10", "params": params, "macs": 150 * params, "test_error": 12.3456,
                "test_images": 10_000, "source": {"rule": rule, "family": ""}}

    entries = [entry("archfamily_wrn16_2_pruned_scratch_304k_fast2_e20", 304_000, "pruned-scratch"),
               entry("archfamily_wrn16_2_e10", 692_000, "base"), entry("archfamily_wrn16_2_copycat_152k_e10", 152_000),
               entry("archfamily_wrn16_2_copycat_76k_e10", 76_000, "copycat")]
    monkeypatch.setattr(archfamily.zoo.manifest, "read_manifest", lambda *args: entries)
    result = run_cli("zoo", "list")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["archfamily_wrn16_2_copycat_76k_e10.c10", "archfamily_wrn16_2_copycat_152k_e10.c10",  # numbers
                     "archfamily_wrn16_2_e10.c10", "archfamily_wrn16_2_pruned_scratch_304k_fast2_e20.c10"]  # as timm
    for column in ("params", "MACs", "test error", "images"):  # every row's figure ends where its heading does
        end = lines[0].index(column) + len(column)
        assert all(line[end - 1] != " " and line[end:end + 1] in ("", " ") for line in lines), column
    assert not any(line.endswith(" ") for line in lines)


def test_the_zoo_is_found_from_any_folder(tmp_path: Path) -> None:
    """The zoo is `archfamily.zoo`'s own folder, not a `zoo` package that happens to be importable from the cwd."""
    env = {k: v for k, v in os.environ.items() if k != "ARCHFAMILY_ZOO"}
    done = subprocess.run([sys.executable, "-m", "archfamily", "zoo", "list"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines()[1:]}
    assert listed == {f"{e['name']}.{e['tag']}" for e in read_manifest(Path(zoo.__file__).parent)} and listed


def test_zoo_add_measures_before_listing(run_cli, tmp_path: Path, monkeypatch) -> None:
    from archfamily.models.checkpoint import save_model
    from archfamily.models import build_model

    monkeypatch.setenv("ARCHFAMILY_ZOO", str(tmp_path / "zoo"))
    source = tmp_path / "net.safetensors"
    save_model(source, build_model(WideResNetSpec.from_depth_width(10, 1)), {"recipe": json.dumps({"epochs": 0})})
    added = run_cli("zoo", "add", str(source), "--name", "tiny", "--test-subset", "100", "--device", "cpu")
    assert added.code == 0, added.err
    entry = read_manifest(tmp_path / "zoo")[0]
    assert entry["name"] == "archfamily_tiny" and entry["test_images"] == 100 and entry["params"] > 0
    listed = run_cli("zoo", "list")
    assert "archfamily_tiny.c10" in listed.out
    measured = run_cli("zoo", "eval", "archfamily_tiny", "--test-subset", "100", "--device", "cpu")
    assert measured.code == 0 and f"{entry['test_error']:.2f}%" in measured.out
    assert "test error: 100%" in measured.err and "100/100" in measured.err  # its progress, on stderr
    again = run_cli("zoo", "add", str(source), "--name", "tiny", "--test-subset", "100")
    assert again.code == 2 and "--replace" in again.err
    weights = tmp_path / "zoo" / entry["file"]
    damaged = bytearray(weights.read_bytes())
    damaged[-1] ^= 1  # one bit of one weight: still readable safetensors, but not the file the manifest lists
    weights.write_bytes(bytes(damaged))
    refused = run_cli("zoo", "eval", "archfamily_tiny", "--test-subset", "100", "--device", "cpu")
    assert refused.code == 2 and "sha256" in refused.err and weights.name in refused.err
    assert len(refused.err.strip().splitlines()) == 1
    missing = run_cli("zoo", "remove", "archfamily_tiny", "archfamily_nope")
    assert missing.code == 2 and "archfamily_nope" in missing.err and read_manifest(tmp_path / "zoo")  # none removed
    removed = run_cli("zoo", "remove", "archfamily_tiny.c10")
    assert removed.code == 0 and read_manifest(tmp_path / "zoo") == [] and not weights.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", REMEASURED)
def test_zoo_error_matches_the_manifest(name: str) -> None:
    from archfamily.data.dataset import load_data
    from archfamily.training.evaluation import test_error

    entry = next(e for e in read_manifest(zoo.ZOO_DIR) if e["name"] == name)
    data = load_data(subset=10)
    assert entry["test_images"] == data.test_x.shape[0] == 10_000
    error = test_error(timm.create_model(name, pretrained=True), data, torch.device("cpu"))
    assert abs(error - entry["test_error"]) <= 0.1


def test_a_spec_error_through_timm_is_unwrapped_once() -> None:
    """model_args that describe no network: timm's entrypoint raises the spec's UserError as a ValueError, and
    the zoo's measuring turns it back into that UserError, said once after the model's name."""
    from archfamily.errors import UserError
    from archfamily.zoo.curation import _create

    with pytest.raises(UserError) as refused:
        _create("archfamily_wrn", stage_widths=[-1, 2, 3])
    assert str(refused.value) == ("archfamily_wrn: model_args: malformed wrn spec: stage_widths must be whole "
                                  "numbers from 1 to 65,536")
