"""The latency model's operations as ONNX Runtime runs them: each table key as a small ONNX graph, built with
`onnx.helper` (no exporter: a grid point is built in milliseconds) and run by ONNX Runtime's CPU provider.

ONNX Runtime folds a batch norm into the convolution before it and fuses the activation after it (its
`ConvBNFusion` and `ConvActivationFusion`), so a convolution followed by either is one table key there, its kind
the chain of what it fuses ("conv+batchnorm+relu"), timed as that chain: ONNX Runtime makes of it what it makes of
the same layers in a whole network (`fuse`). Every call of a session costs a floor (`FLOOR`, a graph that copies
its input) that a network pays once: an operation is timed as COPIES copies of it in one graph, and what one adds
is that time less the floor, over COPIES (`per_copy`), as a node adds it to a network's graph.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

OPSET = 20  # Gelu's first opset
CONV_KINDS = ("conv", "dwconv", "gconv")
FLOOR = "floor"  # the table key of the floor: an Identity graph
COPIES = 8  # copies of an operation in the graph that times it


def fuse(ops: Sequence[Any]) -> list[Any]:
    """`ops` (`model.Op`s, in the network's order) as ONNX Runtime runs them: a batch norm directly after a
    convolution, and an activation directly after either, made part of the convolution's key."""
    fused: list[Any] = []
    for op in ops:
        last = fused[-1] if fused else None
        follows_conv = last is not None and last.kind.split("+")[0] in CONV_KINDS and \
            op.channels[:1] == last.channels[-1:]
        if follows_conv and op.kind == "batchnorm" and "+" not in last.kind:
            fused[-1] = type(op)(f"{last.kind}+batchnorm", last.fixed, last.channels)
        elif follows_conv and (op.kind == "relu" or op.kind.startswith("act-")) and \
                not last.kind.split("+")[-1].startswith(("relu", "act-")):
            fused[-1] = type(op)(f"{last.kind}+{op.kind}", last.fixed, last.channels)
        else:
            fused.append(op)
    return fused


def _activation(name: str, x: str, y: str, helper: Any, inits: list) -> list:
    """Nodes computing activation `name` (the table's name: relu, or act-NAME) of `x` into `y`, as torch's ONNX
    exporter writes them."""
    from onnx import numpy_helper

    name = name.removeprefix("act-")
    if name == "relu6":
        inits += [numpy_helper.from_array(np.array(0, np.float32), "zero"),
                  numpy_helper.from_array(np.array(6, np.float32), "six")]
        return [helper.make_node("Clip", [x, "zero", "six"], [y])]
    if name == "silu":
        return [helper.make_node("Sigmoid", [x], [f"{y}_s"]), helper.make_node("Mul", [x, f"{y}_s"], [y])]
    if name == "hardsigmoid":
        return [helper.make_node("HardSigmoid", [x], [y], alpha=1 / 6, beta=0.5)]
    ops = {"relu": "Relu", "gelu": "Gelu", "hardswish": "HardSwish", "sigmoid": "Sigmoid", "tanh": "Tanh"}
    return [helper.make_node(ops[name], [x], [y])]


def _graph(kind: str, fixed: tuple[int, ...], channels: tuple[int, ...], batch: int) \
        -> tuple[list, list, dict[str, np.ndarray]]:
    """(nodes, initializers, inputs) of one table key; the graph's output is named "y"."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)

    def array(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    def weight(name: str, *shape: int) -> Any:
        return numpy_helper.from_array(array(*shape), name)

    first, *chain = kind.split("+")
    inits: list = []
    if first in CONV_KINDS:
        kernel, stride, size = fixed[:3]
        cin, cout = (channels[0], channels[0]) if first == "dwconv" else channels
        groups = cin if first == "dwconv" else 1
        if first == "gconv":  # at whole groups of the layer's group width, as the eager table rounds them
            groups = max(1, round(cin / fixed[3]))
            cin, cout = groups * fixed[3], groups * max(1, round(cout / groups))
        inits.append(weight("w", cout, cin // groups, kernel, kernel))
        out = "y" if not chain else "t0"
        nodes = [helper.make_node("Conv", ["x", "w"], [out], kernel_shape=[kernel, kernel], strides=[stride, stride],
                                  pads=[kernel // 2] * 4, group=groups)]
        for i, part in enumerate(chain):
            src, dst = f"t{i}", "y" if i == len(chain) - 1 else f"t{i + 1}"
            if part == "batchnorm":
                inits += [weight(f"bn{i}_{k}", cout) for k in ("scale", "bias", "mean")]
                inits.append(numpy_helper.from_array(np.abs(array(cout)) + 1, f"bn{i}_var"))
                nodes.append(helper.make_node("BatchNormalization", [src, *(f"bn{i}_{k}" for k in
                                                                           ("scale", "bias", "mean", "var"))], [dst]))
            else:
                nodes += _activation(part, src, dst, helper, inits)
        return nodes, inits, {"x": array(batch, cin, size, size)}
    if first == "linear":
        inits += [weight("w", fixed[0], channels[0]), weight("b", fixed[0])]
        return [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], inits, {"x": array(batch, channels[0])}
    if first == FLOOR:
        return [helper.make_node("Identity", ["x"], ["y"])], inits, {"x": array(batch, 8)}
    c, size = channels[0], fixed[0]
    x = {"x": array(batch, c, size, size)}
    if first == "batchnorm":
        inits += [weight(f"bn_{k}", c) for k in ("scale", "bias", "mean")]
        inits.append(numpy_helper.from_array(np.abs(array(c)) + 1, "bn_var"))
        return [helper.make_node("BatchNormalization", ["x", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["y"])], \
            inits, x
    if first == "relu" or first.startswith("act-"):
        return _activation(first, "x", "y", helper, inits), inits, x
    if first == "mul":  # a gate (a graph input, as in a network, not a constant ONNX Runtime would fold)
        gate = array(batch, c, 1, 1) if fixed[1] else array(batch, c, size, size)
        return [helper.make_node("Mul", ["x", "g"], ["y"])], inits, {**x, "g": gate}
    if first == "add":
        return [helper.make_node("Add", ["x", "g"], ["y"])], inits, {**x, "g": array(batch, c, size, size)}
    if first == "cat":
        parts = {f"x{i}": array(batch, max(1, c // fixed[1]), size, size) for i in range(fixed[1])}
        return [helper.make_node("Concat", list(parts), ["y"], axis=1)], inits, parts
    if first == "pool-mean":
        inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
        return [helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)], inits, x
    if first.startswith("pool-"):
        in_size, out_size = fixed
        x = {"x": array(batch, c, in_size, in_size)}
        if first == "pool-AdaptiveAvgPool2d" and out_size == 1:
            return [helper.make_node("GlobalAveragePool", ["x"], ["y"])], inits, x
        op = "MaxPool" if first == "pool-MaxPool2d" else "AveragePool"
        k = in_size // out_size
        return [helper.make_node(op, ["x"], ["y"], kernel_shape=[k, k], strides=[k, k])], inits, x
    raise ValueError(kind)


def _copies(nodes: list, count: int, shared: set[str]) -> tuple[list, list[str]]:
    """`count` copies of `nodes`, each computing its own output (`y0`, `y1`...) from the `shared` inputs and
    weights."""
    from onnx import helper

    copies, outputs = [], []
    for i in range(count):
        rename = lambda name: name if name in shared else f"{name}_{i}"  # noqa: E731
        copies += [helper.make_node(n.op_type, [rename(x) for x in n.input], [rename(y) for y in n.output],
                                    name=f"{n.op_type}_{i}_{j}", **{a.name: helper.get_attribute_value(a)
                                                                    for a in n.attribute})
                   for j, n in enumerate(nodes)]
        outputs.append(rename("y"))
    return copies, outputs


def runnable(kind: str, fixed: tuple[int, ...], channels: tuple[int, ...], batch: int,
             threads: int) -> Callable[[], Any]:
    """One ONNX Runtime call, on `threads` CPU threads, of a graph holding COPIES copies of the table key's
    operation (one, for the floor): its time less the floor, over COPIES, is what the operation adds to a network
    (`per_copy`), the session call's own cost divided away."""
    import onnxruntime
    from onnx import TensorProto, helper

    nodes, inits, feeds = _graph(kind, fixed, channels, batch)
    nodes, outputs = _copies(nodes, 1 if kind == FLOOR else COPIES, {*feeds, *(t.name for t in inits)})
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(a.shape)) for name, a in feeds.items()]
    graph = helper.make_graph(nodes, kind, inputs,
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, None) for y in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # the copies are alike on purpose: ONNX Runtime would otherwise compute them once
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                           disabled_optimizers=["CommonSubexpressionElimination"])
    # inputs and outputs bound once (`run_with_iobinding`): in a network ONNX Runtime hands tensors from one node to
    # the next in its own memory, so a timed call copies nothing in or out, nor allocates its outputs
    results = session.run(None, feeds)
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_ortvalue_input(name, onnxruntime.OrtValue.ortvalue_from_numpy(array))
    for name, out in zip(outputs, results):
        binding.bind_ortvalue_output(name, onnxruntime.OrtValue.ortvalue_from_numpy(np.empty_like(out)))
    return lambda: session.run_with_iobinding(binding)


def per_copy(ms: float, floor_ms: float) -> float:
    """What one operation adds to a network, from its `runnable`'s time and the floor's."""
    return max(ms - floor_ms, 0.0) / COPIES
