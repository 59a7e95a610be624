"""A per-device latency model: a network's latency as the sum of its operations' latencies, each read from a
lookup table measured on this machine (as NetAdapt's tables are), so a family member's latency is predicted in
milliseconds of arithmetic instead of seconds of timing.

The network is traced with torch.fx and its shapes propagated once; every operation that runs is keyed by what
its latency depends on: its kind, kernel, stride and input resolution, and its channel counts. The kinds are
those archfamily's own families and timm's CNNs run: dense, depthwise and grouped convolutions, batch norm (a
layer, or timm's norm-act layers' function), the activations timm uses (ReLU, ReLU6, SiLU,
GELU, hard swish, sigmoid, hard sigmoid, tanh), residual add, a channel gate's multiply (squeeze-excitation's,
and layer scale's), concatenation, pooling (and a mean over the map), linear. An operation of another kind that
does work is refused in one line naming it (`NotInTable`), as is a network whose maps turn channels-last
(ConvNeXt); shape checks, reshapes and inference-time identities count nothing. A key's latency is measured for channel counts on a fixed grid and interpolated (bilinearly for
a convolution's input and output channels, linearly for the others) in between. Each grid point is measured the first time a prediction needs it, eager, channels_last,
in inference mode, exactly as the bench and `scale --latency-ms` time whole networks (a busy machine's
figure refused, never cached: `timing`), and cached with its spread per machine, device, thread count and batch
in `$ARCHFAMILY_CACHE/latency-table.json` (`cache`); `remeasure` measures every point again. With
`runtime="onnxruntime"` the table is ONNX Runtime's instead (`onnx_ops`: its fusions, and each point a node's
cost inside a graph), in a section of its own.
"""
from __future__ import annotations

import bisect
import operator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from archfamily.files import cache_dir
from archfamily.errors import UserError
from archfamily.models import build_model
from archfamily.specs import ArchSpec
from archfamily.latency import onnx_ops
from archfamily.latency.cache import TimingCache
from archfamily.latency.timing import Timing, machine_info, time_interleaved


def _channel_grid(top: int = 2048) -> tuple[int, ...]:
    """Channel counts the table is measured at: 1-8, then every SIMD block (8 channels, 32 past 256), and one
    channel past each power of two, where CPU kernels change blocking and latency jumps (measured on oneDNN:
    a 3x3 conv at 32x32 takes 0.11 ms at 32 channels in and out, 0.14 ms at 33)."""
    points = set(range(1, 9))
    c = 8
    while c < top:
        step = 8 if c < 256 else 32 if c < 512 else 64
        c += step
        points.add(c)
    points |= {2**k + 1 for k in range(3, top.bit_length()) if 2**k + 1 <= top}
    return tuple(sorted(points))


CHANNEL_GRID = _channel_grid()
RUNTIMES = ("eager", "onnxruntime")  # what the table is measured in: eager PyTorch, or ONNX Runtime (`onnx_ops`)
# Networks (and topologies) whose operations are kept, least recently used dropped first: a prune step asks about
# one network per group and never about those again, so an unbounded cache grows by megabytes a prune over a run
# of thousands.
TRACES_KEPT = 64


@dataclass(frozen=True)
class Op:
    """One operation of a network, as the table keys it: `kind` and `fixed` (kernel, stride, resolution, ...)
    say which table; `channels` (one count, or input and output for a convolution) where in it."""

    kind: str
    fixed: tuple[int, ...]
    channels: tuple[int, ...]


Timer = Callable[[Callable[[], Any], torch.device, int], Timing]


def _time(fn: Callable[[], Any], device: torch.device, threads: int) -> Timing:
    return time_interleaved({"op": fn}, device, threads, rounds=1, min_run_time=0.05)["op"]


class NotInTable(UserError):
    """A network the latency model cannot predict: one a search can still answer by measurement alone."""


def check_predictable(ops: list[Op]) -> None:
    """A one-line error, before any timing or training, for a network the table cannot predict from its
    operations (`network_ops`; an operation of a kind it does not time fails there): more channels than the
    grid's last point. A pruned network has no more channels than its base."""
    for op in ops:
        for c in op.channels:
            _bracket(c)


def network_ops(spec: ArchSpec, batch: int = 1) -> list[Op]:
    """The operations one forward pass of `spec`'s network runs, in order (identities left out).

    Built and shape-propagated on the meta device: only shapes are needed, and pruning asks for a network's ops
    at every prune step, so no weights are initialised and nothing is computed."""
    with torch.device("meta"):
        model = build_model(spec).eval()
    graph = torch.fx.symbolic_trace(model)
    ShapeProp(graph).propagate(torch.zeros(batch, spec.in_chans, spec.input_size, spec.input_size, device="meta"))
    ops = []
    for node in graph.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method") \
                or not hasattr(node.meta.get("tensor_meta"), "shape"):
            continue  # not an operation on one tensor: a shape read, or a split into views (MixNet's)
        out = node.meta["tensor_meta"].shape
        first = node.args[0] if node.args else None
        shape_in = first.meta["tensor_meta"].shape \
            if isinstance(first, torch.fx.Node) and hasattr(first.meta.get("tensor_meta"), "shape") else out
        target = graph.get_submodule(node.target) if node.op == "call_module" else node.target
        op = _op(target, tuple(shape_in), tuple(out), node)
        if op is not None:
            ops.append(op)
    return ops


def _topology(spec: ArchSpec) -> ArchSpec:
    """What a network's operations' structure depends on: everything but the sizes of its open widths (a width
    pruned to 0 removes a block or a layer, and so operations)."""
    return spec.with_prunable_widths([min(w, 1) for w in spec.prunable_widths()])


class _OpsTemplate:
    """The operations of every network of one topology, each channel count an affine function of the prunable
    widths (a sum of widths and constants, in every family here), read off one trace of a network and one more
    per open width with that width moved by one (up from 1, else down: never to 0). A latency-aware pruning run
    asks about one network per group at every prune step, most of them of the current network's topology; a
    trace is 50-130 ms, filling in is arithmetic.

    `valid` is False where moving a width changed more than channel counts; such a topology is traced network
    by network."""

    @staticmethod
    def traces(spec: ArchSpec) -> int:
        """What building the template of `spec`'s topology costs, in traces."""
        return 1 + sum(w > 0 for w in spec.prunable_widths())

    def __init__(self, spec: ArchSpec, batch: int) -> None:
        self.widths = spec.prunable_widths()
        self.ops = network_ops(spec, batch)
        self.terms: list[tuple[int, int, int, int]] = []  # (op, channel slot, width index, coefficient)
        self.valid = True
        for g, w in enumerate(self.widths):
            if w == 0:
                continue
            step = -1 if w > 1 else 1
            moved = list(self.widths)
            moved[g] += step
            other = network_ops(spec.with_prunable_widths(moved), batch)
            if len(other) != len(self.ops) or any((a.kind, a.fixed) != (b.kind, b.fixed)
                                                   for a, b in zip(self.ops, other)):
                self.valid = False
                return
            for i, (a, b) in enumerate(zip(self.ops, other)):
                self.terms += [(i, slot, g, (cb - ca) * step) for slot, (ca, cb) in
                               enumerate(zip(a.channels, b.channels)) if cb != ca]

    def fill(self, spec: ArchSpec) -> list[Op]:
        """`spec`'s operations (`spec` of this template's topology)."""
        widths = spec.prunable_widths()
        channels = [list(op.channels) for op in self.ops]
        for i, slot, g, coef in self.terms:
            channels[i][slot] += coef * (widths[g] - self.widths[g])
        return [Op(op.kind, op.fixed, tuple(c)) for op, c in zip(self.ops, channels)]


def _keep(cache: dict, key: Any, value: Any) -> None:
    """Put `key` (popped, if it was there) back as the most recently used, dropping the least recently used
    past TRACES_KEPT: a dict keeps insertion order, so it is its own LRU list."""
    cache[key] = value
    if len(cache) > TRACES_KEPT:
        del cache[next(iter(cache))]


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {  # by the name of the function timm's layers call
    "relu": F.relu, "relu6": F.relu6, "silu": F.silu, "gelu": F.gelu, "hardswish": F.hardswish,
    "sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid, "tanh": torch.tanh,
}
_ACTIVATION_LAYERS = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu", nn.GELU: "gelu", nn.Hardswish: "hardswish",
                      nn.Sigmoid: "sigmoid", nn.Hardsigmoid: "hardsigmoid", nn.Tanh: "tanh"}
# timm's own activation layers (timm.layers.activations), by class name: the same functions
_TIMM_ACTIVATIONS = {"Swish": "silu", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid", "GELU": "gelu",
                     "Sigmoid": "sigmoid", "Tanh": "tanh"}
# what does no work worth a table at inference: shape reads and checks, views, identities, dropout
_NO_WORK = {"getattr", "eq", "_assert", "size", "dim", "flatten", "reshape", "view", "contiguous",
            "new_zeros", "Identity", "Flatten", "Dropout", "dropout", "DropPath", "getitem", "floordiv"}


def _activation(target: Any) -> Optional[str]:
    for layer, name in _ACTIVATION_LAYERS.items():
        if isinstance(target, layer):
            return name
    if isinstance(target, nn.Module):
        return _TIMM_ACTIVATIONS.get(type(target).__name__)
    name = getattr(target, "__name__", "")
    return name if name in ACTIVATIONS and callable(target) else None


def _op(target: Any, shape_in: tuple[int, ...], out: tuple[int, ...], node: torch.fx.Node) -> Optional[Op]:
    if isinstance(target, nn.Conv2d):
        fixed = (target.kernel_size[0], target.stride[0], shape_in[2])
        if target.groups == 1:
            return Op("conv", fixed, (shape_in[1], out[1]))
        if target.groups == target.in_channels == target.out_channels:
            return Op("dwconv", fixed, (out[1],))
        return Op("gconv", (*fixed, target.in_channels // target.groups), (shape_in[1], out[1]))
    if isinstance(target, nn.BatchNorm2d) or target is F.batch_norm:
        return Op("batchnorm", (out[2],), (out[1],))
    if target == "permute" and len(out) == 4:
        raise NotInTable(f"the latency model times networks whose maps stay channels-first; this one permutes "
                         f"them (at {node.name}, as ConvNeXt's blocks do)")
    if isinstance(target, (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d)):
        return Op(f"pool-{type(target).__name__}", (shape_in[2], out[2]), (out[1],))
    if target == "mean" and len(shape_in) == 4:  # squeeze-excitation's squeeze: a mean over the map
        return Op("pool-mean", (shape_in[2], out[2] if len(out) == 4 else 1), (shape_in[1],))
    if isinstance(target, nn.Linear) or target is F.linear:
        features = (target.in_features, target.out_features) if isinstance(target, nn.Linear) else \
            (shape_in[-1], out[-1])
        return Op("linear", (features[1],), (features[0],))
    activation = _activation(target)
    if activation is not None:
        kind = "relu" if activation == "relu" else f"act-{activation}"  # "relu": as the table has always keyed it
        return Op(kind, (out[2],), (out[1],)) if len(out) == 4 else None
    if target in (operator.add, torch.add, "add"):
        return Op("add", (out[2],), (out[1],)) if len(out) == 4 else None
    if target in (operator.mul, torch.mul, "mul") and len(out) == 4:  # a gate or a scale broadcast over the map
        other = [a for a in node.args if isinstance(a, torch.fx.Node) and "tensor_meta" in a.meta]
        shapes = [tuple(a.meta["tensor_meta"].shape) for a in other]
        broadcast = int(len(shapes) < 2 or any(s != out for s in shapes))
        return Op("mul", (out[2], broadcast), (out[1],))
    if target is torch.cat:
        return Op("cat", (out[2], len(node.args[0])), (out[1],))
    name = type(target).__name__ if isinstance(target, nn.Module) else getattr(target, "__name__", str(target))
    if name in _NO_WORK or target is operator.mul:  # a product that is not a map's: shape arithmetic
        return None
    raise NotInTable(f"the latency model cannot time {name} (at {node.name}); it times convolutions, norms, "
                     "activations, adds, multiplies, pooling, concatenation and linear layers")


def _bracket(c: int, grid: Optional[Sequence[int]] = None) -> tuple[int, int]:
    """The points of `grid` (the channel grid's, unless given) around `c` (equal when `c` is one)."""
    if not 1 <= c <= CHANNEL_GRID[-1]:
        raise NotInTable(f"the latency model's table covers 1 to {CHANNEL_GRID[-1]} channels, not {c}")
    grid = grid or CHANNEL_GRID
    i = bisect.bisect_left(grid, c)
    return (c, c) if grid[i] == c else (grid[i - 1], grid[i])


# ONNX Runtime's kernels (MLAS's blocked layout) run channel counts in whole blocks of 8 several times faster than
# the counts between (`studies/experiments/rounding-timm/`), so its latency is two curves, not one: a count in
# whole blocks is read between the grid's whole-block points, any other between the points one channel past them.
BLOCK = 8
BLOCK_GRID = tuple(c for c in CHANNEL_GRID if c % BLOCK == 0)
OFF_BLOCK_GRID = tuple(sorted({c for c in CHANNEL_GRID if c < BLOCK}
                              | {c + 1 for c in BLOCK_GRID if c < CHANNEL_GRID[-1]} | {CHANNEL_GRID[-1]}))


def _weight(c: int, lo: int, hi: int) -> float:
    return 0.0 if hi == lo else (c - lo) / (hi - lo)


def _runnable(kind: str, fixed: tuple[int, ...], channels: tuple[int, ...], batch: int,
              device: torch.device) -> Callable[[], Any]:
    """The operation alone, on a channels_last input of its shape."""
    def inputs(c: int, size: int) -> torch.Tensor:
        return torch.randn(batch, c, size, size, device=device).contiguous(memory_format=torch.channels_last)

    if kind == "conv":
        kernel, stride, size = fixed
        conv = nn.Conv2d(channels[0], channels[1], kernel, stride, kernel // 2, bias=False).to(device).eval()
        conv = conv.to(memory_format=torch.channels_last)
        x = inputs(channels[0], size)
        return lambda: conv(x)
    if kind == "dwconv":
        kernel, stride, size = fixed
        conv = nn.Conv2d(channels[0], channels[0], kernel, stride, kernel // 2, groups=channels[0], bias=False)
        conv = conv.to(device).eval().to(memory_format=torch.channels_last)
        x = inputs(channels[0], size)
        return lambda: conv(x)
    if kind == "gconv":  # at the grid's channel counts rounded to whole groups of the layer's group width
        kernel, stride, size, width = fixed
        groups = max(1, round(channels[0] / width))
        out = groups * max(1, round(channels[1] / groups))
        conv = nn.Conv2d(groups * width, out, kernel, stride, kernel // 2, groups=groups, bias=False)
        conv = conv.to(device).eval().to(memory_format=torch.channels_last)
        x = inputs(groups * width, size)
        return lambda: conv(x)
    if kind == "linear":
        fc = nn.Linear(channels[0], fixed[0]).to(device).eval()
        x = torch.randn(batch, channels[0], device=device)
        return lambda: fc(x)
    c, size = channels[0], fixed[0]
    if kind == "batchnorm":
        bn = nn.BatchNorm2d(c).to(device).eval()
        x = inputs(c, size)
        return lambda: bn(x)
    if kind == "relu" or kind.startswith("act-"):
        act, x = ACTIVATIONS[kind.removeprefix("act-")], inputs(c, size)
        return lambda: act(x)
    if kind == "mul":
        x = inputs(c, size)
        y = torch.randn(batch, c, 1, 1, device=device) if fixed[1] else inputs(c, size)
        return lambda: x * y
    if kind == "pool-mean":
        x = inputs(c, size)
        return lambda: x.mean((2, 3), keepdim=True)
    if kind == "add":
        x, y = inputs(c, size), inputs(c, size)
        return lambda: x + y
    if kind == "cat":
        parts = fixed[1]
        xs = [inputs(max(1, c // parts), size) for _ in range(parts)]
        return lambda: torch.cat(xs, 1)
    if kind.startswith("pool-"):
        in_size, out_size = fixed
        pool: nn.Module = nn.AdaptiveAvgPool2d(out_size) if kind == "pool-AdaptiveAvgPool2d" else \
            getattr(nn, kind[5:])(in_size // out_size)
        x = inputs(c, in_size)
        return lambda: pool(x)
    raise ValueError(kind)


class LatencyModel:
    """Predicted latency (ms) of a network on one device, thread count and batch, from a measured table."""

    def __init__(self, device: torch.device, threads: int, batch: int, path: Optional[Path] = None,
                 timer: Timer = _time, on_measure: Optional[Callable[[], None]] = None,
                 remeasure: bool = False, runtime: str = "eager") -> None:
        if runtime not in RUNTIMES or (runtime == "onnxruntime" and device.type != "cpu"):
            raise UserError(f"the latency model predicts {' or '.join(RUNTIMES)} (onnxruntime on the CPU), "
                            f"not {runtime} on {device.type}")
        self.device, self.threads, self.batch, self.timer, self.on_measure = device, threads, batch, timer, on_measure
        self.runtime = runtime
        self.table = TimingCache(Path(path) if path else cache_dir() / "latency-table.json", remeasure)
        # eager's settings say no runtime, as tables measured before ONNX Runtime's did not
        self.setting = self.table.setting_id({**machine_info(), "device": device.type, "threads": threads,
                                              "batch": batch, **({"runtime": runtime} if runtime != "eager" else {})})
        self.measured = 0  # grid points measured by this object (the rest came from the cache)
        self.overhead_ms = 0.0  # per operation, from `calibrate`
        self.ms_per_mb = 0.0  # per MB of activations written, from `calibrate`
        self._ops: dict[ArchSpec, list[Op]] = {}
        # by topology: its template, or how many of its networks were traced so far
        self._templates: dict[ArchSpec, Union[_OpsTemplate, int]] = {}

    def _point(self, kind: str, fixed: tuple[int, ...], channels: tuple[int, ...]) -> float:
        key = f"{kind}|{','.join(map(str, fixed))}|{','.join(map(str, channels))}"
        timing = self.table.get(self.setting, key)
        if timing is None:
            fn = _runnable(kind, fixed, channels, self.batch, self.device) if self.runtime == "eager" else \
                onnx_ops.runnable(kind, fixed, channels, self.batch, self.threads)
            with torch.inference_mode():
                timing = self.timer(fn, self.device, self.threads)
            if self.runtime == "onnxruntime" and kind != onnx_ops.FLOOR:
                floor = self._point(onnx_ops.FLOOR, (), ())
                timing = replace(timing, median_ms=onnx_ops.per_copy(timing.median_ms, floor),
                                 iqr_ms=timing.iqr_ms / onnx_ops.COPIES)
            self.measured += 1
            self.table.put(self.setting, key, timing)
            if self.on_measure:
                self.on_measure()
        return timing.median_ms

    def _bracket(self, c: int) -> tuple[int, int]:
        """The table points a channel count is read between: the grid's, or in ONNX Runtime those on `c`'s side
        of its block boundary."""
        if self.runtime == "eager":
            return _bracket(c)
        return _bracket(c, BLOCK_GRID) if c % BLOCK == 0 else _bracket(c, OFF_BLOCK_GRID)

    def op_ms(self, op: Op) -> float:
        if len(op.channels) == 2:  # a dense or grouped convolution: its input and output channels
            (ci, co), ((a0, a1), (b0, b1)) = op.channels, (self._bracket(op.channels[0]), self._bracket(op.channels[1]))
            u, v = _weight(ci, a0, a1), _weight(co, b0, b1)
            at = lambda a, b: self._point(op.kind, op.fixed, (a, b))  # noqa: E731
            return ((1 - u) * (1 - v) * at(a0, b0) + u * (1 - v) * at(a1, b0)
                    + (1 - u) * v * at(a0, b1) + u * v * at(a1, b1))
        (c,), (lo, hi) = op.channels, self._bracket(op.channels[0])
        w = _weight(c, lo, hi)
        return (1 - w) * self._point(op.kind, op.fixed, (lo,)) + w * self._point(op.kind, op.fixed, (hi,))

    def ops(self, spec: ArchSpec) -> list[Op]:
        """`spec`'s operations: traced, until its topology's networks have cost as many traces as a template of
        the topology would (so a topology asked about once or twice, as when a group is about to close, costs
        at most twice what tracing alone would); filled in from that template after."""
        ops = self._ops.pop(spec, None)
        if ops is None:
            topology = _topology(spec)
            known = self._templates.pop(topology, 0)
            if isinstance(known, _OpsTemplate):
                ops = known.fill(spec) if known.valid else network_ops(spec, self.batch)
            elif known + 1 >= _OpsTemplate.traces(spec):
                known = _OpsTemplate(spec, self.batch)  # its first trace is `spec`'s own
                ops = known.ops
            else:
                known, ops = known + 1, network_ops(spec, self.batch)
            _keep(self._templates, topology, known)
        _keep(self._ops, spec, ops)
        return ops

    def run_ops(self, spec: ArchSpec) -> list[Op]:
        """`spec`'s operations as the runtime runs them: ONNX Runtime's with its fusions (`onnx_ops.fuse`)."""
        ops = self.ops(spec)
        return ops if self.runtime == "eager" else onnx_ops.fuse(ops)

    def output_bytes(self, spec: ArchSpec) -> int:
        """Bytes of the activations one forward pass writes (float32)."""
        return sum(_output_elements(op) for op in self.run_ops(spec)) * self.batch * 4

    def calibrate(self, references: Sequence[ArchSpec], measure: Callable[[ArchSpec], float]) -> tuple[float, float]:
        """Fit what the table does not see from measured networks; returns (ms per operation, ms per MB written).

        Two costs: a constant per operation (calling modules inside blocks, Python between them), and a cost
        per byte of activations written: in a network an operation reads what the one before it wrote, where an
        operation timed alone reads its own input, warm in cache. (A third cost, page faults on activations glibc
        gave back to the OS, is not modelled but removed: every timing keeps freed memory, see `allocator`.)
        Fitted by least squares on two or more references of different sizes (the per-byte cost is left at 0
        with one, and either is left at 0 where a fit would make it negative); in ONNX Runtime the
        per-operation cost alone, at least minus the references' mean operation.
        """
        tables = [self._table_ms(r) for r in references]
        rows = [(len(self.run_ops(r)), self.output_bytes(r) / 2**20, measure(r) - table)
                for r, table in zip(references, tables)]
        if self.runtime == "onnxruntime":
            # An operation in a network may cost less than one timed alone (its layout reorders are the
            # network's, once, not each node's): the per-operation cost alone is fitted, and may go below 0, down
            # to minus the references' mean operation. (A per-MB cost fitted beside a negative one cancels it at
            # the references and predicts small members below zero.)
            lowest = min(table / ops for table, (ops, _, _) in zip(tables, rows))
            a, _ = _nonnegative_fit([(ops, 0.0, residual + lowest * ops) for ops, _, residual in rows])
            self.overhead_ms, self.ms_per_mb = a - lowest, 0.0
        else:
            self.overhead_ms, self.ms_per_mb = _nonnegative_fit(rows)
        return self.overhead_ms, self.ms_per_mb

    def _table_ms(self, spec: ArchSpec) -> float:
        floor = self._point(onnx_ops.FLOOR, (), ()) if self.runtime == "onnxruntime" else 0.0  # a session call
        return sum(self.op_ms(op) for op in self.run_ops(spec)) + floor

    def predict(self, spec: ArchSpec) -> float:
        """The network's predicted latency in ms: its operations' table latencies plus the fitted costs (in ONNX
        Runtime, whose fitted per-operation cost may be negative, at least one session call)."""
        predicted = (self._table_ms(spec) + self.overhead_ms * len(self.run_ops(spec))
                     + self.ms_per_mb * self.output_bytes(spec) / 2**20)
        return max(predicted, self._point(onnx_ops.FLOOR, (), ())) if self.runtime == "onnxruntime" else predicted


def _output_elements(op: Op) -> int:
    """Elements (per image) an operation writes."""
    if op.kind.split("+")[0] in ("conv", "dwconv", "gconv"):  # and what ONNX Runtime fuses into one
        kernel, stride, size = op.fixed[:3]
        return op.channels[-1] * (size // stride) ** 2
    if op.kind == "linear":
        return op.fixed[0]
    if op.kind.startswith("pool-"):
        return op.channels[0] * op.fixed[1] ** 2
    return op.channels[0] * op.fixed[0] ** 2  # batch norm, ReLU, add, cat: the output's channels at its size


def _nonnegative_fit(rows: list[tuple[float, float, float]]) -> tuple[float, float]:
    """Least squares of residual ~ a * ops + b * MB with a, b >= 0 (b = 0 with one row)."""
    def one(column: int) -> float:
        den = sum(r[column] ** 2 for r in rows)
        return max(0.0, sum(r[column] * r[2] for r in rows) / den) if den else 0.0

    if len(rows) < 2:
        return one(0), 0.0
    saa, sab, sbb = (sum(r[0] * r[0] for r in rows), sum(r[0] * r[1] for r in rows), sum(r[1] * r[1] for r in rows))
    say, sby = sum(r[0] * r[2] for r in rows), sum(r[1] * r[2] for r in rows)
    det = saa * sbb - sab * sab
    if det > 1e-12 * saa * sbb:
        a, b = (say * sbb - sby * sab) / det, (sby * saa - say * sab) / det
        if a >= 0 and b >= 0:
            return a, b
    candidates = [(one(0), 0.0), (0.0, one(1))]
    return min(candidates, key=lambda ab: sum((r[2] - ab[0] * r[0] - ab[1] * r[1]) ** 2 for r in rows))
