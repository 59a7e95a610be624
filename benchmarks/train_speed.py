"""How fast archfamily trains, as a share of what the machine's matmuls can do.

    python benchmarks/train_speed.py                      # CPU (and CUDA when present), WRN-16-2 and WRN-40-2
    python benchmarks/train_speed.py --device cuda --json
    python benchmarks/train_speed.py --networks wrn-16-2 --modes eager --precisions fp32,bf16
    python benchmarks/train_speed.py --networks wrn-16-1,wrn-16-2 --modes eager --precisions bf16 --steps train,muon
    python benchmarks/train_speed.py --networks wrn-16-2 --modes eager --steps train,muon --parts

For each network, precision (fp32; bf16 autocast where the device has bf16 units) and
mode (eager, `torch.compile`) it times the real training step (`Trainer.train_step`:
augmentation, forward, backward, SGD) and the pruning step (the same with the pruning engine's
masks and Fisher hooks on; `--steps muon`: the training step with `optimizer=muon`, timm's Muon for the
conv filters) with torch.utils.benchmark, on random uint8 images (speed does not depend on
pixel values). It prints images/s, the step's MFLOP per image counted by
`torch.utils.flop_counter.FlopCounterMode` (forward and backward), the achieved GFLOP/s,
that as a share of the matmul peak of the row's precision measured in the same run, and
bf16 rows' speed-up over the fp32 row of the same network, step and mode. The cases are
timed in interleaved rounds (A B C A B C ...) so a shared machine's drift hits all alike.
`--parts` also times each step's parts apart, in interleaved rounds of their own: the batch (crop, flip,
cutout, normalisation: `BatchStream.batch`), the forward and backward (`Trainer.loss_and_grads`), the
optimizer's step, and for SGD the same step in torch's two multi-tensor implementations (`foreach`,
`fused`; on a CPU torch's default is the per-parameter loop), so what is left beside the convolutions
has a figure. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from archfamily.data.dataset import ImageData, in_memory
from archfamily.models import build_model
from archfamily.training.precision import cpu_has_bf16, cpu_model
from archfamily.pruning.run import PruneRun
from archfamily.training.recipes import FAST
from archfamily.specs import base_spec
from archfamily.latency.timing import peak_gflops
from archfamily.training.trainer import Trainer


STEPS = ("train", "prune", "muon")  # the training step; with Fisher hooks on; with timm's Muon
SGD_IMPLEMENTATIONS = ("foreach", "fused")  # torch's multi-tensor SGD steps, timed beside the trainer's own


@dataclass
class Row:
    device: str
    threads: Optional[int]
    network: str
    step: str  # train, prune (Fisher hooks on) or muon (the train step with Muon)
    mode: str  # eager or compiled
    precision: str  # fp32 or bf16 (autocast)
    images_per_s: float
    mflop_per_image: float
    gflop_per_s: float
    share_of_peak: float
    parts_ms: Optional[dict[str, float]] = None  # --parts: each part's median ms per step


def fake_data(n: int) -> ImageData:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    return in_memory(images, torch.arange(n) % 10, images[:100], torch.arange(100) % 10, "random")


def flop_per_image(trainer: Trainer) -> float:
    """FLOP of one forward and backward pass per image, as FlopCounterMode counts them."""
    x, y = trainer.stream.batch(0)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(trainer.model(x), y).backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


@dataclass(frozen=True)
class Case:
    network: str
    step: str
    mode: str
    precision: str


def make_trainer(case: Case, device: torch.device, batch_size: int) -> tuple[Trainer, float]:
    """A warmed-up trainer for one kind of training step (its Fisher hooks on for a prune step), and the step's
    FLOP per image."""
    torch.manual_seed(0)
    model = build_model(base_spec(case.network)).to(device)
    if case.step == "prune":
        PruneRun(model.spec, model, "fisher")  # its masks' hooks stay on the model (compiled with it) for the timing
    recipe = replace(FAST, optimizer="muon") if case.step == "muon" else FAST  # only the optimizer differs
    trainer = Trainer(model, fake_data(4 * batch_size), recipe.with_batch_size(batch_size), device,
                      compile=case.mode == "compiled", precision=case.precision)
    flops = flop_per_image(trainer)
    for _ in range(3):  # warm-up: compilation, allocator, cuDNN autotuning
        trainer.train_step()
    return trainer, flops


def interleaved_medians(calls: dict[Any, Callable[[], object]], threads: int, min_time: float,
                        rounds: int) -> dict[Any, float]:
    """Median seconds per call of each call, over `rounds` interleaved rounds (A B C A B C ...), each round's
    figure the median of one `blocked_autorange`. (`latency.timing.time_interleaved` times under inference mode,
    which a training step's backward cannot run in.)"""
    samples: dict[Any, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads)
            samples[key].append(timer.blocked_autorange(min_run_time=min_time / rounds).median)
    return {key: sorted(v)[len(v) // 2] for key, v in samples.items()}


def time_cases(trainers: dict[Case, tuple[Trainer, float]], threads: int, batch_size: int, min_time: float,
               rounds: int) -> dict[Case, tuple[float, float]]:
    """(median images/s over `rounds` interleaved rounds, FLOP per image) of each case."""
    medians = interleaved_medians({case: trainer.train_step for case, (trainer, _) in trainers.items()},
                                  threads, min_time, rounds)
    return {case: (batch_size / medians[case], flops) for case, (_, flops) in trainers.items()}


def sgd_like(optimizer: torch.optim.Optimizer, implementation: str) -> torch.optim.SGD:
    """torch's SGD over `optimizer`'s parameter groups and settings (the trainer's SGD), in `implementation`."""
    groups = [{k: v for k, v in g.items() if k not in ("foreach", "fused")} for g in optimizer.param_groups]
    return torch.optim.SGD(groups, lr=groups[0]["lr"], foreach=implementation == "foreach",
                           fused=True if implementation == "fused" else None)


def part_statements(case: Case, trainer: Trainer) -> dict[str, Callable[[], object]]:
    """The parts of one training step, each a call that repeats it (the same batch: speed does not depend on it)."""
    x, y = trainer.stream.batch(trainer.step)
    trainer.loss_and_grads(x, y)  # gradients in place, for the optimizer steps
    parts: dict[str, Callable[[], object]] = {
        "data": lambda: trainer.stream.batch(trainer.step),
        "forward-backward": lambda: trainer.loss_and_grads(x, y),
        "optimizer": trainer.optimizer.step,
    }
    if case.step != "muon":  # the trainer's SGD is torch's per-parameter loop on a CPU; its multi-tensor twins
        parts.update({f"sgd-{impl}": sgd_like(trainer.optimizer, impl).step for impl in SGD_IMPLEMENTATIONS})
    return parts


def time_parts(trainers: dict[Case, tuple[Trainer, float]], threads: int, min_time: float,
               rounds: int) -> dict[Case, dict[str, float]]:
    """Median ms per step of each part of each case's step, over `rounds` interleaved rounds."""
    statements = {case: part_statements(case, trainer) for case, (trainer, _) in trainers.items()}
    medians = interleaved_medians({(case, part): call for case, parts in statements.items()
                                   for part, call in parts.items()}, threads, min_time, rounds)
    return {case: {part: 1e3 * medians[case, part] for part in parts} for case, parts in statements.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU, and CUDA too when present")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads [all]")
    parser.add_argument("--networks", default="wrn-16-2,wrn-40-2")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--steps", default="train,prune", help=f"which training steps to time, of {','.join(STEPS)}")
    parser.add_argument("--precisions", help="fp32,bf16 [fp32, and bf16 where the device has bf16 units]")
    parser.add_argument("--min-time", type=float, default=5.0, help="seconds of timing per row")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each row's figure is their median")
    parser.add_argument("--parts", action="store_true",
                        help="also time each step's parts apart: batch, forward-backward, optimizer (SGD's too)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of the table")
    args = parser.parse_args()
    if not set(args.steps.split(",")) <= set(STEPS):
        parser.error(f"--steps takes {', '.join(STEPS)}, got {args.steps}")

    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    rows: list[Row] = []
    for device in devices:
        threads = args.threads if device.type == "cpu" else 1
        torch.set_num_threads(threads)
        has_bf16 = device.type == "cuda" or cpu_has_bf16()
        precisions = args.precisions.split(",") if args.precisions else ["fp32", "bf16"] if has_bf16 else ["fp32"]
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
        peaks = {p: peak_gflops(device, threads, dtypes[p])[0] for p in precisions}
        cases = [Case(network, step, mode, precision) for network in args.networks.split(",")
                 for step in args.steps.split(",") for mode in args.modes.split(",") for precision in precisions]
        trainers = {case: make_trainer(case, device, args.batch_size) for case in cases}
        timed = time_cases(trainers, threads, args.batch_size, args.min_time, args.rounds)
        parts = time_parts(trainers, threads, args.min_time, args.rounds) if args.parts else {}
        peaks = {p: max(peaks[p], peak_gflops(device, threads, dtypes[p])[0]) for p in precisions}  # the better of two
        for case, (images_s, flops) in timed.items():
            rows.append(Row(device.type, threads if device.type == "cpu" else None, case.network, case.step,
                            case.mode, case.precision, images_s, flops / 1e6, images_s * flops / 1e9,
                            images_s * flops / 1e9 / peaks[case.precision], parts.get(case)))
        if not args.json:
            print_header(device, threads, peaks, args)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
        return
    by_case = {(r.device, r.network, r.step, r.mode, r.precision): r.images_per_s for r in rows}
    print(f"{'device':<6} {'network':<9} {'step':<6} {'mode':<9} {'prec':<5} {'images/s':>9} {'MFLOP/img':>10} "
          f"{'GFLOP/s':>8} {'of peak':>8} {'of train':>9} {'vs fp32':>8}")
    for r in rows:
        train = by_case.get((r.device, r.network, "train", r.mode, r.precision))
        ratio = f"{r.images_per_s / train:>8.0%}" if train else f"{'':>8}"
        fp32 = by_case.get((r.device, r.network, r.step, r.mode, "fp32"))
        speedup = f"{r.images_per_s / fp32:>7.2f}x" if fp32 and r.precision != "fp32" else f"{'':>8}"
        print(f"{r.device:<6} {r.network:<9} {r.step:<6} {r.mode:<9} {r.precision:<5} {r.images_per_s:>9,.0f} "
              f"{r.mflop_per_image:>10,.0f} {r.gflop_per_s:>8,.1f} {r.share_of_peak:>7.0%} {ratio} {speedup}")
    if any(r.parts_ms for r in rows):
        print_parts(rows, args.batch_size)


def print_parts(rows: list[Row], batch_size: int) -> None:
    """Each step's parts in ms per step and as a share of the whole step; `other` is the step less its three
    parts (the learning rate's update, the loss's running sum, the EMA, and the timings' noise)."""
    print(f"\nparts of each step, ms per step of {batch_size} (share of the step)")
    print(f"{'device':<6} {'network':<9} {'step':<6} {'mode':<9} {'prec':<5} {'step':>7} {'data':>13} "
          f"{'fwd+bwd':>14} {'optimizer':>13} {'other':>7}  SGD alternatives")
    for r in rows:
        if not r.parts_ms:
            continue
        p, step_ms = r.parts_ms, 1e3 * batch_size / r.images_per_s
        other = step_ms - p["data"] - p["forward-backward"] - p["optimizer"]
        shares = " ".join(f"{p[k]:>6.1f} ({p[k] / step_ms:>4.0%})" for k in ("data", "forward-backward", "optimizer"))
        alternatives = ", ".join(f"{k[4:]} {v:.2f}" for k, v in p.items() if k.startswith("sgd-"))
        print(f"{r.device:<6} {r.network:<9} {r.step:<6} {r.mode:<9} {r.precision:<5} {step_ms:>7.1f} {shares} "
              f"{other:>7.1f}  {alternatives}")


def print_header(device: torch.device, threads: int, peaks: dict[str, float], args: argparse.Namespace) -> None:
    where = f"{threads} threads, {cpu_model()}" if device.type == "cpu" else torch.cuda.get_device_name(device)
    bf16 = f", bf16 units: {'yes' if cpu_has_bf16() else 'no'}" if device.type == "cpu" else ""
    peak_text = ", ".join(f"{p} {g:,.1f}" for p, g in peaks.items())
    print(f"{device.type} ({where}{bf16}): matmul peak GFLOP/s {peak_text}; batch {args.batch_size}, "
          f"{args.rounds} interleaved rounds, torch {torch.__version__}")


if __name__ == "__main__":
    main()
