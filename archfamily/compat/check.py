"""One timm network through every stage an archfamily run takes it through, each timed and judged on its own.

`archfamily check timm:NAME` and the timm sweep (`benchmarks/timm_sweep.py`) run this. The stages, in order, each
needing the ones before it:

- cnn: the model is one archfamily prunes (no self-attention, no patch tokens: `anycnn.kinds`);
- trace: Torch-Pruning's channel groups, at a small input (32 px, or the least of 64, 96... it runs at);
- rebuild: the network at half and at one and a half times every width, each run on an image;
- count: each one's parameters and MACs as the spec counts them (without building it) are the built network's;
- prune: a few Fisher prunes of every group on random images, then the pruned network for real, whose size is
  the member's and whose logits are the masked network's (where no closed channel meets a LayerNorm or GroupNorm
  over channels, whose statistics a mask cannot take a channel out of: there it runs);
- export: `archfamily export` of that member with its weights, loaded back by `timm.create_model("local-dir:")`
  with the same logits;
- onnx: the same network through torch's ONNX exporter, run by ONNX Runtime with the same logits (skipped, with
  the reason, where onnx, onnxscript or onnxruntime is not installed);
- features: timm's `features_only` of the member: one feature map per level timm's `feature_info` lists, of the
  channels it says;
- native: trace, rebuild and count again at the input size timm's pretrained cfg gives the model (224 for most).

A stage that fails says why in one line (archfamily's own message where it refuses, else the exception's first
line); the stages after it are not reached.
"""
from __future__ import annotations

import importlib.util
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from archfamily.anycnn.spec import TimmSpec
from archfamily.errors import UserError

STAGES = ("cnn", "trace", "rebuild", "count", "prune", "export", "onnx", "features", "native")
SMALL_INPUT = 32  # CIFAR's side: what `archfamily derive --base timm:NAME` traces at
SMALL_INPUTS = (SMALL_INPUT, 64, 96, 128, 160)  # the small input: the first of these the network runs at
PRUNES, STEPS_PER_PRUNE = 3, 2
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}  # the same network computed another way (masked, reloaded)
ONNX_TOLERANCE = {"rtol": 1e-3, "atol": 1e-4}  # ONNX Runtime's kernels sum in another order


@dataclass
class StageResult:
    """One stage's outcome: passed (True), failed (False) or skipped (None), its time, and what it found or why
    it failed or was skipped."""

    ok: Optional[bool]
    seconds: float
    detail: str


@dataclass
class NetworkCheck:
    """Every stage one network reached; the table's row and the JSON's record."""

    model: str
    module: str
    input_size: int
    native_input_size: int
    groups: Optional[int] = None
    stages: dict[str, StageResult] = field(default_factory=dict)

    def failure(self) -> Optional[tuple[str, str]]:
        """(stage, reason) of the stage that failed, or None when none did."""
        return next(((s, r.detail) for s, r in self.stages.items() if r.ok is False), None)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "module": self.module, "input_size": self.input_size,
                "native_input_size": self.native_input_size, "groups": self.groups,
                "stages": {s: {"ok": r.ok, "seconds": round(r.seconds, 2), "detail": r.detail}
                           for s, r in self.stages.items()}}


class Skipped(Exception):
    """A stage that cannot run here (a package it needs is not installed): neither passed nor failed."""


def reason(exc: BaseException) -> str:
    """An exception as one line: archfamily's own message as it is, anything else with its type."""
    text = str(exc).splitlines()[0].strip() if str(exc).strip() else "no message"
    return text[:240] if isinstance(exc, UserError) else f"{type(exc).__name__}: {text[:200]}"


def _images(spec: TimmSpec, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, spec.in_chans, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(seed))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _same(a: torch.Tensor, b: torch.Tensor, what: str, tolerance: dict[str, float] = TOLERANCE) -> None:
    try:
        torch.testing.assert_close(a, b, **tolerance)
    except AssertionError:
        raise UserError(f"{what} differ (largest difference {float((a - b).abs().max()):.3g})") from None


def _cfg_size(name: str, key: str, default: int) -> int:
    """The side timm's pretrained cfg of `name` gives under `key` (input_size, min_input_size), else `default`."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    size = getattr(cfg, key, None) if cfg is not None else None
    return int(size[-1]) if size else default


def _smallest_input(name: str) -> int:
    """The first of `SMALL_INPUTS` timm's `name` runs at (on the meta device; its cfg's least where it says one):
    Inception's stem needs more than CIFAR's 32 px."""
    import timm

    least = _cfg_size(name, "min_input_size", SMALL_INPUT)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    except Exception:  # not a model timm builds: the cnn stage says so
        return max(SMALL_INPUT, least)
    for size in (s for s in SMALL_INPUTS if s >= least):
        try:
            with torch.no_grad():
                model(torch.empty(1, 3, size, size, device="meta"))
            return size
        except Exception:  # too small for its kernels or its strides: the next size
            continue
    return max(SMALL_INPUT, least)


def module_of(name: str) -> str:
    """The timm module (file under timm/models) that defines `name`."""
    from timm.models import model_entrypoint

    return model_entrypoint(name).__module__.rpartition(".")[2]


class _Checker:
    """The stages of one network, sharing what each makes (the spec, the pruned member, its files)."""

    def __init__(self, name: str, input_size: int, folder: Path) -> None:
        self.name, self.input_size, self.folder = name, input_size, folder
        self.spec: TimmSpec  # the base, set by the trace stage
        self.counted: list[tuple[int, int]]  # params and MACs of `_sized`'s networks, set by the rebuild stage
        self.member: nn.Module  # the pruned network, set by the prune stage

    def cnn(self) -> str:
        import timm

        from archfamily.anycnn.kinds import not_a_cnn

        if not timm.is_model(self.name) or self.name.startswith("archfamily_"):
            raise UserError(f"timm has no model {self.name!r} (timm.list_models() lists them)")
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(self.name, pretrained=False, num_classes=10)
        found = not_a_cnn(model)
        if found:
            raise UserError(f"archfamily prunes CNNs; {self.name} has {found}")
        return f"{sum(p.numel() for p in model.parameters()):,} params at 10 classes"

    def trace(self) -> str:
        self.spec = TimmSpec.of_base(self.name, 10, 3, self.input_size)
        return f"{len(self.spec.groups)} groups at {self.input_size} px"

    def _sized(self, spec: TimmSpec) -> tuple[TimmSpec, TimmSpec, TimmSpec]:
        """The base and its network at half and one and a half times every width (whole convolution groups)."""
        return (spec, spec.scaled(1.0, [w * 0.5 for w in spec.widths]), spec.scaled(1.0, [w * 1.5 for w in spec.widths]))

    def rebuild(self) -> str:
        """Each of `_sized` built and run on one image, counted by PyTorch as it runs (for the count stage)."""
        from torch.utils.flop_counter import FlopCounterMode

        self.counted = []
        for spec in self._sized(self.spec):
            model = spec.build().eval()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                logits = model(_images(spec, 1))
            if logits.shape != (1, spec.num_classes) or not bool(torch.isfinite(logits).all()):
                raise UserError(f"the network at widths {sum(spec.widths)} gives logits of shape "
                                f"{tuple(logits.shape)} (finite: {bool(torch.isfinite(logits).all())})")
            self.counted.append((sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2))
        return "x0.5 and x1.5 run"

    def count(self) -> str:
        """The spec's counts (from the base's count table, no network built) are those of the networks built."""
        for spec, (params, macs) in zip(self._sized(self.spec), self.counted):
            if (spec.num_params(), spec.num_macs()) != (params, macs):
                raise UserError(f"counted {spec.num_params():,} params and {spec.num_macs():,} MACs, the built "
                                f"network has {params:,} and {macs:,}")
        sizes = [params for params, _ in self.counted]
        if not sizes[1] < sizes[0] < sizes[2]:
            raise UserError(f"params do not grow with the widths: {sizes[1]:,}, {sizes[0]:,}, {sizes[2]:,}")
        return f"{sizes[0]:,} params, {self.counted[0][1]:,} MACs"

    def prune(self) -> str:
        from archfamily.pruning.run import PruneRun

        torch.manual_seed(0)
        model = self.spec.build()
        run = PruneRun(self.spec, model, "fisher", "all", channels_per_prune=max(1, sum(self.spec.widths) // 50))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        model.train()
        for step in range(PRUNES * STEPS_PER_PRUNE):
            optimizer.zero_grad()
            x, y = _images(self.spec, 4, seed=step), torch.arange(4) % self.spec.num_classes
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            if step % STEPS_PER_PRUNE == STEPS_PER_PRUNE - 1:
                run.prune()
        x = _images(self.spec, 2, seed=99)
        masked = _logits(model, x)
        run.close()
        member = run.compressed()
        size, expected = sum(p.numel() for p in member.parameters()), member.spec.num_params()
        if size != expected:
            raise UserError(f"the pruned network has {size:,} params, its member counts {expected:,}")
        layers = dict(model.named_modules())
        closed = [i for i, channels in run.masks.closed_channels().items() if channels]
        across = any(isinstance(layers.get(p.module), (nn.LayerNorm, nn.GroupNorm)) for i in closed
                     for p in run.groups[i].places)
        if across:  # a closed channel still takes part in a norm over channels: the mask approximates removal
            _logits(member, x)
        else:
            _same(_logits(member, x), masked, "the pruned network's logits and the masked network's")
        self.member = member
        return f"{len(run.prunable)} of {len(self.spec.groups)} groups prunable; {run.num_prunes} prunes to " \
               f"{size:,} params" + ("; masked as an approximation (a norm over channels)" if across else "")

    def export(self) -> str:
        import timm

        from archfamily.hub.export import export
        from archfamily.hub.local_dir import read_exports_first
        from archfamily.hub.timm_models import timm_name
        from archfamily.models.checkpoint import save_model

        read_exports_first()
        timm_name("timm")
        weights = self.folder / "member.safetensors"
        save_model(weights, self.member)
        export(self.member.spec, self.folder / "export", weights=weights)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = timm.create_model(f"local-dir:{self.folder / 'export'}", pretrained=True)
        x = _images(self.member.spec, 2, seed=7)
        _same(_logits(loaded, x), _logits(self.member, x), "the local-dir: model's logits and the exported network's")
        return "local-dir: loads the same logits"

    def onnx(self) -> str:
        missing = [p for p in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(p) is None]
        if missing:
            raise Skipped(f"{' and '.join(missing)} not installed")
        import onnxruntime

        from archfamily.hub.export import write_onnx

        spec = self.member.spec
        path = self.folder / "member.onnx"
        write_onnx(self.member, path, spec.input_size, spec.in_chans)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = _images(spec, 3, seed=11)  # a batch of another size than the exporter's: the batch is dynamic
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        _same(torch.from_numpy(out), _logits(self.member, x), "ONNX Runtime's logits and torch's", ONNX_TOLERANCE)
        return "ONNX Runtime gives the same logits"

    def features(self) -> str:
        import timm

        from archfamily.hub.timm_models import model_args, timm_name

        spec = self.member.spec
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = timm.create_model(timm_name("timm"), features_only=True, **model_args(spec))
        with torch.no_grad():
            maps = model.eval()(_images(spec, 1))
        said = model.feature_info.channels()
        if [m.shape[1] for m in maps] != said:
            raise UserError(f"features_only gives maps of {[m.shape[1] for m in maps]} channels, its feature_info "
                            f"says {said}")
        return f"{len(maps)} levels"

    def native(self) -> str:
        size = _cfg_size(self.name, "input_size", 224)
        spec = TimmSpec.of_base(self.name, 10, 3, size)
        for member in self._sized(spec):
            logits = _logits(member.build(), _images(member, 1))
            if logits.shape != (1, 10):
                raise UserError(f"at {size} px the network gives logits of shape {tuple(logits.shape)}")
        return f"{len(spec.groups)} groups at {size} px, {spec.num_macs():,} MACs"


def check_network(name: str, input_size: Optional[int] = None,
                  on_stage: Callable[[str, StageResult], None] = lambda stage, result: None,
                  until: str = STAGES[-1]) -> NetworkCheck:
    """Every stage of timm's `name` up to `until` (all of them) until one fails, at `input_size` (where not given,
    the least of `SMALL_INPUTS` the model runs at); `on_stage` hears of each as it ends."""
    small = input_size or _smallest_input(name)
    try:
        module, native = module_of(name), _cfg_size(name, "input_size", 224)
    except (RuntimeError, KeyError):  # not a timm model: the cnn stage says so
        module, native = "", 224
    result = NetworkCheck(name, module, small, native)
    with tempfile.TemporaryDirectory(prefix="archfamily-check-") as folder:
        checker = _Checker(name, small, Path(folder))
        for stage in STAGES[:STAGES.index(until) + 1]:
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    detail, ok = getattr(checker, stage)(), True
            except Skipped as exc:
                detail, ok = f"skipped: {exc}", None
            except Exception as exc:  # any stage's failure, archfamily's refusals and timm's or torch's errors alike
                detail, ok = reason(exc), False
            result.stages[stage] = StageResult(ok, time.perf_counter() - start, detail)
            if stage == "trace" and ok:
                result.groups = len(checker.spec.groups)
            on_stage(stage, result.stages[stage])
            if ok is False:
                break
    return result
