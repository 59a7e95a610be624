"""A study plan (TOML): the base, the data, the recipe, the pruning runs, the budgets, the arms, the bench.

Read with Python's own `tomllib` and checked whole before anything runs: an unknown key, a wrong
type, a budget no arm can reach or a base archfamily cannot build is one line naming the key.
Paths in a plan are relative to the plan file. `studies/smoke/plan.toml` shows every key.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from archfamily.bench.runtimes import RUNTIMES
from archfamily.checks import MAX_COUNT, is_number, show
from archfamily.errors import SettingError, UserError
from archfamily.limits import (MAX_BATCH, MAX_EPOCHS, MAX_LATENCY_MS, MAX_ROUND_TO, MAX_ROUNDS, MAX_SEED, MAX_STEPS,
                               MAX_TEST_IMAGES, MAX_TRAIN_BATCH, MAX_TRAIN_IMAGES, check_count, cores)
from archfamily.training.precision import PRECISIONS
from archfamily.training.recipes import SCRATCH_RECIPES, finetune_recipe_for
from archfamily.pruning.criteria import COSTS, CRITERIA, cost_weighing
from archfamily.scaling.rules import RULES, base_rules
from archfamily.specs import ArchSpec, base_spec, for_data, native_input_size
from archfamily.limits import format_count, parse_count

PRUNED_KINDS = ("pruned-scratch", "pruned-tuned")  # arms of the pruning run's own networks; the others are RULES
FORMATS = ("nchw", "channels_last", "both")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # arm and pruning-run names: they name folders and files


@dataclass(frozen=True)
class TrainingSettings:
    """How every network trained from scratch is trained (the base too, when the study trains it)."""

    name: str = "fast"
    epochs: Optional[float] = None
    batch_size: Optional[int] = None
    ema: Optional[float] = None
    precision: Optional[str] = None  # auto, fp32 or bf16 for every training and fine-tune; None: the commands' default


@dataclass(frozen=True)
class PruneRun:
    """One `archfamily derive` of the base: its saliency and schedule."""

    name: str
    method: str = "fisher"
    cost: Optional[str] = None
    on: Optional[str] = None  # where a latency cost is measured
    runtime: Optional[str] = None  # what a latency cost is predicted in: onnxruntime; None: eager
    prune_every: int = 100
    channels_per_step: int = 1
    eval_every: int = 50
    test_subset: Optional[int] = None  # the pruning run's own test split [the study's]
    until_params: Optional[int] = None
    seed: int = 0
    finetune_set: tuple[tuple[str, str], ...] = ()  # fields of the paper's fine-tune set by name (derive's
    # --finetune-set), from the run's [finetune] table


@dataclass(frozen=True)
class Arm:
    """One way of making a network at each budget: a scaling rule, or the pruning run's own networks."""

    name: str
    kind: str  # a scaling rule, pruned-scratch or pruned-tuned
    prune: str  # the pruning run whose family (or networks) it uses
    seeds: tuple[int, ...] = (0,)
    budgets: tuple[int, ...] = ()
    round_to: int = 1
    at: Optional[float] = None  # copycat: the trajectory point to copy, as a fraction of the base's params
    latency_ms: tuple[float, ...] = ()  # budgets in measured milliseconds on the plan's [latency] device

    def budget_label(self, budget: float, labels: dict[int, str]) -> str:
        """How a budget names files and rows: the plan's count text ("76k"), or milliseconds ("1.2ms"). An arm
        has one kind of budget or the other."""
        return f"{budget:g}ms" if self.latency_ms else labels[int(budget)]

    @property
    def all_budgets(self) -> tuple[float, ...]:
        return self.latency_ms or self.budgets


@dataclass(frozen=True)
class Latency:
    """Where and how the latency budgets of arms are measured (`scale --latency-ms --on --batch --runtime`)."""

    on: str = "cpu:1"
    batch: int = 1
    runtime: str = "eager"  # or onnxruntime, on the CPU


@dataclass(frozen=True)
class Bench:
    """`archfamily bench --trained` settings for the study's networks."""

    threads: tuple[int, ...] = (1,)
    batches: tuple[int, ...] = (1,)
    rounds: int = 3
    formats: str = "channels_last"
    runtimes: tuple[str, ...] = ("eager",)


@dataclass(frozen=True)
class Plan:
    path: Path
    name: str
    description: str
    base: str
    base_spec: ArchSpec = field(repr=False)
    checkpoint: Optional[Path]  # a trained base; None: the study trains it with `recipe`
    data: Optional[Path]
    subset: Optional[int]
    test_subset: Optional[int]
    recipe: TrainingSettings
    budgets: tuple[int, ...]
    budget_labels: dict[int, str]
    prune_runs: dict[str, PruneRun]
    arms: dict[str, Arm]
    bench: Optional[Bench]
    latency: Optional[Latency] = None
    device: str = "auto"  # where every run trains and measures (the bench has its own settings)
    data_settings: dict[str, Any] = field(default_factory=dict)  # [data]'s input_size, val_fraction, data_path
    # what checking the budgets found (`_check_budgets`), for the queue to use rather than work out again: the
    # spec a base-only rule's arm trains at each budget, (arm, budget) -> spec, and where each pruning run stops
    members: dict[tuple[str, int], ArchSpec] = field(default_factory=dict, repr=False)
    floors: dict[str, int] = field(default_factory=dict)


_REQUIRED = object()  # a getter's default that makes the key required


class _Table:
    """One TOML table, read key by key: each getter checks a type; `done` refuses the keys nobody read."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise UserError(f"{where} must be a table")
        self.data, self.where, self.read = data, where, set()

    def value(self, key: str, types: tuple[type, ...], what: str, default: Any) -> Any:
        self.read.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise UserError(f"{self.where}: '{key}' is missing")
            return default
        value = self.data[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise UserError(f"{self.where}: '{key}' must be {what}, got {value!r:.60}")
        return value

    def str(self, key: str, default: Any = None, choices: Optional[tuple[str, ...]] = None) -> Any:
        value = self.value(key, (str,), "a string", default)
        if choices and value is not None and value not in choices:
            raise UserError(f"{self.where}: '{key}' must be one of {', '.join(choices)}, got {value!r:.60}")
        return value

    def int(self, key: str, default: Any = None, low: int = 0, high: int = MAX_COUNT) -> Any:
        value = self.value(key, (int,), "a whole number", default)
        if value is not None:
            check_count(value, low, high, f"{self.where}: '{key}'")
        return value

    def number(self, key: str, default: Any = None, low: float = 0.0, high: float = math.inf) -> Any:
        value = self.value(key, (int, float), "a number", default)
        if value is not None and not (is_number(value) and low < value <= high):
            raise UserError(f"{self.where}: '{key}' must be in ({low:g}, {high:g}], got {value!r:.60}")
        return value

    def count(self, key: str, default: Any = None) -> Any:
        """A parameter count: 76000, or a string such as "76k" or "1.5M"."""
        value = self.value(key, (int, str), "a count such as 76000 or \"76k\"", default)
        return _count(value, f"{self.where}: '{key}'") if value is not None else None

    def ints(self, key: str, default: Any, low: int = 0, high: int = MAX_COUNT) -> tuple[int, ...]:
        values = self.value(key, (list,), "a list of whole numbers", default)
        if values is default:
            return default
        if not values or any(type(v) is not int or not low <= v <= high for v in values):
            raise UserError(f"{self.where}: '{key}' must be a non-empty list of whole numbers from {low:,} to "
                            f"{high:,}, got {show(values)}")
        if len(set(values)) != len(values):
            raise UserError(f"{self.where}: '{key}' lists a value twice")
        return tuple(values)

    def numbers(self, key: str, default: Any) -> tuple[float, ...]:
        """A non-empty list of distinct positive numbers (latency budgets in ms)."""
        values = self.value(key, (list,), "a list of numbers", default)
        if values is default:
            return default
        if not values or any(not is_number(v) or not 0 < v <= MAX_LATENCY_MS for v in values):
            raise UserError(f"{self.where}: '{key}' must be a non-empty list of positive numbers up to "
                            f"{MAX_LATENCY_MS:g}, got {show(values)}")
        if len(set(values)) != len(values):
            raise UserError(f"{self.where}: '{key}' lists a value twice")
        return tuple(float(v) for v in values)

    def table(self, key: str, required: bool = False) -> Optional["_Table"]:
        self.read.add(key)
        if key not in self.data:
            if required:
                raise UserError(f"{self.where}: [{key}] is missing")
            return None
        return _Table(self.data[key], f"{self.where} [{key}]")

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise UserError(f"{self.where}: unknown key {unknown[0]!r}")


def _finetune(t: _Table, family: str) -> tuple[tuple[str, str], ...]:
    """A pruning run's `[prune.NAME.finetune]` table (`lr = 0.02`): fine-tune fields as derive's --finetune-set
    takes them, checked here so a plan no run can use is refused before anything starts."""
    table = t.table("finetune")
    if table is None:
        return ()
    items: dict[str, str] = {}
    for key, value in table.data.items():
        if not isinstance(value, (str, int, float, bool)):  # a table or an array
            raise UserError(f"{table.where}: '{key}' must be a number, a string or a boolean")
        items[key] = str(value).lower() if isinstance(value, bool) else str(value)
    try:
        finetune_recipe_for(family, items)
    except SettingError as err:
        message = err.named({"finetune_set": ""}).lstrip(": ")  # the table is the option: "lr: must be a number"
        raise UserError(f"{table.where}: {message}") from None
    return tuple(items.items())


def _count(value: Any, where: str) -> int:
    if isinstance(value, int):
        return check_count(value, 1, MAX_COUNT, where)
    return parse_count(value, where)


def _path(plan_dir: Path, text: Optional[str], where: str) -> Optional[Path]:
    if text is None:
        return None
    try:
        path = (plan_dir / text).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte
        raise UserError(f"{where}: {text!r:.60} is not a path ({exc})") from None
    if not path.exists():
        raise UserError(f"{where}: {path} does not exist")
    return path


def _data_path(plan_dir: Path, text: Optional[str], where: str) -> Optional[Path]:
    """A dataset, as every training command will check it: an archive or a data folder."""
    path = _path(plan_dir, text, where)
    if path is not None:
        from archfamily.data.dataset import check_source

        try:
            check_source(path)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    return path


def _for_plan_data(spec: ArchSpec, data: Optional[Path], settings: dict[str, Any], where: str) -> ArchSpec:
    """The base as the plan's data makes it (its classes and input size), so budgets are solved for the networks
    the runs will train."""
    from archfamily.data.dataset import describe_data

    if data is None and settings["input_size"] is None and settings["val_fraction"] is None:
        return spec  # the vendored CIFAR-10, which the base names are for
    try:
        classes, size = describe_data(str(data) if data else None, settings["input_size"], settings["val_fraction"],
                                      native_input_size(spec))
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return for_data(spec, classes, size)


def _checkpoint(plan_dir: Path, text: Optional[str], where: str, spec: ArchSpec) -> Optional[Path]:
    """A model file of the plan's base, its weights checked as `derive --checkpoint` will check them."""
    path = _path(plan_dir, text, where)
    if path is not None:
        from archfamily.models.checkpoint import load_model  # torch: only for plans that name a checkpoint

        try:
            found, _, _ = load_model(path)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        if found != spec:
            raise UserError(f"{where}: {path} holds another network than the plan's base")
    return path


def _budgets(table: _Table, key: str, default: Any) -> tuple[tuple[int, ...], dict[int, str]]:
    raw = table.value(key, (list,), "a list of counts such as [\"76k\", \"152k\"]", default)
    if raw is default:
        return default, {}
    if not raw:
        raise UserError(f"{table.where}: '{key}' must not be empty")
    if any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in raw):
        raise UserError(f"{table.where}: '{key}' must list counts such as 76000 or \"76k\", got {raw!r:.60}")
    counts = [_count(v, f"{table.where}: '{key}'") for v in raw]
    if len(set(counts)) != len(counts):
        raise UserError(f"{table.where}: '{key}' lists a budget twice")
    # what the commands are given and the files are named after: the plan's own text ("76k"), which parses back
    # to exactly the count, or the whole number itself
    labels = {c: (v.strip() if isinstance(v, str) else str(c)) for c, v in zip(counts, raw)}
    return tuple(counts), labels


def _check_device(on: str, where: str) -> None:
    """A latency device (cpu, cpu:THREADS, cuda) as `latency.parse_target` reads it, its error naming the key."""
    from archfamily.latency.budgets import parse_target  # with torch's benchmark utilities: only when needed

    try:
        parse_target(on)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def _check_prune_settings(spec: ArchSpec, method: str, cost: str, on: Optional[str], where: str,
                          runtime: Optional[str] = None) -> None:
    """A prune run's settings as `archfamily derive` checks them for this base (`derive.check_prune_settings`),
    its one-line error naming the plan's table and keys."""
    from archfamily.pruning.derive import check_prune_settings  # with torch: only a plan that prunes pays for it

    try:
        check_prune_settings(spec, method, cost, on, cost_runtime=runtime)
    except SettingError as exc:
        raise UserError(f"{where}: {exc.named({name: repr(name) for name in exc.settings})}") from None
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _name(name: str, where: str) -> str:
    if not NAME.fullmatch(name):
        raise UserError(f"{where}: the name {name!r:.70} must be letters, digits, '_', '.' or '-' (it names folders)")
    return name


def _arm(name: str, table: _Table, plan_budgets: tuple[int, ...], prune_runs: dict[str, PruneRun],
         labels: dict[int, str], latency: Optional[Latency]) -> Arm:
    _name(name, table.where)
    kind = table.str("rule", _REQUIRED, (*RULES, *PRUNED_KINDS))
    prune = table.str("prune", next(iter(prune_runs), None))
    if prune is None:
        if kind not in base_rules():
            raise UserError(f"{table.where}: rule {kind} needs a pruning run, and the plan has no [prune.NAME]")
        # needs no family; the run is named for the queue only
    elif prune not in prune_runs:
        raise UserError(f"{table.where}: 'prune' names {prune!r}, which is not a [prune.NAME] of this plan")
    seeds = table.ints("seeds", (0,), high=MAX_SEED)
    if kind == "pruned-tuned" and "seeds" in table.data:
        raise UserError(f"{table.where}: pruned-tuned networks come from the pruning run; its seed is the arm's")
    latency_ms = table.numbers("latency_ms", ())
    if latency_ms and not latency:
        raise UserError(f"{table.where}: 'latency_ms' needs the plan's [latency] table (on, batch)")
    if latency_ms and kind not in RULES:
        raise UserError(f"{table.where}: 'latency_ms' applies to scaling rules; {kind} networks have a parameter count")
    if latency_ms and "budgets" in table.data:
        raise UserError(f"{table.where}: give 'budgets' or 'latency_ms', not both")
    budgets, own_labels = _budgets(table, "budgets", () if latency_ms else plan_budgets)
    for count, label in own_labels.items():
        labels.setdefault(count, label)
    round_to = table.int("round_to", 1, low=1, high=MAX_ROUND_TO)
    at = table.number("at", None, high=1.0)
    if at is not None and kind != "copycat":
        raise UserError(f"{table.where}: 'at' applies to the copycat rule only")
    if round_to != 1 and kind not in RULES:
        raise UserError(f"{table.where}: 'round_to' applies to scaling rules only")
    table.done()
    if kind == "pruned-tuned":
        seeds = (prune_runs[prune].seed,)
    return Arm(name, kind, prune or "", seeds, budgets, round_to, at, latency_ms)


def _check_budgets(plan: Plan) -> Plan:
    """Refuse budgets no arm can reach, before anything runs: the base-only rules are solved here; pruned
    networks must lie between the pruning floor and the base; the family rules must shrink the base. Returns
    the plan with the members solved and each pruning run's floor (`Plan.members`, `Plan.floors`)."""
    from archfamily.pruning.derive import pruning_floor
    from archfamily.scaling.rules import base_rule, solve

    base_params = plan.base_spec.num_params()
    for run in plan.prune_runs.values():
        if run.until_params is not None and not 0 < run.until_params < base_params:
            raise UserError(f"{plan.path}: [prune.{run.name}] 'until_params' must be below the base's "
                            f"{format_count(base_params)} params")
    floors = {run.name: pruning_floor(run.until_params, base_params) for run in plan.prune_runs.values()}
    members = {}
    for arm in plan.arms.values():
        rule = RULES.get(arm.kind)  # None: the pruning run's own networks
        for budget in arm.budgets:
            where = f"{plan.path}: arm {arm.name!r}, budget {format_count(budget)}"
            if arm.kind in base_rules():
                try:
                    members[(arm.name, budget)] = solve(base_rule(arm.kind, plan.base_spec), budget, "params",
                                                        arm.round_to).member.spec
                except UserError as exc:
                    raise UserError(f"{where}: {exc}") from None
            elif arm.kind in ("pruned-scratch", "pruned-tuned"):
                run = plan.prune_runs[arm.prune]
                floor = floors[run.name]
                if not floor <= budget < base_params:
                    raise UserError(f"{where}: pruning run {run.name!r} goes from {format_count(base_params)} down to "
                                    f"{format_count(floor)} params; the budget must lie between")
            elif rule.reach is not None and not budget < base_params * rule.reach:
                raise UserError(f"{where}: beyond what the family can reach ({rule.reach:g}x the base's params)")
    return replace(plan, members=members, floors=floors)


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file; every problem is a `UserError` naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"plan not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a TOML file ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a study plan") from None
    except ValueError as exc:  # an integer of thousands of digits
        raise UserError(f"{path}: {str(exc).splitlines()[0]:.120}") from None
    top = _Table(raw, str(path))
    plan_dir = path.resolve().parent
    name = top.str("name", path.resolve().parent.name if path.name == "plan.toml" else path.stem)  # NAME/plan.toml: NAME
    description = top.str("description", "")
    budgets, labels = _budgets(top, "budgets", _REQUIRED)

    base_t = top.table("base", required=True)
    base = base_t.str("spec", _REQUIRED)
    spec = base_spec(base)  # a base archfamily cannot build is refused here, in one line
    checkpoint_text = base_t.str("checkpoint")
    base_t.done()

    data_t = top.table("data")
    data = subset = test_subset = None
    data_settings: dict[str, Any] = {}
    if data_t is not None:
        data = _data_path(plan_dir, data_t.str("path"), f"{data_t.where}: 'path'")
        subset = data_t.int("subset", None, low=2, high=MAX_TRAIN_IMAGES)
        test_subset = data_t.int("test_subset", None, low=2, high=MAX_TEST_IMAGES)
        data_settings = {"input_size": data_t.int("input_size", None, low=8, high=1024),
                         "val_fraction": data_t.number("val_fraction", None, low=0.0, high=0.999999),
                         "data_path": data_t.str("data_path", "auto", ("auto", "memory", "stream"))}
        data_t.done()
        spec = _for_plan_data(spec, data, data_settings, data_t.where)
    checkpoint = _checkpoint(plan_dir, checkpoint_text, f"{base_t.where}: 'checkpoint'", spec)

    recipe_t = top.table("recipe")
    recipe = TrainingSettings()
    if recipe_t is not None:
        recipe = TrainingSettings(recipe_t.str("name", "fast", SCRATCH_RECIPES), recipe_t.number("epochs", high=MAX_EPOCHS),
                        recipe_t.int("batch_size", None, low=1, high=MAX_TRAIN_BATCH), recipe_t.number("ema", None, low=-1e-12, high=0.999999),
                        recipe_t.str("precision", None, PRECISIONS))
        recipe_t.done()

    prune_runs: dict[str, PruneRun] = {}
    prune_t = top.table("prune")
    for run_name in (prune_t.data if prune_t else {}):
        t = prune_t.table(run_name)
        _name(run_name, t.where)
        method = t.str("method", "fisher", tuple(CRITERIA))
        cost, on = t.str("cost", None, COSTS), t.str("on")
        runtime = t.str("runtime", None, tuple(RUNTIMES))
        runtime = None if runtime == "eager" else runtime  # eager's runs as before runtimes: no --runtime
        if cost is not None and method not in cost_weighing():
            raise UserError(f"{t.where}: 'cost' applies to methods {' and '.join(cost_weighing())} only")
        if (cost == "latency") != (on is not None):
            raise UserError(f"{t.where}: cost = \"latency\" needs 'on' (cpu, cpu:THREADS or cuda), and 'on' needs it")
        if on is not None:
            _check_device(on, f"{t.where}: 'on'")
        _check_prune_settings(spec, method, cost or "params", on, t.where, runtime)
        prune_runs[run_name] = PruneRun(run_name, method, cost, on, runtime,
                                        t.int("prune_every", 100, low=1, high=MAX_STEPS),
                                        t.int("channels_per_step", 1, low=1, high=MAX_STEPS),
                                        t.int("eval_every", 50, low=1, high=MAX_STEPS),
                                        t.int("test_subset", None, low=10, high=MAX_TEST_IMAGES),
                                        t.count("until_params"), t.int("seed", 0, high=MAX_SEED),
                                        _finetune(t, spec.family))
        t.done()
    if prune_t:
        prune_t.done()

    latency_t = top.table("latency")
    latency = None
    if latency_t is not None:
        latency = Latency(latency_t.str("on", "cpu:1"), latency_t.int("batch", 1, low=1, high=MAX_BATCH),
                          latency_t.str("runtime", "eager", tuple(RUNTIMES)))
        _check_device(latency.on, f"{latency_t.where}: 'on'")
        if latency.runtime != "eager" and not latency.on.startswith("cpu"):
            raise UserError(f"{latency_t.where}: runtime {latency.runtime!r} measures on the CPU, not {latency.on}")
        latency_t.done()

    arms_t = top.table("arms", required=True)
    if not arms_t.data:
        raise UserError(f"{arms_t.where}: the plan has no arms")
    arms = {arm_name: _arm(arm_name, arms_t.table(arm_name), budgets, prune_runs, labels, latency)
            for arm_name in list(arms_t.data)}
    arms_t.done()

    bench_t = top.table("bench")
    bench = None
    if bench_t is not None:
        runtimes = tuple(bench_t.value("runtimes", (list,), "a list of runtimes", ["eager"]))
        if not runtimes or any(not isinstance(r, str) or r not in RUNTIMES for r in runtimes):
            raise UserError(f"{bench_t.where}: 'runtimes' must list some of {', '.join(RUNTIMES)}")
        for runtime in runtimes:
            if RUNTIMES[runtime].missing():
                raise UserError(f"{bench_t.where}: runtime {runtime} needs {RUNTIMES[runtime].install}")
        bench = Bench(bench_t.ints("threads", (1,), low=1, high=cores()),
                      bench_t.ints("batches", (1,), low=1, high=MAX_BATCH),
                      bench_t.int("rounds", 3, low=1, high=MAX_ROUNDS), bench_t.str("formats", "channels_last", FORMATS), runtimes)
        bench_t.done()
    top.done()

    plan = Plan(path, name, description, base, spec, checkpoint, data, subset, test_subset, recipe, budgets, labels,
                prune_runs, arms, bench, latency, data_settings=data_settings)
    return _check_budgets(plan)
