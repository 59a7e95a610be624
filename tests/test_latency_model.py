"""The latency model's arithmetic (with a stand-in timer, so the tests are deterministic): which operations a
network runs, the table's interpolation, its cache, and the per-operation overhead fitted on one network."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import archfamily.latency_model as lm
from archfamily.models import build_model
from archfamily.specs import base_spec


def _cost(kind: str, fixed: tuple[int, ...], channels: tuple[int, ...]) -> float:
    """A stand-in latency: bilinear in a conv's channels, linear in the others', so interpolation is exact."""
    if kind == "conv":
        return 1e-4 * fixed[0] ** 2 * fixed[2] ** 2 * channels[0] * channels[1] / fixed[1] ** 2
    return 1e-3 * fixed[0] * channels[0]


@pytest.fixture
def model(monkeypatch, tmp_path: Path) -> lm.LatencyModel:
    monkeypatch.setattr(lm, "_runnable", lambda kind, fixed, channels, batch, device: lambda: _cost(kind, fixed, channels))
    return lm.LatencyModel(torch.device("cpu"), 1, 1, tmp_path / "table.json", timer=lambda fn, device, threads: fn())


@pytest.mark.parametrize("name", ["wrn-16-2", "densenet-bc-40", "resnet-18"])
def test_every_convolution_and_norm_of_the_network_is_an_operation(name: str) -> None:
    spec = base_spec(name)
    ops = lm.network_ops(spec)
    net = build_model(spec)
    assert sum(o.kind == "conv" for o in ops) == sum(isinstance(m, nn.Conv2d) for m in net.modules())
    assert sum(o.kind == "batchnorm" for o in ops) == sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert sum(o.kind == "linear" for o in ops) == 1


def test_a_prediction_is_the_sum_of_the_operations_interpolated_exactly(model: lm.LatencyModel) -> None:
    spec = base_spec("wrn-16-2").with_prunable_widths([29, 37, 50, 61, 100, 3])  # widths off the grid
    expected = sum(_cost(o.kind, o.fixed, o.channels) for o in lm.network_ops(spec))
    assert model.predict(spec) == pytest.approx(expected, rel=1e-9)
    assert 0 < model.measured < 4 * len(lm.network_ops(spec))


def test_the_table_is_cached_and_reused(model: lm.LatencyModel, tmp_path: Path) -> None:
    spec = base_spec("wrn-16-1")
    first = model.predict(spec)
    again = lm.LatencyModel(torch.device("cpu"), 1, 1, tmp_path / "table.json",
                            timer=lambda fn, device, threads: pytest.fail("measured a cached point"))
    assert again.predict(spec) == first and again.measured == 0
    other = lm.LatencyModel(torch.device("cpu"), 2, 1, tmp_path / "table.json", timer=lambda fn, device, threads: fn())
    other.predict(spec)
    assert other.measured == model.measured  # another thread count is another table


def test_calibration_fits_the_overhead_per_operation(model: lm.LatencyModel) -> None:
    spec = base_spec("wrn-16-1")
    ops = lm.network_ops(spec)
    table = sum(_cost(o.kind, o.fixed, o.channels) for o in ops)
    assert model.calibrate(spec, lambda s: table + 0.002 * len(ops)) == pytest.approx(0.002)
    smaller = spec.with_prunable_widths([8] * len(spec.prunable_widths()))
    small_ops = lm.network_ops(smaller)
    assert model.predict(smaller) == pytest.approx(sum(_cost(o.kind, o.fixed, o.channels) for o in small_ops)
                                                   + 0.002 * len(small_ops))


def test_the_grid_has_every_simd_block_and_the_step_past_each_power_of_two() -> None:
    assert {8, 16, 24, 32, 33, 40, 64, 65, 128, 129, 256, 257, 288} <= set(lm.CHANNEL_GRID)
    assert lm.CHANNEL_GRID == tuple(sorted(set(lm.CHANNEL_GRID))) and lm.CHANNEL_GRID[-1] == 2048


def test_a_densenet_with_a_layer_pruned_away_still_traces() -> None:
    spec = base_spec("densenet-bc-40")
    widths = spec.prunable_widths()
    ops = lm.network_ops(spec.with_prunable_widths([0] + widths[1:]))
    assert sum(o.kind == "conv" for o in ops) < sum(o.kind == "conv" for o in lm.network_ops(spec))
