"""`archfamily derive`: train a base network, Fisher-prune it once, record what pruning found.

Output folder:
- `run.json`: the settings (a resumed run must match them);
- `base.safetensors`: the trained base network;
- `trajectory.jsonl`: one line per prune step (pruned spec, params, MACs, test error
  where measured, and for fisher-penalty the beta that prune weighed cost with);
- `pruned-050.safetensors`, `pruned-025.safetensors`, `pruned-final.safetensors`:
  compressed pruned networks at 50% and 25% of the base's parameters and at the end,
  and `pruned-at-<N>.safetensors` for every `--save-at N` (the first prune step at or
  below N params, its test error always measured): the pruned-and-tuned networks a
  study compares with networks trained from scratch at the same size;
- `family.json`: the versioned summary that `archfamily scale` reads: base spec,
  method, data, seed, recipes, per-stage and per-block width ratios along the
  trajectory, and provenance.
Resumable state lives in `.checkpoints/` until the run completes.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch

from archfamily.models.checkpoint import (RunCheckpoint, load_checkpoint_for, load_model, model_test_error,
                                         read_model_metadata, save_model)
from archfamily.models.pretrained import pretrained_network
from archfamily.data.dataset import ImageData
from archfamily.training.distributed import DistContext, resolve_device
from archfamily.checks import Fields, decode_json
from archfamily.errors import SettingError, UserError
from archfamily.pruning.config import DeriveConfig
from archfamily.pruning.family_file import family_document
from archfamily.files import atomic_write_json, atomic_write_text
from archfamily.models import build_model
from archfamily.progress import progress_bar
from archfamily.anycnn.spec import with_model_kwargs
from archfamily.anycnn.table import POLICIES
from archfamily.pruning.criteria import check_cost_device, check_method
from archfamily.pruning.run import PruneRun, smallest_member
from archfamily.training.recipes import Recipe, finetune_recipe_for, training_recipe
from archfamily.training.runs import finish_run, run_precision, start_run
from archfamily.specs import ArchSpec, base_spec, family_type, for_data, spec_from_dict, spec_to_dict
from archfamily.training.scratch import pretrained_file, run_data
from archfamily.training.trainer import Trainer, train_to_file

if TYPE_CHECKING:
    from archfamily.latency.model import LatencyModel

MILESTONES = (0.50, 0.25)  # fractions of the base's parameters at which a compressed network is saved


@dataclass
class DeriveResult:
    out: Path
    base_error: float
    final_spec: ArchSpec
    final_error: float
    prune_steps: int
    seconds: float
    split: str  # the held-out split the errors are on (`data.dataset.ImageData.split`)
    trajectory: list[dict[str, Any]] = field(repr=False, default_factory=list)


def check_prune_settings(spec: ArchSpec, method: str, cost: str = "params", cost_on: Optional[str] = None,
                         groups: Optional[str] = None, cost_runtime: Optional[str] = None) -> None:
    """Every pruning setting a derive run of `spec`'s base checks before it starts: the method and the cost it
    weighs, the device a latency cost is measured on and whether the latency model can predict the base, and the
    groups the engine prunes. A study plan's prune runs are checked by this too, so `study --dry-run` refuses what
    a job would."""
    check_method(method, cost)
    check_cost_device(cost, cost_on, cost_runtime)
    if groups not in (None, *POLICIES):
        raise SettingError("{groups} must be one of {known}", known=", ".join(POLICIES))
    if groups == "all" and not family_type(spec.family).graph_pruned:
        raise SettingError("{groups} all is for a timm base, whose traced groups include residual streams; a "
                           "{family} network's prunable groups are its inner widths", family=spec.family)
    if cost_on:
        from archfamily.latency.budgets import parse_target  # with torch's benchmark utilities: only when needed

        parse_target(cost_on)
    if cost == "latency":
        from archfamily.latency.model import check_predictable, network_ops

        check_predictable(network_ops(spec))


@dataclass(frozen=True)
class RunSettings:
    """What a derive run makes of its config, once, after checking every setting: the base's spec for the data,
    where pruning stops (`pruning_floor`), and the recipes that train the base and fine-tune it while pruning."""

    spec: ArchSpec
    floor: int
    base_recipe: Recipe
    finetune: Recipe


def _validate(config: DeriveConfig, data: ImageData, bare: Optional[ArchSpec] = None) -> RunSettings:
    """A run's settings for `data`, every one that depends on the data checked (`bare`: the base's spec before the
    data, if made already); the pruning settings are checked before the data loads (`check_prune_settings`)."""
    spec = for_data(bare or run_base_spec(config), data.num_classes, data.input_size)
    for name in ("prune_every", "channels_per_step", "eval_every"):
        if getattr(config, name) < 1:
            raise SettingError("{" + name + "} must be at least 1")
    base_recipe = training_recipe(config.recipe, spec.family, config.epochs, config.batch_size)
    finetune = finetune_recipe_for(spec.family, config.finetune_set)  # a fine-tune field no run can use: one line
    if config.checkpoint:
        if config.pretrained is not None:
            raise SettingError("the base is trained from {pretrained} weights or given as a {checkpoint}, not both")
        load_checkpoint_for(spec, config.checkpoint, "the base")
    base_params = spec.num_params()
    smallest = smallest_member(spec, config.groups).num_params()
    if config.until_params is not None:
        if config.until_params >= base_params:
            raise SettingError("{until_params} {count:,} must be below the base's {base:,} parameters",
                               count=config.until_params, base=base_params)
        if config.until_params < smallest:
            raise SettingError("{until_params} {count:,} is below the smallest network {name} prunes to ({smallest:,})",
                               count=config.until_params, name=config.base, smallest=smallest)
    floor = pruning_floor(config.until_params, base_params)
    for count in config.save_at:
        if not floor <= count < base_params:
            raise SettingError("{save_at} {count:,} is outside the pruning run: {floor:,} to {top:,} parameters",
                               count=count, floor=floor, top=base_params - 1)
    return RunSettings(spec, floor, base_recipe, finetune)


def run_base_spec(config: DeriveConfig) -> ArchSpec:
    """The base network a run prunes, before its data: its base name, built with its timm keywords if it has any."""
    return with_model_kwargs(base_spec(config.base), config.model_kwargs or {})


def pruning_floor(until_params: Optional[int], base_params: int) -> int:
    """Where pruning stops: --until-params, else 10% of the base. The one place this is decided: a derive run
    computes it once (`_validate`), a study plan once per pruning run (`Plan.floors`)."""
    return until_params or base_params // 10


def _milestone_stem(fraction: float) -> str:
    return f"pruned-{round(fraction * 100):03d}"


def pruned_at_stem(params: int) -> str:
    """The file stem of the pruned network `--save-at params` saves: `pruned-at-<params>` (.safetensors); a study
    names its pruned arms' networks by it."""
    return f"pruned-at-{params}"


def _save_points(config: DeriveConfig, base_params: int) -> dict[str, int]:
    """File stem -> the parameter count at or below which it is saved: 50%, 25% of the base and each --save-at."""
    points = {_milestone_stem(f): math.floor(f * base_params) for f in MILESTONES}
    points.update({pruned_at_stem(count): count for count in config.save_at})
    return points


def _saved_stems(state: Optional[dict[str, Any]]) -> set[str]:
    """The stems a checkpoint says were saved; checkpoints from before --save-at listed milestone fractions."""
    milestones = state.get("milestones", []) if state else []
    if not isinstance(milestones, list) or not all(
            isinstance(m, str) or (isinstance(m, float) and 0 < m <= 1) for m in milestones):
        raise UserError("a damaged prune checkpoint: its milestones must be file stems (or fractions, as once written)")
    return {m if isinstance(m, str) else _milestone_stem(m) for m in milestones}


def _train_base(settings: RunSettings, config: DeriveConfig, data: ImageData, out: Path, device: torch.device,
                dist_ctx: DistContext, compile: bool) -> tuple[torch.nn.Module, float]:
    base_file = out / "base.safetensors"
    spec, recipe = settings.spec, settings.base_recipe
    if base_file.exists() and not base_file.is_file():
        raise UserError(f"{base_file} is not a model file; move it away to train the base again")
    if base_file.is_file():  # trained (or copied from --checkpoint) before an interruption
        found, model, meta = load_model(base_file)
        if found != spec:  # a file swapped for another network's: pruning it would fail on every tensor
            raise UserError(f"{base_file} holds another network than this run's base {config.base}; "
                            "move it away to train the base again")
        return model, model_test_error(base_file, meta)
    if config.checkpoint:  # measured on this run's data, then kept as this run's base
        model, meta = load_checkpoint_for(spec, config.checkpoint, "the base")
        error = Trainer(model, data, recipe, device, config.seed, dist_ctx,
                        precision=config.precision).evaluate(desc="test error, base")
        if dist_ctx.is_main:
            kept = {k: v for k, v in meta.items() if k not in ("format", "spec", "test_error")}
            save_model(base_file, model, {**kept, "test_error": repr(error), "source": config.checkpoint,
                                          "data": data.source, "data_cfg": json.dumps(data.facts())})
        return model, error
    start = build_model(spec) if config.pretrained is None else \
        pretrained_network(spec, pretrained_file(config.pretrained))
    model, errors = train_to_file(start, data, recipe, device, config.seed, dist_ctx, base_file,
                                  out / ".checkpoints" / "base", desc="train base", compile=compile,
                                  precision=config.precision)
    return model, errors["test_error"]


TRAJECTORY_KEYS = ("prune_step", "train_step", "params", "macs", "test_error", "spec")


def trajectory_entry(spec: ArchSpec, prune_step: int, train_step: int, error: Optional[float],
                     beta: Optional[float] = None) -> dict[str, Any]:
    """One trajectory.jsonl line: the pruned network `spec`, when it was reached, its counts and error, and for
    fisher-penalty the beta its last prune weighed cost with (rescaled every prune: a reader of the run sees
    the trade-off it made)."""
    entry = {"prune_step": prune_step, "train_step": train_step, "params": spec.num_params(),
             "macs": spec.num_macs(), "test_error": error, "spec": spec_to_dict(spec)}
    return entry if beta is None or not math.isfinite(beta) else {**entry, "beta": beta}  # NaN: saliency diverged


def _checked_entry(raw: Any, where: str, base: ArchSpec) -> dict[str, Any]:
    """One trajectory line as a file or a checkpoint holds it: types and ranges checked, its spec a pruned `base`
    and its counts that spec's."""
    entry = Fields(raw, where, TRAJECTORY_KEYS)
    for key in ("prune_step", "train_step"):
        entry.int(key)
    entry.number("test_error", 0, 100, optional=True)
    spec = spec_from_dict(entry.get("spec"), f"{where}: spec")
    widths = spec.prunable_widths()
    if len(widths) != len(base.prunable_widths()) or base.with_prunable_widths(widths) != spec \
            or any(w > w0 for w, w0 in zip(widths, base.prunable_widths())):
        entry.fail("spec", f"is not a pruned {base.family} of this run's base")
    if (entry.int("params", 1), entry.int("macs", 1)) != (spec.num_params(), spec.num_macs()):
        entry.fail("params", "and macs are not those of its spec")
    if "beta" in raw:  # fisher-penalty runs only
        entry.number("beta", 0)
    return {k: raw[k] for k in (*TRAJECTORY_KEYS, "beta") if k in raw}


def _checked_trajectory(raw: list[Any], where: str, base: ArchSpec, finished: bool) -> list[dict[str, Any]]:
    """A whole trajectory: the base first, prune steps in order, and (when finished) the last one measured."""
    entries = [_checked_entry(e, f"{where}[{i}]", base) for i, e in enumerate(raw)]
    if not entries or entries[0]["prune_step"] != 0 or entries[0]["params"] != base.num_params():
        raise UserError(f"{where}: does not start at the base network")
    steps = [e["prune_step"] for e in entries]
    if steps != sorted(set(steps)) or entries[0]["test_error"] is None or (finished and entries[-1]["test_error"] is None):
        raise UserError(f"{where}: prune steps out of order, or the base or the last step not measured")
    return entries


def _read_trajectory(out: Path, base: ArchSpec) -> list[dict[str, Any]]:
    """The trajectory.jsonl of a finished run."""
    path = out / "trajectory.jsonl"
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return _checked_trajectory([decode_json(line, f"{path}: line {i + 1}") for i, line in enumerate(lines)],
                               f"{path}: lines", base, finished=True)


def _prune_step(trainer: Trainer, engine: PruneRun, config: DeriveConfig) -> ArchSpec:
    """Fine-tune `prune_every` steps, then close the `k` least salient channels; returns the pruned spec."""
    for _ in range(config.prune_every):
        trainer.train_step()
    engine.prune()
    return engine.member()


class _PruneLog:
    """A pruning run's bookkeeping: the trajectory, the pruned networks saved at their sizes, and their files.

    Only the main rank writes; every rank keeps the same trajectory, so any of them can checkpoint it.
    """

    def __init__(self, out: Path, config: DeriveConfig, settings: RunSettings, base_error: float, data: ImageData,
                 state: Optional[dict[str, Any]], writes: bool) -> None:
        self.out, self.config, self.data, self.writes = out, config, data, writes
        self.finetune = settings.finetune
        base = settings.spec
        first = [trajectory_entry(base, 0, 0, base_error)]
        where = str(out / ".checkpoints" / "prune" / "state.json")
        recorded = Fields(state, where, ("trajectory",)).list("trajectory", nonempty=True) if state else None
        self.trajectory = _checked_trajectory(recorded, f"{where}: trajectory", base, finished=False) \
            if recorded else first
        self.saved = _saved_stems(state)
        self.points = _save_points(config, base.num_params())

    @property
    def last(self) -> dict[str, Any]:
        return self.trajectory[-1]

    def due(self, params: int) -> list[str]:
        """The pruned networks not yet saved whose size `params` has reached."""
        return [stem for stem, count in self.points.items() if params <= count and stem not in self.saved]

    def add(self, entry: dict[str, Any], due: list[str], engine: PruneRun) -> None:
        """Record one prune step: save the networks due, then rewrite trajectory.jsonl."""
        self.trajectory.append(entry)
        for stem in due:
            self.saved.add(stem)
            self.save_pruned(stem, engine)
        if self.writes:
            atomic_write_text(self.out / "trajectory.jsonl", "".join(json.dumps(e) + "\n" for e in self.trajectory))

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume the log."""
        return {"trajectory": self.trajectory, "milestones": sorted(self.saved)}

    def save_pruned(self, stem: str, engine: PruneRun) -> None:
        """The compressed pruned network at the last step, with where it came from in its metadata."""
        if not self.writes:
            return
        entry, config = self.last, self.config
        small = engine.compressed()
        meta = {"params": str(entry["params"]), "prune_step": str(entry["prune_step"]), "method": config.method,
                "seed": str(config.seed), "test_images": str(len(self.data.test_x)), "data": self.data.source,
                "data_cfg": json.dumps(self.data.facts()),
                "recipe": json.dumps({"finetune": self.finetune.to_dict(),
                                      "prune_every": config.prune_every, "channels_per_step": config.channels_per_step})}
        if entry["test_error"] is not None:
            meta["test_error"] = repr(entry["test_error"])
        save_model(self.out / f"{stem}.safetensors", small, meta)


def _latency_model(config: DeriveConfig, spec: ArchSpec, dist_ctx: DistContext) -> Optional["LatencyModel"]:
    """The model a latency cost is read from (batch 1, the bench's setting); only rank 0 measures. In eager
    PyTorch its per-operation overhead is fitted on the base (a layer pruned away saves its Python and module
    calls too); in ONNX Runtime the table alone (its fitted per-operation cost is a few microseconds either way,
    and measuring the base would mean exporting it)."""
    if config.cost != "latency":
        return None
    from archfamily.latency.budgets import LatencyCache, parse_target
    from archfamily.latency.model import LatencyModel

    device, threads = parse_target(config.cost_on)
    model = LatencyModel(device, threads, batch=1, runtime=config.cost_runtime or "eager")
    if dist_ctx.is_main and model.runtime == "eager":
        model.calibrate([spec], lambda s: LatencyCache().measure(s, device, threads, batch=1,
                                                                 expected=lambda: model.predict(s)))
    return model


def _prune(base_model: torch.nn.Module, settings: RunSettings, base_error: float, config: DeriveConfig,
           data: ImageData, out: Path, device: torch.device, dist_ctx: DistContext) -> list[dict[str, Any]]:
    """Fine-tune with the paper's recipe, closing k channels every `prune_every` steps, down to the floor."""
    spec, floor = settings.spec, settings.floor
    model = build_model(spec)
    model.load_state_dict(base_model.state_dict())
    trainer = Trainer(model, data, settings.finetune, device, config.seed, dist_ctx, precision=config.precision)
    engine = PruneRun(spec, trainer.model, config.method, config.groups, config.channels_per_step, config.seed,
                      config.cost, _latency_model(config, spec, dist_ctx))
    checkpoint = RunCheckpoint(out / ".checkpoints" / "prune")
    state = trainer.resume(checkpoint)
    engine.restore(state)
    log = _PruneLog(out, config, settings, base_error, data, state, dist_ctx.is_main)
    engine.num_prunes = log.last["prune_step"]
    base_params = spec.num_params()
    with progress_bar(total=base_params - floor, initial=base_params - log.last["params"], desc="prune",
                      unit="param", unit_scale=True, disable=not dist_ctx.is_main) as bar:
        while log.last["params"] > floor and engine.open_channels() > 0:
            now = _prune_step(trainer, engine, config)
            params = now.num_params()
            due = log.due(params)
            measure = params <= floor or engine.open_channels() == 0 or bool(due) \
                or engine.num_prunes % config.eval_every == 0
            error = trainer.evaluate() if measure else None
            log.add(trajectory_entry(now, engine.num_prunes, trainer.step, error, engine.beta), due, engine)
            bar.set_postfix(params=f"{params:,}", error=f"{error:.2f}%" if error is not None else "-", refresh=False)
            bar.update(min(base_params - floor, base_params - params) - bar.n)
            if measure:
                trainer.save(checkpoint, {**log.state(), **engine.state()})
    log.save_pruned("pruned-final", engine)
    engine.close()
    return log.trajectory


def derive(config: DeriveConfig, out: Path, device_name: str = "auto", resume: bool = False,
           command: Optional[list[str]] = None, compile: bool = False) -> DeriveResult:
    """Run (or resume) a whole derive: validate, train the base, prune, write the family."""
    started = time.time()
    device = resolve_device(device_name)
    out = Path(out)
    config = replace(config, precision=run_precision(config.precision, device, out, resume))  # as run.json holds it
    bare = run_base_spec(config)
    check_prune_settings(bare, config.method, config.cost, config.cost_on, config.groups,
                         config.cost_runtime)  # before any data loads
    data = run_data(config, bare)
    settings = _validate(config, data, bare)
    spec = settings.spec
    dist_ctx, prov = start_run(out, config.to_dict(), resume, device, command or sys.argv)
    torch.manual_seed(config.seed)
    if (out / "family.json").is_file():  # resuming a finished run: nothing left to do
        return _result(out, _read_trajectory(out, spec), 0.0, data.split)
    base_model, base_error = _train_base(settings, config, data, out, device, dist_ctx, compile)
    trajectory = _prune(base_model, settings, base_error, config, data, out, device, dist_ctx)
    if dist_ctx.is_main:
        meta = read_model_metadata(out / "base.safetensors")
        base_recipe = json.loads(meta["recipe"]) if "recipe" in meta else None
        document = family_document(config.to_dict(), spec, base_recipe, settings.finetune.to_dict(), data, trajectory, prov,
                                   sorted(p.name for p in out.glob("*.safetensors")))
        atomic_write_json(out / "family.json", document)
    finish_run(out, dist_ctx)
    return _result(out, trajectory, time.time() - started, data.split)


def _result(out: Path, trajectory: list[dict[str, Any]], seconds: float, split: str) -> DeriveResult:
    final = trajectory[-1]
    return DeriveResult(out, trajectory[0]["test_error"], spec_from_dict(final["spec"]), final["test_error"],
                        final["prune_step"], seconds, split, trajectory)
