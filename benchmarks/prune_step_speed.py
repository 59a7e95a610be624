"""How long a pruning run's prune step takes beside its fine-tuning, for timm bases.

    python benchmarks/prune_step_speed.py
    python benchmarks/prune_step_speed.py --bases lcnet_050 --method fisher --prune-every 10 --threads 2

For each base (10 classes at 32x32, fp32 on the CPU, batch 64) it times, in interleaved rounds:
- `train`: one fine-tuning step with the masks' Fisher hooks on (`Trainer.train_step`);
- `prune`: one prune as `derive` makes it between steps: close the next channels (`PruneRun.prune`, whose
  cost-aware methods read each group's channel cost), and the member's spec and trajectory entry (params, MACs),
  all counted from the base's count table;
- `recount`: the count the prune step made before the count table, for comparison: the member rebuilt on the meta
  device and counted by `torch.utils.flop_counter`.
It prints medians (and the spread over rounds) and the prune's share of `prune-every` training steps, the time a
derive run spends pruning rather than training. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import platform

import torch
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from archfamily.pruning.run import PruneRun
from archfamily.anycnn.spec import TimmSpec
from archfamily.data.dataset import in_memory
from archfamily.pruning.derive import trajectory_entry
from archfamily.training.precision import cpu_model
from archfamily.training.recipes import finetune_recipe_for
from archfamily.training.trainer import Trainer


def recount(spec: TimmSpec) -> tuple[int, int]:
    """(params, MACs) of `spec` rebuilt on the meta device and counted by PyTorch."""
    model = spec.build("meta").eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, spec.in_chans, spec.input_size, spec.input_size, device="meta"))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bases", default="lcnet_050,mobilenetv2_050", help="timm model names, comma-separated")
    parser.add_argument("--method", default="fisher-cost", help="the pruning method (fisher-cost reads costs too)")
    parser.add_argument("--prune-every", type=int, default=10, help="training steps between prunes")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU {cpu_model() or platform.processor()}; {args.threads} threads; torch {torch.__version__}")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    data = in_memory(x, y, x[:64], y[:64], "random uint8 images")
    print(f"{'base':<18} {'train ms':>9} {'prune ms':>9} {'recount ms':>11} {'prune share':>12} {'was':>7}")
    for name in args.bases.split(","):
        spec = TimmSpec.of_base(name)
        torch.manual_seed(0)
        trainer = Trainer(spec.build(), data, finetune_recipe_for("timm", {}).with_batch_size(64), torch.device("cpu"))
        run = PruneRun(spec, trainer.model, args.method)
        for _ in range(2):
            trainer.train_step()

        def prune_step() -> None:
            run.prune()
            trajectory_entry(run.member(), run.num_prunes, trainer.step, None, run.beta)

        calls = {"train": trainer.train_step, "prune": prune_step, "recount": lambda: recount(run.member())}
        samples: dict[str, list[float]] = {key: [] for key in calls}
        for _ in range(args.rounds):
            for key, call in calls.items():
                timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=args.threads)
                samples[key].append(timer.blocked_autorange(min_run_time=0.4).median * 1e3)
        med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
        spread = {k: (min(v), max(v)) for k, v in samples.items()}
        share = med["prune"] / (med["prune"] + args.prune_every * med["train"])
        was = (med["prune"] + med["recount"]) / (med["prune"] + med["recount"] + args.prune_every * med["train"])
        print(f"{name:<18} {med['train']:>9.1f} {med['prune']:>9.2f} {med['recount']:>11.1f} {share:>11.1%} "
              f"{was:>7.1%}")
        print(f"{'':<18} spread (min-max over {args.rounds} rounds): train {spread['train'][0]:.1f}-"
              f"{spread['train'][1]:.1f}, prune {spread['prune'][0]:.2f}-{spread['prune'][1]:.2f}, recount "
              f"{spread['recount'][0]:.1f}-{spread['recount'][1]:.1f} ms")
    print(f"prune share: the prune step's share of one prune plus {args.prune_every} training steps; was: the same "
          "had it also recounted the member as before the count table")


if __name__ == "__main__":
    main()
