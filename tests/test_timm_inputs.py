"""A timm base's own keywords and an exported folder, as hostile input: each checked by archfamily before timm
builds or reads anything (`anycnn.keywords`, `hub.local_dir`); tests/test_hostile_inputs.py fuzzes both through
the command line."""
from __future__ import annotations

import builtins
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import archfamily.zoo  # noqa: F401  (registers the entrypoints and has timm read exports through archfamily)
from archfamily.anycnn.spec import with_model_kwargs
from archfamily.errors import UserError
from archfamily.models.checkpoint import save_model
from archfamily.specs import base_spec, spec_to_dict


@pytest.mark.parametrize("name, kwargs, message", [
    ("test_resnet", {"output_stride": 0}, "output_stride must be one of 8, 16, 32, got 0"),
    ("test_resnet", {"output_stride": 16.5}, "output_stride must be one of 8, 16, 32"),
    ("test_resnet", {"act_layer": "nope"}, "act_layer must be a layer timm knows, got 'nope'"),
    ("test_resnet", {"norm_layer": "nope"}, "norm_layer must be a layer timm knows"),
    ("test_resnet", {"base_width": 100_000}, "base_width must be from 0 to 65,536"),
    ("test_resnet", {"zero_init_last": 1}, "zero_init_last must be true or false"),
    ("test_resnet", {"drop_rate": 1.5}, "drop_rate must be a rate from 0 to below 1"),
    ("test_resnet", {"no_such_keyword": 1}, "timm's test_resnet takes no keyword 'no_such_keyword' (it takes"),
    ("test_resnet", {"checkpoint_path": "/etc/passwd"}, "model_kwargs cannot set checkpoint_path"),
    ("test_resnet", {"pretrained_cfg_overlay": "x"}, "model_kwargs cannot set pretrained_cfg_overlay"),
    ("test_resnet", {"cardinality": 0}, "cannot be built with cardinality=0 (AssertionError"),
    ("test_efficientnet", {"depth_multiplier": 100}, "depth_multiplier must be above 0 and at most 8"),
    ("resnet50", {"base_width": 60_000}, "has 9,955,591,396,810 parameters; archfamily builds networks of up to"),
])
def test_a_timm_base_s_keywords_are_checked_before_it_is_built(name: str, kwargs: dict[str, Any],
                                                               message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        with_model_kwargs(base_spec(f"timm:{name}"), kwargs)


def test_keywords_a_base_takes_build_it() -> None:
    spec = with_model_kwargs(base_spec("timm:test_resnet"),
                             {"output_stride": 16.0, "act_layer": "gelu", "drop_rate": 0.1, "zero_init_last": False})
    assert spec.model_kwargs == (("act_layer", "gelu"), ("drop_rate", 0.1), ("output_stride", 16),
                                 ("zero_init_last", False))
    assert spec.pool_size() == (2, 2) and spec.num_params() > 0


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of a timm base's member with its own keywords, trained weights and all."""
    from archfamily.hub.export import export

    folder = tmp_path_factory.mktemp("export")
    spec = with_model_kwargs(base_spec("timm:test_resnet"), {"output_stride": 16})
    torch.manual_seed(0)
    save_model(folder / "weights.safetensors", spec.build(), {"test_error": "50.0"})
    export(spec, folder / "out", folder / "weights.safetensors")
    return folder / "out"


def _damaged(exported: Path, tmp_path: Path, config: Any = None, raw: bytes | None = None) -> Path:
    folder = tmp_path / "damaged"
    shutil.copytree(exported, folder)
    (folder / "config.json").write_bytes(raw if raw is not None else json.dumps(config).encode())
    return folder


@pytest.mark.parametrize("damage, message", [
    (lambda c: c["model_args"].update(pretrained_cfg_overlay={"file": "x"}),
     "config.json: model_args: 'pretrained_cfg_overlay' loads or fetches weights"),
    (lambda c: c["model_args"].update(checkpoint_path="/etc/passwd"), "config.json: model_args: 'checkpoint_path'"),
    (lambda c: c.update(architecture="resnet18"), "config.json: architecture must be one of archfamily_"),
    (lambda c: c["pretrained_cfg"].update(file="/etc/passwd"), "config.json: pretrained_cfg: 'file' names weights"),
    (lambda c: c["pretrained_cfg"].update(hf_hub_id="timm/resnet18.a1_in1k"), "pretrained_cfg: 'hf_hub_id' names"),
    (lambda c: c["model_args"]["model_kwargs"].update(act_layer="nope"), "act_layer must be a layer timm knows"),
    (lambda c: c["model_args"]["model_kwargs"].clear(),  # same tensors, another network: stride 32
     "config.json: model_args describe another network than .*model.safetensors holds"),
    (lambda c: c["pretrained_cfg"].update(std=[0, 0, 0]), "pretrained_cfg: std must hold finite numbers from 1e-06"),
    (lambda c: c.update(global_pool="catavgmax"), "global_pool must be 'avg', the pooling of its network"),
])
def test_a_damaged_export_is_one_error_naming_the_file_and_the_field(exported: Path, tmp_path: Path, damage,
                                                                    message: str, monkeypatch) -> None:
    config = json.loads((exported / "config.json").read_text())
    damage(config)
    folder = _damaged(exported, tmp_path, config)
    opened: list[str] = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda file, *a, **k: opened.append(str(file)) or real_open(file, *a, **k))
    with pytest.raises(ValueError, match=message) as info:
        timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert str(folder) in str(info.value) and len(str(info.value).splitlines()) == 1
    assert not [f for f in opened if "passwd" in f]


@pytest.mark.parametrize("raw, message", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"), (b"[1]", "expected a JSON object, found list"),
    (b'"x"', "expected a JSON object, found str"), (b"null", "expected a JSON object"),
    (b"\xff\xfe{}", "not UTF-8"), (b'{"architecture": NaN}', "NaN is not a number JSON allows"),
])
def test_an_export_s_config_json_is_read_at_the_edge(exported: Path, tmp_path: Path, raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        timm.create_model(f"local-dir:{_damaged(exported, tmp_path, raw=raw)}", pretrained=True)


def test_an_export_loads_its_own_weights_and_other_folders_are_timm_s(exported: Path, tmp_path: Path) -> None:
    from archfamily.models.checkpoint import load_model

    loaded = timm.create_model(f"local-dir:{exported}", pretrained=True).eval()
    spec, saved, _ = load_model(exported / "model.safetensors")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), saved.eval()(x))
    plain = timm.create_model("test_resnet", num_classes=3)  # a folder timm's own exporter wrote: timm reads it
    timm.models.save_for_hf(plain, str(tmp_path / "plain"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = timm.create_model(f"local-dir:{tmp_path / 'plain'}", pretrained=True)
    assert again.num_classes == 3 and not hasattr(again, "spec")


def test_a_timm_family_s_groups_are_a_pruning_policy(tmp_path: Path) -> None:
    from families import write_timm_family

    from archfamily.pruning.family_file import load_family

    path = write_timm_family(tmp_path / "family")
    assert load_family(path).document["groups"] == "inner"
    doc = json.loads(path.read_text())
    for bad in ("bogus", None, ["all"]):
        path.write_text(json.dumps({**doc, "groups": bad}))
        with pytest.raises(UserError, match="groups must be one of all, inner"):
            load_family(path)
