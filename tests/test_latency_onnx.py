"""The latency model's ONNX Runtime table (`latency.onnx_ops`): which operations ONNX Runtime fuses, that each
table key's graph computes its operation, and that a prediction is the fused operations' per-copy costs plus one
session call."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import archfamily.latency.model as lm
from archfamily.anycnn.spec import TimmSpec
from archfamily.errors import UserError
from archfamily.latency import onnx_ops
from archfamily.latency.timing import Timing
from archfamily.specs import base_spec

pytest.importorskip("onnxruntime")


def test_a_norm_and_an_activation_after_a_convolution_are_fused_into_its_key() -> None:
    ops = [lm.Op("conv", (3, 1, 8), (3, 16)), lm.Op("batchnorm", (8,), (16,)), lm.Op("act-relu6", (8,), (16,)),
           lm.Op("dwconv", (3, 2, 8), (16,)), lm.Op("batchnorm", (4,), (16,)), lm.Op("add", (4,), (16,)),
           lm.Op("relu", (4,), (16,)), lm.Op("conv", (1, 1, 4), (16, 8)), lm.Op("act-silu", (4,), (8,)),
           lm.Op("act-sigmoid", (4,), (8,)), lm.Op("batchnorm", (4,), (32,))]
    assert [op.kind for op in onnx_ops.fuse(ops)] == [
        "conv+batchnorm+act-relu6", "dwconv+batchnorm", "add", "relu", "conv+act-silu", "act-sigmoid", "batchnorm"]


def test_mobilenetv2s_convolutions_each_carry_their_norm_and_activation() -> None:
    ops = lm.network_ops(TimmSpec.of_base("mobilenetv2_050", 10, 3, 32))
    fused = onnx_ops.fuse(ops)
    convs = [op for op in ops if op.kind in onnx_ops.CONV_KINDS]
    assert len([op for op in fused if op.kind.split("+")[0] in onnx_ops.CONV_KINDS]) == len(convs)
    assert not [op for op in fused if op.kind == "batchnorm"]  # every norm follows a convolution
    assert len(fused) == len(ops) - sum(op.kind in ("batchnorm", "act-relu6") for op in ops)


@pytest.mark.parametrize("kind,fixed,channels,expect", [
    ("add", (4,), (3,), lambda f: f["x"] + f["g"]),
    ("mul", (4, 1), (3,), lambda f: f["x"] * f["g"]),
    ("act-hardswish", (4,), (3,), lambda f: f["x"] * np.clip(f["x"] + 3, 0, 6) / 6),
    ("act-silu", (4,), (3,), lambda f: f["x"] / (1 + np.exp(-f["x"]))),
    ("pool-mean", (4, 1), (3,), lambda f: f["x"].mean((2, 3), keepdims=True)),
    ("cat", (4, 2), (6,), lambda f: np.concatenate([f["x0"], f["x1"]], 1)),
])
def test_each_copy_of_a_keys_graph_computes_its_operation(kind: str, fixed, channels, expect) -> None:
    import onnxruntime

    nodes, inits, feeds = onnx_ops._graph(kind, fixed, channels, batch=2)
    fn = onnx_ops.runnable(kind, fixed, channels, batch=2, threads=1)
    assert fn() is None  # outputs land in bound buffers; check them by running the graph plainly
    from onnx import TensorProto, helper

    nodes, outputs = onnx_ops._copies(nodes, 2, {*feeds, *(t.name for t in inits)})
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
                                            for n, a in feeds.items()],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, None) for y in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_ops.OPSET)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for out in session.run(None, feeds):
        np.testing.assert_allclose(out, expect(feeds), rtol=1e-5, atol=1e-6)


def test_fused_and_grouped_convolutions_run_at_their_shapes() -> None:
    for kind, fixed, channels in [("conv+batchnorm+act-relu6", (3, 2, 8), (5, 7)), ("dwconv+act-gelu", (5, 1, 6), (9,)),
                                  ("gconv+batchnorm", (3, 1, 4, 4), (16, 24)), ("linear", (10,), (33,)),
                                  ("pool-MaxPool2d", (8, 4), (3,)), ("pool-AdaptiveAvgPool2d", (8, 1), (3,))]:
        onnx_ops.runnable(kind, fixed, channels, batch=1, threads=1)()


def test_an_onnxruntime_prediction_is_per_copy_costs_plus_one_session_call(tmp_path: Path, monkeypatch) -> None:
    """A stand-in ONNX Runtime: the floor takes 0.01 ms, a graph of COPIES copies of an operation 0.01 ms plus
    COPIES times its cost (0.002 ms per channel of its first count)."""
    def fake(kind, fixed, channels, batch, threads):
        return lambda: 0.01 if kind == onnx_ops.FLOOR else 0.01 + onnx_ops.COPIES * 0.002 * channels[0]

    monkeypatch.setattr(onnx_ops, "runnable", fake)
    model = lm.LatencyModel(torch.device("cpu"), 1, 1, tmp_path / "table.json",
                            timer=lambda fn, device, threads: Timing(fn(), 0.0, 1), runtime="onnxruntime")
    spec = base_spec("wrn-10-1")
    fused = onnx_ops.fuse(lm.network_ops(spec))
    assert model.predict(spec) == pytest.approx(0.01 + sum(0.002 * op.channels[0] for op in fused))
    eager = lm.LatencyModel(torch.device("cpu"), 1, 1, tmp_path / "table.json")
    assert eager.setting != model.setting  # one table file, a section per runtime


def test_onnxruntime_predicts_the_cpu_only() -> None:
    with pytest.raises(UserError, match="onnxruntime on the CPU"):
        lm.LatencyModel(torch.device("cuda"), 1, 1, runtime="onnxruntime")


def test_onnxruntime_reads_whole_blocks_and_the_counts_between_on_separate_curves(tmp_path: Path) -> None:
    model = lm.LatencyModel(torch.device("cpu"), 1, 1, tmp_path / "table.json", runtime="onnxruntime")
    eager = lm.LatencyModel(torch.device("cpu"), 1, 1, tmp_path / "table.json")
    assert model._bracket(264) == (256, 288) and model._bracket(260) == (257, 289)
    assert model._bracket(12) == (9, 17) and model._bracket(16) == (16, 16) and model._bracket(5) == (5, 5)
    assert eager._bracket(12) == (9, 16) and eager._bracket(20) == (17, 24)  # eager: one curve through both


def test_onnxruntime_calibration_fits_a_per_operation_cost_alone_that_may_save_time(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    monkeypatch.setattr(onnx_ops, "runnable", lambda kind, fixed, channels, batch, threads:
                        lambda: 0.01 if kind == onnx_ops.FLOOR else 0.01 + onnx_ops.COPIES * 0.004)
    model = lm.LatencyModel(torch.device("cpu"), 1, 1, tmp_path / "table.json",
                            timer=lambda fn, device, threads: Timing(fn(), 0.0, 1), runtime="onnxruntime")
    small, big = base_spec("wrn-10-1"), base_spec("wrn-16-2")
    ops = {s: len(model.run_ops(s)) for s in (small, big)}
    measured = {s: 0.01 + 0.003 * ops[s] for s in (small, big)}  # each operation 1 us cheaper than timed alone
    overhead, per_mb = model.calibrate([small, big], measured.__getitem__)
    assert overhead == pytest.approx(-0.001) and per_mb == 0.0
    assert model.predict(small) == pytest.approx(measured[small])


def test_an_onnxruntime_prediction_is_never_below_one_session_call(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(onnx_ops, "runnable", lambda kind, fixed, channels, batch, threads:
                        lambda: 0.01 if kind == onnx_ops.FLOOR else 0.01 + onnx_ops.COPIES * 0.004)
    model = lm.LatencyModel(torch.device("cpu"), 1, 1, tmp_path / "table.json",
                            timer=lambda fn, device, threads: Timing(fn(), 0.0, 1), runtime="onnxruntime")
    small, big = base_spec("wrn-10-1"), base_spec("wrn-16-2")
    model.calibrate([big], lambda spec: 0.0001)  # a network far faster than its operations timed alone
    assert model.overhead_ms < 0 and model.predict(small) == pytest.approx(0.01)
