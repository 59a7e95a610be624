"""The timm compatibility check on a cross-section of timm's CNN classes, at 32x32 (the whole sweep over timm is a
benchmark: benchmarks/timm_sweep.py writes docs/timm-compatibility.md): one network of each class traces, rebuilds
below and above its widths and counts exactly; one goes through every stage; a model that is no CNN is refused
in one line; and the sweep's page and diff say what they should."""
from __future__ import annotations

from pathlib import Path

import pytest

from archfamily.compat.check import STAGES, check_network
from archfamily.compat.report import changes, markdown, passes, summary

CROSS_SECTION = {  # timm's smallest of each class (its test_ models where it has one)
    "test_resnet": "plain residual",
    "test_efficientnet": "inverted residual with squeeze-excitation",
    "ese_vovnet19b_slim_dw": "concatenation (one-shot aggregation; DenseNet's is in test_anycnn)",
    "regnetx_002": "grouped convolutions",
    "ghostnet_050": "split and concatenation (ghost modules)",
    "test_convnext": "ConvNeXt: depthwise, LayerNorm, layer scale",
}


@pytest.mark.parametrize("name", CROSS_SECTION, ids=list(CROSS_SECTION.values()))
def test_each_class_of_timm_cnn_traces_rebuilds_and_counts(name: str) -> None:
    result = check_network(name, 32, until="count")
    assert result.failure() is None, result.failure()
    assert list(result.stages) == list(STAGES[:STAGES.index("count") + 1]) and result.groups


def test_a_ghost_module_s_concatenation_follows_its_groups() -> None:
    """A ghost module concatenates its primary and cheap convolutions' outputs and keeps the first `out_chs` (a
    width recorded at construction, which the trace cannot see): every group of ghostnet resizes, and one whose
    channels are half of such a concatenation in steps of two (whole channels of each half)."""
    from archfamily.anycnn.spec import TimmSpec

    spec = TimmSpec.of_base("ghostnet_050")
    halves = [g for g in spec.groups if any(2 * p.count == g.width for p in g.places)]
    assert halves and all(g.step % 2 == 0 for g in halves)
    assert len(spec.groups) == 31  # none left fixed


def test_a_small_network_goes_through_every_stage() -> None:
    result = check_network("test_resnet", 32)
    assert result.failure() is None and passes(result.to_dict()), result.to_dict()


@pytest.mark.parametrize("args, message", [
    (["check", "timm:deit_tiny_patch16_224"], "archfamily prunes CNNs; deit_tiny_patch16_224 has patch tokens"),
    (["check", "timm:edgenext_xx_small"], "has self-attention (CrossCovarianceAttn"),
    (["check", "timm:no_such_model"], "timm has no model 'no_such_model'"),
    (["check", "resnet18"], "check takes a timm network as timm:NAME"),
])
def test_what_archfamily_cannot_check_is_one_line(args: list[str], message: str, run_cli) -> None:
    done = run_cli(*args)
    assert done.code == 2 and message in done.err and len(done.err.strip().splitlines()) == 1, done.err


def test_a_timm_model_that_is_no_cnn_is_refused_by_derive_in_one_line(run_cli, tmp_path: Path) -> None:
    done = run_cli("derive", "--preset", "smoke", "--base", "timm:edgenext_xx_small", "--out", str(tmp_path / "run"))
    assert done.code == 2 and "edgenext_xx_small: archfamily prunes CNNs" in done.err, done.err
    assert len(done.err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def _record(module: str, model: str, failed: str = "", detail: str = "") -> dict:
    stages = {}
    for stage in STAGES:
        stages[stage] = {"ok": stage != failed, "seconds": 1.0, "detail": detail if stage == failed else "fine"}
        if stage == failed:
            break
    return {"module": module, "model": model, "input_size": 32, "native_input_size": 224, "groups": 3,
            "stages": stages}


def test_the_page_lists_each_stage_and_each_failure_s_reason_and_the_diff_says_what_moved() -> None:
    old = {"timm": "1.0.30", "torch_pruning": "1.6.1", "torch": "2.14", "date": "2026-01-01",
           "records": [_record("resnet", "resnet10t"), _record("ghostnet", "ghostnet_050", "rebuild", "shapes differ"),
                       _record("vit", "vit_tiny", "cnn", "archfamily prunes CNNs; vit_tiny has patch tokens")]}
    new = {**old, "timm": "1.0.31",
           "records": [_record("resnet", "resnet10t", "prune", "a | pipe"), _record("ghostnet", "ghostnet_050"),
                       _record("vit", "vit_tiny", "cnn", "archfamily prunes CNNs; vit_tiny has patch tokens"),
                       _record("regnet", "regnetx_002")]}
    page = markdown(new)
    assert "2 of 3 CNN modules pass every stage" in page and summary(new["records"]) in page
    assert "| resnet | resnet10t | 3 | ✓ | ✓ | ✓ | ✗ |" in page and "prune: a \\| pipe" in page
    assert "| vit | vit_tiny | archfamily prunes CNNs" in page
    assert changes(old, new) == [
        "timm 1.0.30 -> 1.0.31, Torch-Pruning 1.6.1 -> 1.6.1",
        "ghostnet: ghostnet_050 ✗ rebuild (shapes differ) -> ghostnet_050 ✓",
        "regnet: new, regnetx_002: ✓",
        "resnet: resnet10t ✓ -> resnet10t ✗ prune (a | pipe)",
    ]
