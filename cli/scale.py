"""`archfamily scale`: the family member at a parameter, MAC or measured-latency budget.

Printed as a table, as JSON (`--json`), or written as a spec file (`--out`).
"""
from __future__ import annotations

import json
from typing import Any, Optional

import click
from tqdm import tqdm

from archfamily.bench.runtimes import RUNTIMES, check_runtimes
from archfamily.errors import UserError
from archfamily.limits import MAX_BATCH, MAX_LATENCY_MS, MAX_ROUND_TO
from archfamily.progress import progress_bar
from archfamily.scaling.rules import RULES, Member, ScaleResult, ScalingRule
from archfamily.specs import ArchSpec, spec_to_dict
from archfamily.limits import format_count, parse_counts
from archfamily.cli.options import Count


def _budgets(params: Optional[str], macs: Optional[str], sweep: Optional[str]) -> tuple[str, list[int]]:
    given = [(name, text) for name, text in (("params", params), ("macs", macs), ("sweep", sweep)) if text]
    if len(given) != 1:
        raise UserError("give exactly one budget: --params, --macs or --sweep")
    name, text = given[0]
    metric = "macs" if name == "macs" else "params"
    flag = "--params" if name == "sweep" else f"--{name}"
    return metric, parse_counts(text, flag)


def _stage_rows(spec: ArchSpec) -> list[tuple[int, int, int, int, list[int]]]:
    """Per stage: (stage, outer width, active blocks, blocks, inner widths)."""
    rows = []
    widths, stages, counts = spec.prunable_widths(), spec.prunable_stages(), spec.block_counts()
    for s, outer in enumerate(spec.stage_widths):
        inner = [w for w, st in zip(widths, stages) if st == s]
        per_block = len(inner) // counts[s]
        rows.append((s + 1, outer, sum(w > 0 for w in inner) // per_block, counts[s], inner))
    return rows


def _as_dict(result: ScaleResult, family: str, round_to: int, description: str) -> dict[str, Any]:
    m = result.member
    return {
        "family": family, "rule": m.rule, "description": description, "multiplier": m.multiplier,
        "round_to": round_to, "budget": {result.metric: result.budget}, "within_1pct": result.within_tolerance,
        "note": result.note or None, "params": m.params, "macs": m.macs, "spec": spec_to_dict(m.spec),
    }


def _print_member(result: ScaleResult, family: str, base_name: str, method: str, description: str) -> None:
    m = result.member
    click.echo(f"family   {family} (base {base_name}, {method} pruning)")
    click.echo(f"rule     {description}; multiplier {m.multiplier:.4f}")
    if result.metric == "latency":
        click.echo(f"budget   {result.budget:g} ms latency: {m.params:,} params, {format_count(m.macs)} MACs")
    else:
        click.echo(f"budget   {format_count(result.budget)} {result.metric}: {m.params:,} params, "
                   f"{format_count(m.macs)} MACs ({result.error:+.2%} off the budget)")
    click.echo("")
    if hasattr(m.spec, "groups"):  # a timm base's member: one width per traced channel group, no stages
        _print_groups(m.spec)
    else:
        _print_stages(m.spec)
    if result.note:
        click.echo(f"\nnote: {result.note}")


def _print_groups(spec: ArchSpec) -> None:
    click.echo("group  width  first layer")
    for i, (group, width) in enumerate(zip(spec.groups, spec.widths)):
        click.echo(f"{i + 1:>5}  {width:>5}  {group.name}")


def _print_stages(spec: ArchSpec) -> None:
    click.echo("stage  outer  blocks   inner widths (min / mean / max)")
    for stage, outer, active, blocks, inner in _stage_rows(spec):
        live = [w for w in inner if w > 0] or [0]
        click.echo(f"{stage:>5}  {outer:>5}  {active:>2} / {blocks:<2}  "
                   f"{min(live):>4} / {sum(live) / len(live):6.1f} / {max(live):<4}")


def _print_sweep(results: list[ScaleResult], description: str) -> None:
    click.echo(f"rule: {description}")
    click.echo(f"{'budget':>8}  {'params':>11}  {'MACs':>7}  {'off':>7}  {'multiplier':>10}  stage widths (outer)")
    for r in results:
        m = r.member
        outer = "/".join(str(w) for w in m.spec.stage_widths)
        flag = "" if r.within_tolerance else "  (nearest member; see --json note)"
        click.echo(f"{format_count(r.budget):>8}  {m.params:>11,}  {format_count(m.macs):>7}  {r.error:>+7.2%}  "
                   f"{m.multiplier:>10.4f}  {outer}{flag}")


def _runtime_call(runtime: str) -> Any:
    """How `LatencyCache` makes a member ready to call in `runtime`: as `bench` does (an ONNX export, once)."""
    import tempfile
    from pathlib import Path

    from archfamily.bench.runtimes import Setting
    from archfamily.bench.select import BenchNet
    from archfamily.models import build_model

    def prepare(spec: ArchSpec, device: Any, threads: int, batch: int) -> Any:
        with tempfile.TemporaryDirectory(prefix="archfamily-latency-") as folder:
            return RUNTIMES[runtime].prepare(BenchNet(0, "", spec, lambda: build_model(spec)),
                                             Setting(device, threads, batch, "channels_last", False, Path(folder)))

    return prepare


def _solve_latency(rule: ScalingRule, latency_ms: float, target: str, batch: int, round_to: int,
                   remeasure: bool, runtime: str) -> ScaleResult:
    """The largest member within a measured latency, as a ScaleResult whose metric is latency (ms).

    The search runs on the per-device latency model; the members it settles on are measured."""
    from archfamily.latency.budgets import LatencyCache, parse_target, solve_latency
    from archfamily.latency.model import LatencyModel

    if not 0 < latency_ms <= MAX_LATENCY_MS:  # also nan, which would pass every comparison after it
        raise UserError(f"--latency-ms must be a positive number of milliseconds up to {MAX_LATENCY_MS:g}, "
                        f"not {latency_ms:g}")
    device, threads = parse_target(target)
    bars: dict[str, tqdm] = {}  # opened at their first report

    def bar(name: str, unit: str) -> tqdm:
        if name not in bars:
            bars[name] = progress_bar(desc=name, unit=unit)
        return bars[name]

    def report(candidate: Member, ms: float) -> None:
        bar("measure", "member").update(1)
        bars["measure"].set_postfix(params=candidate.params, ms=f"{ms:.2f}", refresh=False)

    early = [0]  # table points timed before the first member is reported: an unreachable budget is one line

    def table_point() -> None:
        early[0] += 1
        if "measure" in bars:
            bar("latency table", "op").update(early[0])
            early[0] = 0

    check_runtimes((runtime,))  # its packages installed
    model = LatencyModel(device, threads, batch, on_measure=table_point, remeasure=remeasure, runtime=runtime)
    try:
        found, ms = solve_latency(rule, latency_ms, device, threads, batch, round_to, on_step=report, model=model,
                                  cache=LatencyCache(remeasure=remeasure, runtime=runtime,
                                                     prepare=_runtime_call(runtime)))
    finally:
        for b in bars.values():
            b.close()
    where = f" in {runtime}" if runtime != "eager" else ""
    note = f"measured {ms:.3f} ms on {device.type}:{threads}{where} at batch {batch} (budget {latency_ms:g} ms)"
    return ScaleResult(found, "latency", latency_ms, ms <= latency_ms, note)


def _family_rule(family_path: str, rule: str, at: Optional[float]) -> tuple[ScalingRule, str, str, str, str]:
    """(rule, family file, family folder, base name, pruning method) for --family: a derive run, or for the
    rules that scale a base alone (reduced-width, reduced-depth, bottleneck) a base network's name."""
    from pathlib import Path

    from archfamily.pruning.family_file import load_family
    from archfamily.scaling.rules import base_rule, base_rules, make_rule
    from archfamily.specs import base_spec

    if not Path(family_path).exists():
        try:
            base = base_spec(family_path)
        except UserError:
            pass  # not a base name either: load_family says what it expected
        else:
            if rule not in base_rules():  # a base name is found; what is missing is the pruning run it needs
                default = " (the default --rule)" if rule == "copycat" else ""
                raise UserError(f"the {rule} rule{default} needs a pruning run's family: give --family FAMILY.json "
                                f"(or its folder) from `archfamily derive --base {family_path}`, or a rule that "
                                f"scales the base name alone: {', '.join(base_rules())}")
            return base_rule(rule, base), family_path, family_path, family_path, "no"
    family = load_family(family_path)
    return (make_rule(rule, family.base, family.trajectory, family.rules, at), str(family.path),
            str(family.path.parent), family.base_name, family.method)


@click.command()
@click.option("--family", "family_path", required=True,
              help="A derive run folder or its family.json; for reduced-width, reduced-depth and bottleneck also a "
                   "base network such as wrn-16-2.")
@click.option("--params", help="Parameter budget, e.g. 1M, 250k, 1.5e6; or a comma list.")
@click.option("--macs", help="MAC budget, e.g. 100M; or a comma list.")
@click.option("--sweep", help="Several parameter budgets at once, e.g. 0.25M,0.5M,1M.")
@click.option("--rule", type=click.Choice(RULES), default="copycat", show_default=True)
@click.option("--at", type=float, help="copycat: copy the profile where pruning reached this fraction of the "
                                       "base's params [the family's, 0.5].")
@click.option("--round-to", type=Count(1, MAX_ROUND_TO), default=1, show_default=True,
              help="Widths in multiples of N (8, 16 for hardware).")
@click.option("--latency-ms", type=float, help="Or a measured latency budget: the largest member within it.")
@click.option("--on", "target", help="Where --latency-ms is measured: cpu, cpu:THREADS or cuda [cpu: all threads].")
@click.option("--batch", type=Count(1, MAX_BATCH), help="Batch size --latency-ms is measured at [1].")
@click.option("--runtime", type=click.Choice(tuple(RUNTIMES)),
              help="What --latency-ms is measured in: eager PyTorch or ONNX Runtime (on the CPU) [eager].")
@click.option("--remeasure", is_flag=True, help="Time every --latency-ms figure again instead of reading "
                                                "$ARCHFAMILY_CACHE's latency.json and latency-table.json, replacing "
                                                "what they held.")
@click.option("--json", "as_json", is_flag=True, help="Print the spec and its counts as JSON.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the spec as JSON (for train/export).")
def scale(family_path: str, params: Optional[str], macs: Optional[str], sweep: Optional[str], rule: str,
          at: Optional[float], round_to: int, latency_ms: Optional[float], target: Optional[str],
          batch: Optional[int], runtime: Optional[str], remeasure: bool, as_json: bool, out: Optional[str]) -> None:
    """The member of a family that meets a parameter, MAC or measured-latency budget."""
    from pathlib import Path

    from archfamily.files import atomic_write_json
    from archfamily.scaling.rules import solve

    if latency_ms is not None and (params or macs or sweep):
        raise UserError("give exactly one budget: --params, --macs, --sweep or --latency-ms")
    if latency_ms is None and (target is not None or batch is not None or runtime is not None or remeasure):
        raise UserError("--on, --batch, --runtime and --remeasure say how --latency-ms is measured; give "
                        "--latency-ms with them")
    metric, budgets = ("latency", []) if latency_ms is not None else _budgets(params, macs, sweep)
    if out and len(budgets) > 1:
        raise UserError("--out writes one spec: give a single budget")
    if at is not None and rule != "copycat":
        raise UserError("--at applies to the copycat rule only")
    scaling_rule, family_file, family_folder, base_name, method = _family_rule(family_path, rule, at)
    if latency_ms is not None:
        results = [_solve_latency(scaling_rule, latency_ms, "cpu" if target is None else target,
                                  1 if batch is None else batch, round_to, remeasure, runtime or "eager")]
    else:
        results = [solve(scaling_rule, b, metric, round_to) for b in budgets]
    if out:
        atomic_write_json(Path(out), spec_to_dict(results[0].member.spec))
    if as_json:
        docs = [_as_dict(r, family_file, round_to, scaling_rule.description) for r in results]
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    elif len(results) == 1:
        _print_member(results[0], family_folder, base_name, method, scaling_rule.description)
    else:
        _print_sweep(results, scaling_rule.description)
    if out and not as_json:
        click.echo(f"\nwrote {out}")
