"""`archfamily bench`: hardware speed of reduced, pruned and family networks at matched budgets.

For each budget it times, side by side:
- `reduced-width`: the base with every width scaled alike;
- `pruned (masked)`: the pruned network as a masking framework leaves it, full-size
  convs with zeroed channels (the trajectory point nearest the budget);
- `pruned (compressed)`: the same network with its irregular widths removed for real;
- `copycat` and `fitted` members, with widths rounded to 1, 8 and 16 channels.
Weights are random: speed does not depend on them. Errors, where a trajectory
point or a zoo entry measured one, are reported beside the speed.

With `--trained ARM=GLOB` it times networks that were really trained instead: the
train run folders and model files that GLOB matches, grouped by architecture, so the
seeds of one arm at one budget become one row with the mean error, its spread and the
seeds. Each budget then also gets the masked pruned network, the form a masking
framework runs.
"""
from __future__ import annotations

import glob
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from tqdm import tqdm

from archfamily.checkpoint import read_model_metadata
from archfamily.errors import UserError
from archfamily.family import Family
from archfamily.models import build_model, spec_kwargs
from archfamily.scaling import make_rule, solve, trajectory_spec
from archfamily.specs import ArchSpec, spec_from_dict, spec_from_json
from archfamily.timing import machine_info, peak_gflops, time_interleaved


@dataclass(frozen=True)
class BenchConfig:
    budgets: tuple[int, ...]
    metric: str = "params"
    devices: tuple[str, ...] = ("cpu",)
    threads: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1, 64, 256)
    formats: tuple[str, ...] = ("nchw", "channels_last")
    round_tos: tuple[int, ...] = (1, 8, 16)
    rounds: int = 3
    min_run_time: float = 0.2
    compile: bool = False


QUICK = dict(batches=(1, 64), formats=("channels_last",), round_tos=(1, 8), rounds=1, min_run_time=0.05)


@dataclass
class BenchNet:
    """One network to time: what it is, its counts, how to build it, and its error if one was measured."""

    budget: int
    kind: str
    spec: ArchSpec
    build: Callable[[], nn.Module] = field(repr=False)
    error: Optional[float] = None
    trained: Optional["TrainedGroup"] = None

    @property
    def label(self) -> str:
        return f"{self.budget}/{self.kind}/{self.spec.num_params()}/{self.spec.num_macs()}"


@dataclass
class TrainedGroup:
    """The trained copies (one per seed) of one architecture in one arm of a study."""

    arm: str
    spec: ArchSpec
    errors: list[float] = field(default_factory=list)
    seeds: list[Optional[int]] = field(default_factory=list)  # None: the file records no seed
    sources: list[str] = field(default_factory=list)
    test_images: set[int] = field(default_factory=set)  # as recorded; files that record none add nothing

    @property
    def mean(self) -> float:
        return statistics.fmean(self.errors)

    @property
    def std(self) -> Optional[float]:
        """Sample standard deviation over seeds; None for a single seed."""
        return statistics.stdev(self.errors) if len(self.errors) > 1 else None


def _trained_record(path: Path) -> tuple[ArchSpec, float, Optional[int], Optional[int]]:
    """(spec, test error, seed, test images) of a train run folder (metrics.json) or a model file's metadata;
    None where a model file does not record them."""
    if path.is_dir():
        metrics_file = path / "metrics.json"
        if not metrics_file.is_file():
            raise UserError(f"{path} holds no finished training (no metrics.json)")
        m = json.loads(metrics_file.read_text())
        return spec_from_dict(m["spec"]), float(m["test_error"]), int(m["seed"]), int(m["test_images"])
    meta = read_model_metadata(path)
    if "test_error" not in meta:
        raise UserError(f"{path} records no measured test error")
    seed, images = meta.get("seed"), meta.get("test_images")
    return (spec_from_json(meta["spec"]), float(meta["test_error"]), int(seed) if seed is not None else None,
            int(images) if images is not None else None)


def trained_groups(patterns: list[tuple[str, str]]) -> list[TrainedGroup]:
    """Group what each (arm, glob) matches by architecture: one group per arm and spec, its seeds inside."""
    groups: dict[tuple[str, str], TrainedGroup] = {}
    for arm, pattern in patterns:
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise UserError(f"--trained {arm}={pattern} matches nothing")
        for path in paths:
            spec, error, seed, images = _trained_record(Path(path))
            group = groups.setdefault((arm, _spec_key(spec_kwargs(spec))), TrainedGroup(arm, spec))
            group.errors.append(error)
            group.seeds.append(seed)
            group.sources.append(path)
            if images is not None:
                group.test_images.add(images)
    return list(groups.values())


def _trajectory_points(family: Family) -> list[tuple[dict[str, Any], ArchSpec]]:
    """Each trajectory entry with the pruned spec it describes."""
    return [(e, trajectory_spec(family.base, e)) for e in family.trajectory]


def _nearest_budget(count: int, budgets: tuple[int, ...]) -> int:
    return min(budgets, key=lambda b: abs(math.log(count / b)))


def trained_networks(family: Family, config: BenchConfig, groups: list[TrainedGroup]) -> list[BenchNet]:
    """The trained networks, each at the budget nearest its size (log scale), and the masked pruned network per budget."""
    points = _trajectory_points(family)
    sizes = [e[config.metric] for e, _ in points]
    nets = []
    for budget in config.budgets:
        if min(sizes) <= budget <= sizes[0]:  # the first prune step at or below it, as `derive --save-at` saves
            _, pruned = next(p for p in points if p[0][config.metric] <= budget)
            nets.append(BenchNet(budget, "pruned (masked)", pruned, _masked_builder(family.base, pruned)))
        for g in groups:
            count = g.spec.num_params() if config.metric == "params" else g.spec.num_macs()
            if _nearest_budget(count, config.budgets) == budget:
                nets.append(BenchNet(budget, g.arm, g.spec, lambda s=g.spec: build_model(s), g.mean, g))
    return nets


def _masked_builder(base: ArchSpec, pruned: ArchSpec) -> Callable[[], nn.Module]:
    """The base network with gates closed down to the pruned widths: full-size convs, zeroed channels."""

    def build() -> nn.Module:
        model = build_model(base, gated=True)
        for group in model.prune_groups():
            group.gate.mask[pruned.prunable_widths()[group.index]:] = 0
        return model

    return build


def _spec_key(model_args: dict[str, Any]) -> str:
    return json.dumps(model_args, sort_keys=True)


def networks(family: Family, config: BenchConfig, zoo_entries: list[dict[str, Any]]) -> list[BenchNet]:
    """Every network the bench times, budget by budget; errors come from the trajectory and the zoo."""
    points = _trajectory_points(family)
    errors = {_spec_key(spec_kwargs(spec)): e["test_error"] for e, spec in points if e.get("test_error") is not None}
    errors.update({_spec_key(entry["model_args"]): entry["test_error"] for entry in zoo_entries})
    nets: list[BenchNet] = []

    def add(budget: int, kind: str, spec: ArchSpec, build: Optional[Callable[[], nn.Module]] = None) -> None:
        error = errors.get(_spec_key(spec_kwargs(spec)))
        nets.append(BenchNet(budget, kind, spec, build or (lambda s=spec: build_model(s)), error))

    def rule(name: str):
        return make_rule(name, family.base, family.trajectory, family.rules)

    sizes = [e[config.metric] for e, _ in points]
    for budget in config.budgets:
        add(budget, "reduced-width", solve(rule("reduced-width"), budget, config.metric).member.spec)
        if min(sizes) * 0.9 <= budget <= sizes[0]:  # pruned networks exist only below the base
            _, pruned = min(points, key=lambda p: abs(p[0][config.metric] - budget))
            add(budget, "pruned (masked)", pruned, _masked_builder(family.base, pruned))
            add(budget, "pruned (compressed)", pruned)
        for name in ("copycat", "fitted"):
            if name not in family.rules:
                continue
            for round_to in config.round_tos:
                kind = name if round_to == 1 else f"{name} r{round_to}"
                add(budget, kind, solve(rule(name), budget, config.metric, round_to).member.spec)
    return nets


def _prepare(net: BenchNet, device: torch.device, batch: int, fmt: str, compile_model: bool) -> Callable[[], Any]:
    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    model = net.build().to(device, memory_format=memory_format).eval()
    if compile_model:
        model = torch.compile(model)
    x = torch.randn(batch, net.spec.in_chans, net.spec.input_size, net.spec.input_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    return lambda: model(x)


def run(family: Family, config: BenchConfig, zoo_entries: list[dict[str, Any]],
        trained: Optional[list[TrainedGroup]] = None) -> dict[str, Any]:
    """Time every network in every setting (the trained ones, if given); returns the report as a JSON-ready dict."""
    nets = trained_networks(family, config, trained) if trained else networks(family, config, zoo_entries)
    settings = [(dev, threads if dev == "cpu" else 1, batch, fmt)
                for dev in config.devices for threads in (config.threads if dev == "cpu" else (1,))
                for batch in config.batches for fmt in config.formats]
    peaks: dict[str, float] = {}
    rows = []
    with tqdm(total=len(settings) * len(nets) * config.rounds, desc="bench", unit="timing", dynamic_ncols=True) as bar:
        for dev, threads, batch, fmt in settings:
            device = torch.device(dev)
            key = f"{dev}:{threads}"
            if key not in peaks:
                peaks[key] = peak_gflops(device, threads)
            cases = {n.label: _prepare(n, device, batch, fmt, config.compile) for n in nets}
            bar.set_postfix(setting=f"{key} batch {batch} {fmt}")
            timings = time_interleaved(cases, device, threads, config.rounds, config.min_run_time,
                                       on_case=lambda _: bar.update(1))
            for n in nets:
                t = timings[n.label]
                seconds = t.median_ms / 1e3
                gflops = 2 * n.spec.num_macs() * batch / seconds / 1e9
                rows.append({
                    "budget": n.budget, "network": n.kind, "params": n.spec.num_params(), "macs": n.spec.num_macs(),
                    "executed_macs": family.base.num_macs() if n.kind == "pruned (masked)" else n.spec.num_macs(),
                    "device": dev, "threads": threads, "batch": batch, "format": fmt, **t.to_dict(),
                    "images_per_s": batch / seconds, "gflops": gflops, "peak_share": gflops / peaks[key],
                    "test_error": n.error, "spec": {"family": n.spec.family, **spec_kwargs(n.spec)},
                    **(_trained_fields(n.trained) if n.trained else {}),
                })
    measured = [{"params": e["params"], "macs": e["macs"], "test_error": e["test_error"]}
                for e in family.trajectory if e.get("test_error") is not None]
    return {"format": "archfamily.bench", "version": 1, "family": str(family.path), "metric": config.metric,
            "machine": machine_info(), "peak_gflops": peaks, "trajectory_errors": measured,
            "config": asdict(config), "rows": rows}


def _trained_fields(group: TrainedGroup) -> dict[str, Any]:
    return {"test_error_std": group.std, "test_errors": group.errors, "seeds": group.seeds,
            "test_images": sorted(group.test_images), "sources": group.sources}


def format_error(row: dict[str, Any]) -> str:
    """'45.73%', or 'mean ± sd (n)' over the seeds of a trained network."""
    if row["test_error"] is None:
        return "-"
    if row.get("test_error_std") is None:
        return f"{row['test_error']:.2f}%"
    return f"{row['test_error']:.2f} ± {row['test_error_std']:.2f}% ({len(row['test_errors'])})"


def summary(report: dict[str, Any]) -> list[str]:
    """One table for the headline setting: latency at the smallest batch, throughput at the largest."""
    rows = report["rows"]
    dev = "cuda" if any(r["device"] == "cuda" for r in rows) else "cpu"
    threads = max(r["threads"] for r in rows if r["device"] == dev)
    fmt = "channels_last" if any(r["format"] == "channels_last" for r in rows) else "nchw"
    picked = [r for r in rows if (r["device"], r["threads"], r["format"]) == (dev, threads, fmt)]
    small, large = min(r["batch"] for r in picked), max(r["batch"] for r in picked)
    at_large = {(r["budget"], r["network"], r["params"], r["macs"]): r for r in picked if r["batch"] == large}
    lines = [f"\n## Summary: {dev}, {threads} thread{'s' if threads > 1 else ''}, {fmt}\n",
             f"| budget | network | params | MACs | batch-{small} latency ms (IQR) | batch-{large} images/s | "
             f"% of peak at batch {large} | test error |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in (r for r in picked if r["batch"] == small):
        big = at_large[(r["budget"], r["network"], r["params"], r["macs"])]
        error = format_error(r)
        lines.append(f"| {r['budget']:,} | {r['network']} | {r['params']:,} | {r['macs'] / 1e6:.1f}M | "
                     f"{r['median_ms']:.2f} ({r['iqr_ms']:.2f}) | {big['images_per_s']:.0f} | "
                     f"{100 * big['peak_share']:.1f}% | {error} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables, one per setting."""
    m = report["machine"]
    lines = [f"# archfamily bench\n", f"Family `{report['family']}`; machine: {m['cpu']}, {m['cores']} cores"
             + (f", {m['gpu']}" if "gpu" in m else "") + f", torch {m['torch']}. Median of all runs, IQR as spread; "
             "GFLOP/s counts the network's useful MACs (a masked network executes its base's).\n"]
    lines += summary(report)
    settings = sorted({(r["device"], r["threads"], r["batch"], r["format"]) for r in report["rows"]})
    for dev, threads, batch, fmt in settings:
        peak = report["peak_gflops"][f"{dev}:{threads}"]
        lines.append(f"\n## {dev}, {threads} thread{'s' if threads > 1 else ''}, batch {batch}, {fmt} "
                     f"(matmul peak {peak:.0f} GFLOP/s)\n")
        lines.append("| budget | network | params | MACs | latency ms (IQR) | images/s | GFLOP/s | % of peak | test error |")
        lines.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in report["rows"]:
            if (r["device"], r["threads"], r["batch"], r["format"]) != (dev, threads, batch, fmt):
                continue
            error = format_error(r)
            lines.append(f"| {r['budget']:,} | {r['network']} | {r['params']:,} | {r['macs'] / 1e6:.1f}M | "
                         f"{r['median_ms']:.2f} ({r['iqr_ms']:.2f}) | {r['images_per_s']:.0f} | {r['gflops']:.1f} | "
                         f"{100 * r['peak_share']:.1f}% | {error} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """results.json, results.md and the plots, each written atomically."""
    from archfamily.files import atomic_write_json, atomic_write_text
    from archfamily.plots import write_plots

    atomic_write_json(out / "results.json", report)
    atomic_write_text(out / "results.md", markdown(report))
    return [out / "results.json", out / "results.md", *write_plots(report, out)]
