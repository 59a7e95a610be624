"""Specs are the single source of truth: their counts must equal the built modules'."""
from __future__ import annotations

import json
import random
import re

import pytest
import torchvision

from archfamily.models.counting import count_params, measure_macs
from archfamily.errors import UserError
from archfamily.models import build_model
from archfamily.specs import (
    DenseNetBCSpec, ResNetSpec, WideResNetSpec, base_spec, block_ratios, spec_from_dict, spec_to_dict, stage_ratios,
)


@pytest.mark.parametrize("name, expected", [
    ("wrn-40-2", 2_243_546), ("wrn-16-2", 691_674), ("densenet-bc-100", 769_162),
])
def test_paper_parameter_counts(name: str, expected: int) -> None:
    spec = base_spec(name)
    assert spec.num_params() == expected
    assert count_params(build_model(spec)) == expected


@pytest.mark.parametrize("depth, reference", [(18, torchvision.models.resnet18), (50, torchvision.models.resnet50)])
def test_imagenet_resnets_match_torchvision(depth: int, reference) -> None:
    spec = ResNetSpec.from_depth(depth, stem="imagenet", num_classes=1000)
    expected = count_params(reference(weights=None))
    assert spec.num_params() == expected
    assert count_params(build_model(spec)) == expected


def _random_pruned(spec, rng: random.Random):
    widths = [rng.choice([0, 1, rng.randint(1, w)]) for w in spec.prunable_widths()]
    return spec.with_prunable_widths(widths)


FAMILY_BASES = ["wrn-16-2", "wrn-10-1", "densenet-bc-40", "resnet-18", "resnet-50"]


@pytest.mark.parametrize("name", FAMILY_BASES)
def test_counts_match_modules_for_pruned_specs(name: str) -> None:
    rng = random.Random(name)
    base = base_spec(name)
    for spec in [base] + [_random_pruned(base, rng) for _ in range(3)]:
        model = build_model(spec)
        assert spec.num_params() == count_params(model)
        assert spec.num_macs() == measure_macs(model, spec.input_size)


def test_imagenet_stem_macs_match_flop_counter() -> None:
    spec = _random_pruned(ResNetSpec.from_depth(18, stem="imagenet"), random.Random(0))
    assert spec.num_macs(64) == measure_macs(build_model(spec), 64)


@pytest.mark.parametrize("name", FAMILY_BASES + ["resnet-34-imagenet", "densenet-bc-100-24"])
def test_json_round_trip(name: str) -> None:
    spec = _random_pruned(base_spec(name), random.Random(1))
    again = spec_from_dict(json.loads(json.dumps(spec_to_dict(spec))))
    assert again == spec and type(again) is type(spec)


def test_reduced_width_wrn_has_continuous_k() -> None:
    spec = WideResNetSpec.from_depth_width(16, 1.5)
    assert spec.stage_widths == (24, 48, 96)
    assert count_params(build_model(spec)) == spec.num_params()


def test_ratios_of_the_base_are_one_and_follow_pruning() -> None:
    base = base_spec("wrn-16-2")
    assert stage_ratios(base, base) == [1.0, 1.0, 1.0]
    half = base.with_prunable_widths([16, 32, 32, 0, 128, 64])
    assert stage_ratios(half, base) == [0.75, 0.25, 0.75]
    assert block_ratios(half, base) == [0.5, 1.0, 0.5, 0.0, 1.0, 0.5]


@pytest.mark.parametrize("name, message", [
    ("wrn-15-2", "6n+4"), ("vgg-16", "unknown base network"), ("densenet-bc-101", "6n+4"), ("resnet-19", "one of"),
])
def test_bad_base_names(name: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        base_spec(name)


@pytest.mark.parametrize("data", [{"family": "vgg"}, [1, 2], {"family": "wrn", "stage_widths": [1]}])
def test_malformed_spec_dict(data) -> None:
    with pytest.raises(UserError):
        spec_from_dict(data)


@pytest.mark.parametrize("name, field", [("wrn-10-1", "inner_widths"), ("densenet-bc-40", "bottleneck_widths"),
                                         ("resnet-18", "mid_widths")])
def test_a_spec_missing_a_field_names_it_not_pythons_init(run_cli, tmp_path, name: str, field: str) -> None:
    data = spec_to_dict(base_spec(name))
    assert field in data
    del data[field]
    with pytest.raises(UserError, match=rf"^member.json: a {data['family']} spec needs '{field}'$"):
        spec_from_dict(data, "member.json")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(data))
    result = run_cli("train", "--spec", str(spec_file), "--out", str(tmp_path / "run"))
    assert result.code == 2 and f"spec.json: a {data['family']} spec needs '{field}'" in result.err
    assert "__init__" not in result.err and len(result.err.strip().splitlines()) == 1


def test_densenet_needs_at_least_one_stage() -> None:
    with pytest.raises(UserError, match="at least one stage"):
        DenseNetBCSpec(12, ())
    with pytest.raises(UserError, match="non-empty row"):
        DenseNetBCSpec(12, ((48,), ()))
    assert DenseNetBCSpec(12, ((48,), (48, 48))).stage_widths == (24 + 12, 18 + 24)


@pytest.mark.parametrize("name", ["wrn-16-2", "densenet-bc-40", "resnet-18", "resnet-50"])
def test_the_block_walk_is_what_the_model_builds(name: str) -> None:
    spec = _random_pruned(base_spec(name), random.Random(3))
    model = build_model(spec)
    blocks = [b for stage in (model.stages[::2] if spec.family == "densenet_bc" else model.stages) for b in stage]
    plans = [p for stage in spec.blocks() for p in stage]
    assert len(blocks) == len(plans)
    for block, plan in zip(blocks, plans):
        assert block.has_branch == plan.has_branch
        if plan.has_branch:
            strided = block.conv2 if getattr(spec, "block", "") == "bottleneck" else block.conv1
            assert (block.conv1.in_channels, block.conv1.out_channels, strided.stride[0]) == \
                (plan.cin, plan.inner[0], plan.stride)


def test_densenet_stem_defaults_to_twice_growth() -> None:
    assert DenseNetBCSpec.from_depth_growth(40, 12).stem_channels == 24
