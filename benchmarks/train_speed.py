"""How fast archfamily trains, as a share of what the machine's matmuls can do.

    python benchmarks/train_speed.py                      # CPU (and CUDA when present), WRN-16-2 and WRN-40-2
    python benchmarks/train_speed.py --device cuda --json

For each network and mode (eager, `torch.compile`) it times the real training step
(`Trainer.train_step`: augmentation, forward, backward, SGD) and the pruning step
(the same on a gated network with Fisher hooks on) with torch.utils.benchmark, on
random uint8 images (speed does not depend on pixel values). It prints images/s,
the step's MFLOP per image counted by `torch.utils.flop_counter.FlopCounterMode`
(forward and backward), the achieved GFLOP/s, and that as a share of a matmul peak
measured in the same run (float32 on the CPU, bf16 on CUDA: the precision the step
runs in). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from archfamily.data import Cifar10
from archfamily.models import build_model
from archfamily.pruning import Pruner
from archfamily.recipes import FAST
from archfamily.specs import base_spec
from archfamily.timing import peak_gflops
from archfamily.trainer import Trainer


@dataclass
class Row:
    device: str
    threads: Optional[int]
    network: str
    step: str  # train or prune (Fisher hooks on)
    mode: str  # eager or compiled
    images_per_s: float
    mflop_per_image: float
    gflop_per_s: float
    share_of_peak: float


def fake_data(n: int) -> Cifar10:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    return Cifar10(images, torch.arange(n) % 10, images[:100], torch.arange(100) % 10, "random")


def flop_per_image(trainer: Trainer) -> float:
    """FLOP of one forward and backward pass per image, as FlopCounterMode counts them."""
    x, y = trainer.stream.batch(0)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(trainer.model(x), y).backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


def time_step(network: str, step: str, compiled: bool, device: torch.device, threads: int, batch_size: int,
              min_time: float) -> tuple[float, float]:
    """(images/s, FLOP per image) of one kind of training step."""
    torch.manual_seed(0)
    model = build_model(base_spec(network), gated=step == "prune")
    trainer = Trainer(model, fake_data(4 * batch_size), FAST.with_batch_size(batch_size), device, compile=compiled)
    pruner = Pruner(trainer.model, "fisher") if step == "prune" else None
    flops = flop_per_image(trainer)
    for _ in range(3):  # warm-up: compilation, allocator, cuDNN autotuning
        trainer.train_step()
    timer = benchmark.Timer(stmt="trainer.train_step()", globals={"trainer": trainer}, num_threads=threads)
    seconds = timer.blocked_autorange(min_run_time=min_time).median
    if pruner is not None:
        pruner.remove_hooks()
    return batch_size / seconds, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU, and CUDA too when present")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads [all]")
    parser.add_argument("--networks", default="wrn-16-2,wrn-40-2")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--min-time", type=float, default=5.0, help="seconds of timing per row")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of the table")
    args = parser.parse_args()

    devices = [torch.device("cpu")] if args.device in ("auto", "cpu") else []
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    rows: list[Row] = []
    for device in devices:
        threads = args.threads if device.type == "cpu" else 1
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # the precision the step runs in
        peak = peak_gflops(device, threads, dtype)
        for network in args.networks.split(","):
            for step in ("train", "prune"):
                for mode in args.modes.split(","):
                    images_s, flops = time_step(network, step, mode == "compiled", device, threads,
                                                args.batch_size, args.min_time)
                    rows.append(Row(device.type, threads if device.type == "cpu" else None, network, step, mode,
                                    images_s, flops / 1e6, images_s * flops / 1e9, 0.0))
        peak = max(peak, peak_gflops(device, threads, dtype))  # before and after the rows: the better of two
        for row in rows:
            if row.device == device.type:
                row.share_of_peak = row.gflop_per_s / peak
        print_header(device, threads, peak, args) if not args.json else None
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
        return
    train = {(r.device, r.network, r.mode): r.images_per_s for r in rows if r.step == "train"}
    print(f"{'device':<6} {'network':<9} {'step':<6} {'mode':<9} {'images/s':>9} {'MFLOP/img':>10} "
          f"{'GFLOP/s':>8} {'of peak':>8} {'of train':>9}")
    for r in rows:
        ratio = r.images_per_s / train[(r.device, r.network, r.mode)]
        print(f"{r.device:<6} {r.network:<9} {r.step:<6} {r.mode:<9} {r.images_per_s:>9,.0f} "
              f"{r.mflop_per_image:>10,.0f} {r.gflop_per_s:>8,.1f} {r.share_of_peak:>7.0%} {ratio:>8.0%}")


def print_header(device: torch.device, threads: int, peak: float, args: argparse.Namespace) -> None:
    where = f"{threads} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    precision = "float32" if device.type == "cpu" else "bf16"
    print(f"{device.type} ({where}): {precision} matmul peak {peak:,.1f} GFLOP/s, batch {args.batch_size}, "
          f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
